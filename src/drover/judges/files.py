"""Where the judges' shipped data files live, and how they are read (prompt texts: `drover.prompts`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from drover.errors import InputError

RESOURCES = Path(__file__).resolve().parent.parent / "resources"


def data_path(*parts: str) -> Path:
    """A shipped dataset file: `data_path("mt_bench", "question.jsonl")`."""
    return RESOURCES.joinpath("data", *parts)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All records of a small JSONL file, with `file:line` on bad JSON."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, None, None, "file not found")
    out = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise InputError(path, number, None, f"invalid JSON: {exc.msg} (column {exc.colno})") from None
    return out


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.exists():
        raise InputError(path, None, None, "file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(path, exc.lineno, None, f"invalid JSON: {exc.msg} (column {exc.colno})") from None
