"""Content identity: fingerprints of the things a result depends on.

A number drover prints must belong to *this* model and *these* inputs. Paths and command
lines do not say that (a model directory is retrained in place; a data file is edited), so
every key that decides "done already" or "same answer" is built from content:

- `digest(obj)`: a JSON-able value (a resolved config, a request, a list of answers) ->
  sha256 of its canonical JSON (sorted keys, no whitespace; NaN is refused, not hashed).
- `file_fingerprint(path)`: sha256 of a file's bytes, memoised per process by
  (path, size, mtime_ns) so a 1 GB shard is read once per run, not once per lookup.
- `dir_fingerprint(path)`: a model directory's identity: the digest of every file's
  relative path and content hash (weights, tokenizer, chat template, config), skipping
  drover's own bookkeeping files (`FINGERPRINT_IGNORE`).

Fingerprints are "sha256:<hex>" strings; `short()` gives the 12-hex form for display.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

PREFIX = "sha256:"
# Files drover writes beside a model that do not change what the model computes.
FINGERPRINT_IGNORE = frozenset({"provenance.json", "drover-fingerprint.json", "README.md"})
_FILE_MEMO: dict[tuple[str, int, int], str] = {}


def canonical_json(obj: Any) -> str:
    """The one serialisation every digest uses (NaN/Infinity refused: they are not JSON)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str)


def digest(obj: Any) -> str:
    """sha256 of `obj`'s canonical JSON, as "sha256:<hex>"."""
    return PREFIX + hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


def digest_bytes(data: bytes) -> str:
    return PREFIX + hashlib.sha256(data).hexdigest()


def file_fingerprint(path: str | Path) -> str:
    """sha256 of a file's content, memoised by (resolved path, size, mtime_ns)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    cached = _FILE_MEMO.get(key)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    value = PREFIX + h.hexdigest()
    _FILE_MEMO[key] = value
    return value


def dir_fingerprint(path: str | Path) -> str:
    """A directory's identity: relative paths + content hashes of every file in it."""
    root = Path(path)
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name in FINGERPRINT_IGNORE or name.startswith("."):
                continue
            full = Path(dirpath) / name
            entries.append([str(full.relative_to(root)), file_fingerprint(full)])
    return digest(entries)


def path_fingerprint(path: str | Path) -> str:
    """A file's or a directory's fingerprint, whichever `path` is."""
    path = Path(path)
    return dir_fingerprint(path) if path.is_dir() else file_fingerprint(path)


def short(fingerprint: str | None) -> str:
    """The 12-hex display form of a fingerprint ("-" when unknown)."""
    if not fingerprint:
        return "-"
    return fingerprint.removeprefix(PREFIX)[:12]
