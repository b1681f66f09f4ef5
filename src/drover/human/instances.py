"""Pairwise human-evaluation instances: a prompt and two model completions.

The format is open-instruct's `eval_instances_*.jsonl`: `{id, prompt, completions:
[{model, completion}, {model, completion}]}`. One prompt id can appear in several pairings
(Tülu 1 pairs each prompt three ways), so an instance is keyed by id and both models.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from drover.errors import InputError
from drover.formats.source import read_rows


@dataclass(frozen=True)
class Instance:
    id: str
    prompt: str
    models: tuple[str, str]        # file order: scores are reported from models[0]'s side
    completions: tuple[str, str]

    @property
    def key(self) -> str:
        return f"{self.id}|{self.models[0]}|{self.models[1]}"

    def shown_order(self, seed: int) -> tuple[int, int]:
        """Which completion is shown as A and which as B: random per instance, but the same
        for every rater and every restart (seeded by `seed` and the instance key)."""
        return (1, 0) if random.Random(f"{seed}:{self.key}").random() < 0.5 else (0, 1)


def load_instances(path: str | Path) -> list[Instance]:
    """Read and validate instances; a malformed line raises InputError (file:line: field)."""
    out: list[Instance] = []
    first_line: dict[str, int] = {}
    for row in read_rows(path):
        row.object()
        rid = row.get("id", (str, int))
        prompt = row.text("prompt")
        completions = row.array("completions")
        if len(completions) != 2:
            raise row.error("completions", f"expected 2 completions, got {len(completions)}")
        models, texts = [], []
        for i in range(2):
            item = row.member(completions, i, "completions")
            models.append(row.text("model", obj=item, prefix=f"completions[{i}]."))
            texts.append(row.text("completion", obj=item, prefix=f"completions[{i}]."))
        if models[0] == models[1]:
            raise row.error("completions", f"both completions come from model {models[0]!r}")
        if not prompt.strip():
            raise row.error("prompt", "empty prompt")
        inst = Instance(str(rid), prompt, (models[0], models[1]), (texts[0], texts[1]))
        if inst.key in first_line:
            raise row.error(None, f"duplicate instance {inst.key!r} (first on line {first_line[inst.key]})")
        first_line[inst.key] = row.line
        out.append(inst)
    if not out:
        raise InputError(str(path), None, None, "no instances")
    return out
