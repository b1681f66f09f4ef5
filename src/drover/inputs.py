"""The one way to read a user's file: every loader (JSONL records, JSON lists, YAML configs)
comes through here, so a bad file always gives the same one-line `InputError`.

Checked, in order: the path exists, is a regular file (not a directory), holds no NUL
byte (binary data), is valid UTF-8, is not empty, and parses; errors name the file and,
where there is one, the line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from drover.errors import InputError


def check_file(path: str | Path, expected: str) -> Path:
    """`path` as a Path, or InputError when it is missing or not a regular file."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, None, None, "file not found")
    if path.is_dir():
        raise InputError(path, None, None, f"is a directory, expected {expected}")
    if not path.is_file():
        raise InputError(path, None, None, f"not a regular file, expected {expected}")
    return path


def _decode(path: Path, number: int, raw: bytes, expected: str) -> str:
    if b"\x00" in raw:
        raise InputError(path, number, None, f"binary data (NUL byte), expected {expected}")
    try:
        return raw.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(path, number, None, f"not valid UTF-8 ({exc.reason} at byte {exc.start})") from None


def read_text(path: str | Path, expected: str = "a UTF-8 text file") -> str:
    """The whole file as text; InputError (with the line) for binary or non-UTF-8 data."""
    path = check_file(path, expected)
    try:
        with open(path, "rb") as handle:
            lines = [_decode(path, number, raw, expected) for number, raw in enumerate(handle, start=1)]
    except OSError as exc:
        raise InputError(path, None, None, f"cannot read: {exc.strerror}") from None
    return "".join(lines)


def read_json(path: str | Path) -> Any:
    """One JSON document (e.g. alpaca_eval's model_outputs.json)."""
    text = read_text(path, "a UTF-8 JSON file")
    if not text.strip():
        raise InputError(path, None, None, "empty file: expected JSON")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(path, exc.lineno, None, f"invalid JSON: {exc.msg} (column {exc.colno})") from None
    except RecursionError:
        raise InputError(path, None, None, "invalid JSON: nested too deeply") from None


def iter_json_lines(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed JSON) for each non-blank line, streaming.

    Raises InputError for unreadable files, binary garbage, bad JSON and empty files.
    """
    path = check_file(path, "a JSONL file")
    seen = False
    try:
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                text = _decode(path, number, raw, "UTF-8 JSON lines")
                if not text.strip():
                    continue
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise InputError(path, number, None, f"invalid JSON: {exc.msg} (column {exc.colno})") from None
                except RecursionError:
                    raise InputError(path, number, None, "invalid JSON: nested too deeply") from None
                seen = True
                yield number, obj
    except OSError as exc:
        raise InputError(path, None, None, f"cannot read: {exc.strerror}") from None
    if not seen:
        raise InputError(path, None, None, "empty file: no JSON records")


def iter_json_objects(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Like iter_json_lines, but each line must be a JSON object (not a list, string, number)."""
    for number, obj in iter_json_lines(path):
        if not isinstance(obj, dict):
            raise InputError(path, number, None, f"expected a JSON object, got {type(obj).__name__}")
        yield number, obj
