"""Checkpoints (for resuming) and the final model (for using).

A checkpoint is `accelerate`'s full training state (model, optimizer, registered scheduler,
RNG states; sharded the right way under DeepSpeed/FSDP) plus `trainer_state.json` (step,
epoch, position in the epoch, tokens trained, data fingerprint). It is written to
`checkpoints/.tmp-step-N` and renamed to `checkpoints/step-N` only when complete, so a
crash mid-save never leaves a checkpoint that looks whole; older ones beyond `keep_last`
are deleted.

The final model goes to `<run_dir>/model` in plain Hugging Face format with the tokenizer
and its chat template: loadable with `AutoModelForCausalLM.from_pretrained` alone (LoRA
adapters merged when `lora.merge`, else saved as a peft adapter next to the base path).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from drover.atomic import write_json
from drover.errors import ConfigError

STATE_FILE = "trainer_state.json"


@dataclass
class TrainState:
    step: int = 0                # optimizer steps done
    epoch: int = 0               # current epoch
    epoch_step: int = 0          # optimizer steps done within the current epoch
    tokens: int = 0              # target tokens trained on
    data_hash: str = ""
    settings: dict[str, Any] = field(default_factory=dict)  # train.resume.train_settings at the start
    total_steps: int = 0         # the plan the steps so far were taken under (for train.resume.check_plan)
    warmup_steps: int = 0
    # The layout that wrote it (0: a checkpoint from before these were recorded).
    num_processes: int = 0       # processes (GPUs x nodes)
    micro_batches_per_step: int = 0  # grad_accum x processes: the global batch, in micro-batches
    steps_per_epoch: int = 0


def checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step-*") if (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def latest(root: Path) -> Path | None:
    found = checkpoints(root)
    return found[-1] if found else None


def save(accelerator: Any, root: Path, state: TrainState, keep_last: int) -> Path:
    """Write a checkpoint atomically (every process takes part: sharded states)."""
    final = root / f"step-{state.step:07d}"
    tmp = root / f".tmp-step-{state.step:07d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json(tmp / STATE_FILE, asdict(state))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in checkpoints(root)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def check_layout(path: Path, num_processes: int, micro_batches_per_step: int, steps_per_epoch: int,
                 sharded_states: bool) -> None:
    """Refuse, before anything is loaded, a resume that would change the training.

    DDP (and one process) keep whole model and optimizer copies, and the data order is a
    function of the step and the micro-batches per step, so a checkpoint resumes on any
    number of processes whose grad_accum keeps the global batch (2 nodes x 4 GPUs x
    accum 1 = 1 node x 4 GPUs x accum 2). DeepSpeed ZeRO and FSDP shard optimizer states
    (and ZeRO-3/FSDP the weights) per process: those resume on the same number only.
    """
    saved = read_state(path)
    if not saved.num_processes or saved.num_processes == num_processes and \
            saved.micro_batches_per_step == micro_batches_per_step:
        return
    if sharded_states and saved.num_processes != num_processes:
        raise ConfigError(f"{path}: written by {saved.num_processes} processes under DeepSpeed ZeRO/FSDP, whose "
                          f"optimizer states are sharded per process; resume with {saved.num_processes} processes "
                          f"(now {num_processes})")
    if saved.micro_batches_per_step != micro_batches_per_step or saved.steps_per_epoch != steps_per_epoch:
        per_process = saved.micro_batches_per_step / num_processes
        hint = (f"set grad_accum={int(per_process)}" if per_process.is_integer()
                else f"use a number of processes that divides {saved.micro_batches_per_step}")
        raise ConfigError(f"{path}: trained with {saved.num_processes} processes x grad_accum "
                          f"{saved.micro_batches_per_step // saved.num_processes} = {saved.micro_batches_per_step} "
                          f"micro-batches per step, now {num_processes} x {micro_batches_per_step // num_processes} = "
                          f"{micro_batches_per_step}: the batches (and data order) would change; {hint} to keep "
                          f"the global batch")


def read_state(path: Path) -> TrainState:
    """A checkpoint's `trainer_state.json` alone (no weights): what resume checks compare."""
    if not (path / STATE_FILE).is_file():
        raise ConfigError(f"{path}: not a drover checkpoint (no {STATE_FILE}); "
                          f"give a checkpoints/step-N directory or a run directory that has one")
    data = json.loads((path / STATE_FILE).read_text())
    known = {f for f in TrainState.__dataclass_fields__}
    return TrainState(**{k: v for k, v in data.items() if k in known})


