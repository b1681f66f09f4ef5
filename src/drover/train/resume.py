"""Honest resume: continue a training run only where the new config cannot alter what is done.

A checkpoint records (in `trainer_state.json`) the training key settings it was trained
under (`train_settings`: every setting that changes the weights, with the model and
reference directories as content fingerprints), the fingerprint of the tokenized data,
and the planned schedule (total and warmup steps). On resume:

- a different key setting (lr, seed, batch size, objective, LoRA, the base model's
  content, ...) or different data refuses, naming what changed;
- a different `epochs` / `max_steps` continues only if the learning rate of every step
  already taken is unchanged under the new plan (e.g. a constant schedule without
  warmup); a linear or cosine decay depends on the total, so appending epochs refuses;
- settings that cannot change the weights (`NOT_TRAINING`: logging, checkpoint cadence,
  progress, held-out evaluation, paths) may change freely;
- `grad_accum` may change together with the number of processes when the global batch
  (grad_accum x processes, recorded in the checkpoint) stays the same: that check is
  `checkpoint.check_layout`, run once the processes are known (still before any write).

The refusal is one line that says how to start fresh (`--force`, or a new run dir) and is
raised before anything is written: config.yaml, log.jsonl and the checkpoints stay as they were.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from drover.config import to_dict
from drover.errors import ConfigError
from drover.identity import model_fingerprint

# TrainConfig fields that cannot change the trained weights.
NOT_TRAINING = frozenset({
    "run_dir", "resume_from", "force", "save_every", "keep_last", "log_every", "tensorboard", "wandb",
    "wandb_project", "progress", "stop_after_steps", "gradient_checkpointing", "logprob_chunk", "eval_every",
    "eval_data", "allow_download", "data_dirs",
})
# Covered by the tokenized data's fingerprint (paths are not content) or by a model fingerprint.
BY_CONTENT = frozenset({"data", "mixture", "tokenizer", "chat_template", "model", "reference_model"})
# The plan: may grow when the learning rate of the steps already done is unchanged.
SCHEDULE = frozenset({"epochs", "max_steps"})


def train_settings(config: Any) -> dict[str, Any]:
    """The settings that decide the trained weights, besides the data and the plan's length."""
    data = to_dict(config)
    out = {k: v for k, v in data.items() if k not in NOT_TRAINING | BY_CONTENT | SCHEDULE}
    out["model"] = model_fingerprint(config.model)
    out["reference_model"] = model_fingerprint(config.reference_path) if config.reference_model else None
    return out


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:18] + "..." + text[-18:]


def check_settings(saved: Any, config: Any, checkpoint: Path) -> None:
    """Refuse (before anything is written) when a weight-deciding setting changed."""
    if not saved.settings:
        return  # a checkpoint from before settings were recorded: the data check still applies
    now = train_settings(config)
    # With the layout recorded, the global batch is compared by check_layout, not grad_accum alone.
    layout_checked = {"grad_accum"} if getattr(saved, "micro_batches_per_step", 0) else set()
    changed = [f"{k} {_show(saved.settings.get(k))} -> {_show(now.get(k))}"
               for k in sorted(set(now) | set(saved.settings))
               if saved.settings.get(k) != now.get(k) and k not in layout_checked]
    if changed:
        raise refusal(config, checkpoint, ", ".join(changed))


def check_data(saved: Any, data_hash: str, config: Any, checkpoint: Path) -> None:
    if saved.data_hash and saved.data_hash != data_hash:
        raise refusal(config, checkpoint, "the training data (or its tokenization: tokenizer, chat template, "
                                          "max_length) differs")


def check_plan(saved: Any, config: Any, checkpoint: Path, total_steps: int, warmup: int) -> None:
    """Epochs / max_steps may change only if every step already taken keeps its learning rate."""
    from drover.train.engine import lr_lambda

    if not saved.total_steps or (saved.total_steps, saved.warmup_steps) == (total_steps, warmup):
        return
    what = f"the plan {saved.total_steps} -> {total_steps} steps (epochs={config.epochs}, max_steps={config.max_steps})"
    if saved.step > total_steps:
        raise refusal(config, checkpoint, f"{what} is shorter than the {saved.step} steps already done")
    old = lr_lambda(config.schedule, saved.warmup_steps, saved.total_steps)
    new = lr_lambda(config.schedule, warmup, total_steps)
    if any(old(k) != new(k) for k in range(saved.step + 1)):
        raise refusal(config, checkpoint, f"{what} changes the {config.schedule} learning-rate schedule of the "
                                          f"{saved.step} steps already done")


def refusal(config: Any, checkpoint: Path, what: str) -> ConfigError:
    return ConfigError(f"{config.run_dir}: cannot resume from {checkpoint}: {what}; resuming would mix settings. "
                       f"Start fresh with --force (replaces this run's checkpoints, model and log) or use a new run dir")
