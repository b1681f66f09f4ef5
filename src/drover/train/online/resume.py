"""Honest resume of an online run: continue only where the new settings cannot alter what is done.

A checkpoint records the run's settings key (`OnlineConfig.resume_key`, flattened to dotted
names, with the prompts' content digest) and the planned schedule (optimiser steps, warmup).
On resume, before anything is written (config.yaml, logs and checkpoints stay as they were):

- a changed setting (algorithm parameters, reward terms or weights, sampling, engine, lr, the
  prompts' content...) refuses in one line naming what changed;
- more or fewer `steps` continue only if the learning rate of every optimiser step already
  taken is unchanged under the new plan (a constant schedule without warmup); a linear or
  cosine decay depends on the total, so extending such a run refuses, as the offline engine
  does (`drover.train.resume.check_plan`); fewer steps than are done refuses too.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from drover.errors import ConfigError


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings and lists as {"a.b[0]": value}, so a refusal names the one value that
    changed (an empty mapping or list adds nothing).

    >>> flatten({"a": {"b": 1, "c": [1, {"w": 2}]}, "d": 0, "e": {}})
    {'a.b': 1, 'a.c[0]': 1, 'a.c[1].w': 2, 'd': 0}
    """
    items = data.items() if isinstance(data, dict) else enumerate(data)
    out: dict[str, Any] = {}
    for key, value in items:
        name = f"{prefix}[{key}]" if isinstance(data, list) else f"{prefix}.{key}" if prefix else str(key)
        out.update(flatten(value, name) if isinstance(value, (dict, list)) else {name: value})
    return out


def settings(config: Any, prompts_digest: str) -> dict[str, Any]:
    """What a checkpoint records to name a changed setting on a refused resume."""
    return {**flatten(config.resume_key()), "prompts (content)": prompts_digest}


def plan(config: Any) -> tuple[int, int]:
    """(optimiser steps, warmup steps) of the whole run: what the learning-rate schedule follows."""
    total = config.steps * config.updates_per_step
    return total, math.ceil(config.train.warmup_ratio * total)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:18] + "..." + text[-18:]


def refusal(path: Path, what: str) -> ConfigError:
    return ConfigError(f"{path}: the checkpoint was made with other settings ({what}); resuming would mix "
                       f"them: use the same settings, a new run_dir, or --force (train.force=true) to start fresh")


def check(path: Path, saved: Any, resume_hash: str, now: dict[str, Any], config: Any) -> None:
    """Refuse (a one-line `ConfigError`) a resume from `saved` (the checkpoint's `TrainState`)
    that would mix settings or change the schedule of the steps already taken."""
    from drover.train.engine import lr_lambda

    if saved.data_hash != resume_hash:
        before = saved.settings or {}
        changed = [f"{k} {_show(before.get(k))} -> {_show(now.get(k))}" for k in sorted(set(now) | set(before))
                   if before.get(k) != now.get(k)]
        what = ", ".join(changed) if before and changed else \
            "algorithm, rewards, prompts, sampling, engine or model"
        raise refusal(path, what)
    total, warmup = plan(config)
    if saved.step > config.steps:
        raise refusal(path, f"steps {config.steps} is fewer than the {saved.step} steps already done")
    if not saved.total_steps or (saved.total_steps, saved.warmup_steps) == (total, warmup):
        return
    old = lr_lambda(config.train.schedule, saved.warmup_steps, saved.total_steps)
    new = lr_lambda(config.train.schedule, warmup, total)
    done = saved.step * config.updates_per_step
    if any(old(k) != new(k) for k in range(done + 1)):
        raise refusal(path, f"steps: the plan of {saved.total_steps} -> {total} optimiser steps changes the "
                            f"{config.train.schedule} learning-rate schedule of the {done} already taken")
