"""Read any dataset file as a stream of located rows, whatever its layout.

Public datasets come as a JSON array (Alpaca, Code Alpaca, AlpacaEval, LLMBar), JSONL
(Dolly, OASST trees, HH-RLHF), a single JSON document (a Super-NI task file), and
sometimes gzipped. The layout is detected from the content, not the file name, and every
row carries the line it starts on so errors read `file:line`.
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from drover.errors import InputError
from drover.formats.base import Row

_WS = re.compile(r"[ \t\n\r]*")
DATA_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz")


def _stem(path: Path) -> str:
    name = path.name
    for suffix in sorted(DATA_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def input_files(path: str | Path, only: list[str] | None = None) -> list[Path]:
    """The files to read: `path` itself, or the data files of a directory (sorted), e.g. a
    folder of Super-NI task files. `only` keeps the files whose names without extension
    are listed (and insists that each listed one exists)."""
    path = Path(path)
    if not path.is_dir():
        if only is not None:
            raise InputError(str(path), None, None, "a list of names to keep needs a directory as input")
        return [path]
    files = sorted(p for p in path.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.name.endswith(DATA_SUFFIXES))
    if only is not None:
        by_stem = {_stem(p): p for p in files}
        missing = [name for name in only if name not in by_stem]
        if missing:
            raise InputError(str(path), None, None, f"{len(missing)} listed file(s) not in this directory, "
                             f"e.g. {missing[0]!r}")
        files = [by_stem[name] for name in dict.fromkeys(only)]
    if not files:
        raise InputError(str(path), None, None, f"directory has no data files ({', '.join(DATA_SUFFIXES)})")
    return files


def read_names(path: str | Path) -> list[str]:
    """One name per line (blank lines and `#` comments ignored), e.g. a task split file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(str(path), None, None, "file not found")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise InputError(str(path), None, None, "not a UTF-8 text file") from None
    names = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not names:
        raise InputError(str(path), None, None, "empty list of names")
    return names


def read_rows(path: str | Path) -> Iterator[Row]:
    """Yield every item of a JSON array / JSONL / single-document file, gzip or not.

    JSONL is streamed line by line (memory stays flat on million-line files); a JSON array
    or document has to be read whole, but its items are still yielded one at a time.
    """
    path = Path(path)
    name = str(path)
    if not path.exists():
        raise InputError(name, None, None, "file not found")
    if path.is_dir():
        raise InputError(name, None, None, "is a directory, expected a JSON or JSONL file")
    with open(path, "rb") as handle:
        gzipped = handle.read(2) == b"\x1f\x8b"
    try:
        with (gzip.open(path, "rb") if gzipped else open(path, "rb")) as handle:
            yield from _rows(name, handle)
    except (OSError, EOFError, zlib.error) as exc:
        problem = f"corrupt gzip data ({exc})" if gzipped else f"cannot read the file ({exc})"
        raise InputError(name, None, None, problem) from None


def _rows(name: str, handle: IO[bytes]) -> Iterator[Row]:
    number, first = 0, b""
    for raw in handle:  # find the first non-blank line
        number += 1
        if raw.strip():
            first = raw
            break
    if not first:
        raise InputError(name, None, None, "empty file: no JSON records")
    text = _decode(name, first, number)
    start = text.lstrip()[:1]
    if start == "{" and _is_json(text):
        yield Row(name, number, None, json.loads(text))
        yield from _jsonl_rows(name, handle, number)
        return
    if start not in ("[", "{"):
        raise InputError(name, number, None, f"expected JSON or JSONL (a '[' or '{{'), found {start!r}")
    whole = "\n" * (number - 1) + text + _decode(name, handle.read(), number + 1)
    offset = _WS.match(whole).end()
    yield from (_array_rows(name, whole, offset) if start == "[" else _document_rows(name, whole, offset))


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


def _jsonl_rows(name: str, handle: IO[bytes], after: int) -> Iterator[Row]:
    for number, raw in enumerate(handle, start=after + 1):
        if not raw.strip():
            continue
        text = _decode(name, raw, number)
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(name, number, None, f"invalid JSON: {exc.msg} (column {exc.colno})") from None
        yield Row(name, number, None, obj)


def _decode(name: str, data: bytes, first_line: int = 1) -> str:
    """UTF-8 text of `data` (which starts on line `first_line`), or a located InputError."""
    nul = data.find(b"\x00")
    if nul >= 0:
        raise InputError(name, first_line + data.count(b"\n", 0, nul), None,
                         "binary data (NUL byte), expected UTF-8 JSON or JSONL")
    try:
        return data.decode("utf-8-sig" if first_line == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        line = first_line + data.count(b"\n", 0, exc.start)
        raise InputError(name, line, None, f"not valid UTF-8 ({exc.reason})") from None


class _Lines:
    """Offset -> line number, incrementally (offsets only grow)."""

    def __init__(self, text: str):
        self.text, self.pos, self.line = text, 0, 1

    def at(self, offset: int) -> int:
        self.line += self.text.count("\n", self.pos, offset)
        self.pos = offset
        return self.line


def _bad_json(name: str, exc: json.JSONDecodeError) -> InputError:
    return InputError(name, exc.lineno, None, f"invalid JSON: {exc.msg} (column {exc.colno})")


def _array_rows(name: str, text: str, start: int) -> Iterator[Row]:
    decoder = json.JSONDecoder()
    lines = _Lines(text)
    pos = _WS.match(text, start + 1).end()
    if text.startswith("]", pos):
        raise InputError(name, lines.at(start), None, "empty JSON array: no records")
    index = 0
    while True:
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise _bad_json(name, exc) from None
        yield Row(name, lines.at(pos), index, obj)
        index += 1
        pos = _WS.match(text, end).end()
        if text.startswith(",", pos):
            pos = _WS.match(text, pos + 1).end()
            continue
        if text.startswith("]", pos):
            break
        problem = "unexpected end of file" if pos >= len(text) else f"expected ',' or ']', found {text[pos]!r}"
        raise InputError(name, lines.at(pos), None, f"invalid JSON: {problem}")
    rest = _WS.match(text, pos + 1).end()
    if rest != len(text):
        raise InputError(name, lines.at(rest), None, "invalid JSON: extra data after the closing ']'")


def _document_rows(name: str, text: str, start: int) -> Iterator[Row]:
    """A single (pretty-printed) JSON document, e.g. a Super-NI task file."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _bad_json(name, exc) from None
    yield Row(name, text.count("\n", 0, start) + 1, None, obj)
