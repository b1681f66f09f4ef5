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
from dataclasses import asdict, dataclass
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


def load(accelerator: Any, path: Path) -> TrainState:
    if not (path / STATE_FILE).is_file():
        raise ConfigError(f"{path}: not a drover checkpoint (no {STATE_FILE}); "
                          f"give a checkpoints/step-N directory or a run directory that has one")
    accelerator.load_state(str(path))
    return TrainState(**json.loads((path / STATE_FILE).read_text()))


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
    """The trained model in Hugging Face format, with tokenizer and chat template."""
    from drover.train.model import hf_model

    model = accelerator.unwrap_model(wrapper).model
    state_dict = accelerator.get_state_dict(wrapper)
    is_peft = hasattr(model, "peft_config")
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        if is_peft and merge_lora:
            hf_model(model.merge_and_unload()).save_pretrained(out, safe_serialization=True)
        elif is_peft:
            model.save_pretrained(out)
        else:
            inner = {k.removeprefix("model."): v for k, v in state_dict.items()}
            model.save_pretrained(out, state_dict=inner, safe_serialization=True)
        tokenizer.save_pretrained(out)
    accelerator.wait_for_everyone()
    return out