def load(accelerator: Any, path: Path) -> TrainState:
    state = read_state(path)
    accelerator.load_state(str(path))
    return state


def resolve_resume(resume_from: str, run_checkpoints: Path) -> Path | None:
    """The checkpoint to resume from: an explicit path (must exist) or the run's latest."""
    if resume_from:
        path = Path(resume_from)
        if not path.exists():
            raise ConfigError(f"resume_from: {path}: no such checkpoint or run directory")
        if (path / STATE_FILE).is_file():
            return path
        found = latest(path / "checkpoints") or latest(path)
        if found is None:
            raise ConfigError(f"resume_from: {path}: no checkpoint in it (expected checkpoints/step-N/{STATE_FILE})")
        return found
    return latest(run_checkpoints)


def save_final(accelerator: Any, wrapper: Any, tokenizer: Any, out: Path, merge_lora: bool) -> Path:
    """The trained model in Hugging Face format, with tokenizer and chat template.

    Under ZeRO-3/FSDP the process's module holds only shards, so LoRA adapters are saved from
    the gathered state dict, and merging rebuilds the base model on the CPU of the main process."""
    from drover.local.sequence_model import hf_model
    from drover.train.model import sharded

    model = accelerator.unwrap_model(wrapper).model
    state_dict = accelerator.get_state_dict(wrapper)  # every process takes part (gathers shards)
    is_peft = hasattr(model, "peft_config")
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        # the Hugging Face model's weights only (an online policy's value head stays in the checkpoints)
        inner = {k.removeprefix("model."): v for k, v in state_dict.items() if k.startswith("model.")}
        if is_peft and sharded(accelerator):
            if merge_lora:
                merged_on_cpu(accelerator, model, inner).save_pretrained(out, safe_serialization=True)
            else:
                model.save_pretrained(out, state_dict=inner)
        elif is_peft and merge_lora:
            hf_model(model.merge_and_unload()).save_pretrained(out, safe_serialization=True)
        elif is_peft:
            model.save_pretrained(out)
        else:
            model.save_pretrained(out, state_dict=inner, safe_serialization=True)
        tokenizer.save_pretrained(out)
    accelerator.wait_for_everyone()
    return out


def merged_on_cpu(accelerator: Any, model: Any, state_dict: dict[str, Any]) -> Any:
    """The base model with the trained adapters (from the gathered `state_dict` of the peft
    `model`) merged in: the base reloaded whole on CPU, as the sharded `model` cannot merge."""
    import copy

    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    from drover.local.sequence_model import hf_model, load_backbone
    from drover.train.model import unpartitioned_loading

    name = model.active_adapter
    peft_config = copy.deepcopy(model.peft_config[name])
    adapter = get_peft_model_state_dict(model, state_dict=state_dict, adapter_name=name)
    scalar_head = peft_config.task_type == "SEQ_CLS"
    with unpartitioned_loading(accelerator):
        base = load_backbone(peft_config.base_model_name_or_path, scalar_head,
                             hf_model(model).config.pad_token_id, allow_download=False)
    fresh = get_peft_model(base, peft_config, adapter_name=name)
    result = set_peft_model_state_dict(fresh, {k: v.float() for k, v in adapter.items()}, adapter_name=name)
    if result.unexpected_keys:
        raise RuntimeError(f"adapter weights not in the rebuilt model: {result.unexpected_keys[:5]}")
    return hf_model(fresh.merge_and_unload())
