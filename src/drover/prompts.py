"""Prompt texts shipped under `resources/prompts/` (prompts are data, not Python strings)."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=None)
def load_prompt(path: str) -> str:
    """The text of `resources/prompts/<path>`, e.g. `load_prompt("judges/rating_single.txt")`."""
    return resources.files("drover").joinpath("resources", "prompts", *path.split("/")).read_text(encoding="utf-8")
