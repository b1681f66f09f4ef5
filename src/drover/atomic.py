"""Atomic file writes: write to a temporary file beside the target, then rename.

A crash never leaves a half-written output that a resumed run would mistake for a
finished one. The file gets the permissions an ordinary `open()` would give it (0666 minus
the process umask), not mkstemp's private 0600. Every JSON written here is strict: NaN
and Infinity, which most JSON parsers refuse, become null (`strict`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from drover.errors import InputError


def strict(obj: Any) -> Any:
    """`obj` with every float NaN/Infinity replaced by None (valid JSON for any parser)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    return obj


def strict_dumps(obj: Any, **kwargs: Any) -> str:
    """`json.dumps` that never writes NaN/Infinity (they become null)."""
    return json.dumps(strict(obj), allow_nan=False, **kwargs)


def umask() -> int:
    """The process umask, read without changing it where Linux allows (no race with threads)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary file that replaces `path` only if the block finishes."""
    path = Path(path)
    if path.is_dir():
        raise InputError(path, None, None, "is a directory; expected a file name to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o666 & ~umask())
    except OSError as exc:
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        problem = f"{blocker} is a file, not a directory" if blocker else (exc.strerror or str(exc))
        raise InputError(path, None, None, f"cannot write here ({problem})") from None
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str | Path, text: str) -> None:
    with atomic_open(path) as handle:
        handle.write(text)


def write_json(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    with atomic_open(path) as handle:
        json.dump(strict(obj), handle, ensure_ascii=False, indent=indent, allow_nan=False)
        handle.write("\n")
