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
  drover's own bookkeeping files (`FINGERPRINT_IGNORE`). Hashing gigabytes on every
  lookup would be slow, so per-file hashes are remembered by (size, mtime_ns): in
  `drover-fingerprint.json` beside the weights of a model drover saved (`stamp_dir`), and
  in the user cache (`$DROVER_CACHE_DIR`, else `$XDG_CACHE_HOME/drover`, else
  `~/.cache/drover`) for directories drover did not write. A file whose size or mtime
  changed is hashed again, so an edit in place is never missed.

Fingerprints are "sha256:<hex>" strings; `short()` gives the 12-hex form for display.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

PREFIX = "sha256:"
# Files drover writes beside a model that do not change what the model computes.
FINGERPRINT_FILE = "drover-fingerprint.json"
FINGERPRINT_IGNORE = frozenset({"provenance.json", FINGERPRINT_FILE, "README.md"})
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


def _dir_files(root: Path) -> list[tuple[str, Path, os.stat_result]]:
    """(relative path, path, stat) of every file that makes up a directory's identity, sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name in FINGERPRINT_IGNORE or name.startswith("."):
                continue
            full = Path(dirpath) / name
            out.append((full.relative_to(root).as_posix(), full, full.stat()))
    return out


def _user_cache(root: Path) -> Path:
    base = os.environ.get("DROVER_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "drover")
    return Path(base) / "fingerprints" / (digest(str(root.resolve())).removeprefix(PREFIX)[:32] + ".json")


def _read_manifest(path: Path) -> dict[str, list[Any]]:
    """{relative path: [size, mtime_ns, sha]} from a fingerprint file ({} when absent or foreign)."""
    try:
        files = json.loads(path.read_text(encoding="utf-8")).get("files")
    except (OSError, ValueError, AttributeError):
        return {}
    return files if isinstance(files, dict) else {}


def _write_manifest(path: Path, fingerprint: str, files: dict[str, list[Any]]) -> None:
    """Best effort: a read-only directory or cache only costs a re-hash next time."""
    from drover.atomic import write_json

    with contextlib.suppress(Exception):  # (InputError included: a DroverError)
        write_json(path, {"fingerprint": fingerprint, "files": files})


def _fingerprint_files(root: Path, known: dict[str, list[Any]]) -> tuple[str, dict[str, list[Any]]]:
    files: dict[str, list[Any]] = {}
    for rel, full, st in _dir_files(root):
        seen = known.get(rel)
        if isinstance(seen, list) and len(seen) == 3 and seen[:2] == [st.st_size, st.st_mtime_ns]:
            sha = seen[2]
            _FILE_MEMO[(str(full.resolve()), st.st_size, st.st_mtime_ns)] = sha
        else:
            sha = file_fingerprint(full)
        files[rel] = [st.st_size, st.st_mtime_ns, sha]
    return digest([[rel, entry[2]] for rel, entry in files.items()]), files


def dir_fingerprint(path: str | Path) -> str:
    """A directory's identity: relative paths + content hashes of every file in it.

    Equal to `digest([[relative path, file_fingerprint], ...])` over the sorted files; the
    stored per-file hashes only spare re-reading files whose size and mtime are unchanged."""
    root = Path(path)
    stamped = root / FINGERPRINT_FILE
    known = _read_manifest(stamped) if stamped.is_file() else {}
    cache = _user_cache(root)
    if not known:
        known = _read_manifest(cache)
    fingerprint, files = _fingerprint_files(root, known)
    if files != known:
        _write_manifest(stamped if stamped.is_file() else cache, fingerprint, files)
    return fingerprint


def stamp_dir(path: str | Path) -> str:
    """Record a directory drover just wrote (a saved model): `drover-fingerprint.json` beside
    its files, so its identity travels with it and is never re-hashed while unchanged."""
    root = Path(path)
    fingerprint, files = _fingerprint_files(root, {})
    _write_manifest(root / FINGERPRINT_FILE, fingerprint, files)
    return fingerprint


def path_fingerprint(path: str | Path) -> str:
    """A file's or a directory's fingerprint, whichever `path` is."""
    path = Path(path)
    return dir_fingerprint(path) if path.is_dir() else file_fingerprint(path)


def short(fingerprint: str | None) -> str:
    """The 12-hex display form of a fingerprint ("-" when unknown)."""
    if not fingerprint:
        return "-"
    return fingerprint.removeprefix(PREFIX)[:12]
