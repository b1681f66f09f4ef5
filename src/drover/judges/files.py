"""Where the judges' shipped data files live, and how they are read (prompt texts: `drover.prompts`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from drover.inputs import iter_json_objects
from drover.inputs import read_json  # noqa: F401 - the judges' reader of JSON documents

RESOURCES = Path(__file__).resolve().parent.parent / "resources"


def data_path(*parts: str) -> Path:
    """A shipped dataset file: `data_path("mt_bench", "question.jsonl")`."""
    return RESOURCES.joinpath("data", *parts)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All records of a small JSONL file, each a JSON object (`drover.inputs` checks the file)."""
    return [obj for _, obj in iter_json_objects(path)]

