"""Every training objective, by name: the one registration site.

Each entry points at a module-level `SPEC` (an `ObjectiveSpec`); modules are imported
only when their objective is used.
"""

from __future__ import annotations

from drover.registry import Registry
from drover.train.objective import ObjectiveSpec

OBJECTIVES: Registry[ObjectiveSpec] = Registry("objective", {
    "sft": "drover.train.objectives.sft:SPEC",
    "reward": "drover.train.objectives.reward:SPEC",
    "dpo": "drover.train.objectives.dpo:SPEC",
    "dpo-ln": "drover.train.objectives.dpo:LN_SPEC",
    "ipo": "drover.train.objectives.ipo:SPEC",
    "slic": "drover.train.objectives.slic:SPEC",
    "rrhf": "drover.train.objectives.rrhf:SPEC",
    "pro": "drover.train.objectives.pro:SPEC",
    "tuna": "drover.train.objectives.tuna:SPEC",
    "kto": "drover.train.objectives.kto:SPEC",
    "orpo": "drover.train.objectives.orpo:SPEC",
    "simpo": "drover.train.objectives.simpo:SPEC",
    "cpo": "drover.train.objectives.cpo:SPEC",
})


def get_objective(name: str) -> ObjectiveSpec:
    """The spec registered under `name` (a ConfigError with "did you mean" otherwise)."""
    return OBJECTIVES.get(name)
