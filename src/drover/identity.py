"""Content identity: fingerprints of the things a result depends on.

A number drover prints must belong to *this* model and *these* inputs. Paths and command
lines do not say that (a model directory is retrained in place; a data file is edited), so
every key that decides "done already" or "same answer" is built from content:

- `digest(obj)`: a JSON-able value (a resolved config, a request, a list of answers) ->
  sha256 of its canonical JSON (sorted keys, no whitespace; NaN is refused, not hashed).
- `file_fingerprint(path)`: sha256 of a file's bytes, memoised per process so a 1 GB
  shard is read once per run, not once per lookup.
- `module_fingerprint(name)`: the code a result was computed by: a module's source and
  that of the modules of its own package it imports (a benchmark's metric helpers).
- `dir_fingerprint(path)`: a model directory's identity: the digest of every file's
  relative path and content hash (weights, tokenizer, chat template, config), skipping
  drover's own bookkeeping files (`FINGERPRINT_IGNORE`). Hashing gigabytes on every
  lookup would be slow, so per-file hashes are remembered: in `drover-fingerprint.json`
  beside the weights of a model drover saved (`stamp_dir`), and in the user cache
  (`$DROVER_CACHE_DIR`, else `$XDG_CACHE_HOME/drover`, else `~/.cache/drover`) for
  directories drover did not write, and for a saved model's copy whose stamp cannot be
  rewritten (read-only storage). Only regular files count: a dangling link or a named pipe
  has no content (and reading a pipe would block).

When a remembered hash is trusted (as git's index decides a file is unchanged): only while
the file's size, mtime_ns, inode and ctime_ns are all unchanged. Size and mtime alone are
not enough: a file replaced by another of the same size with the same mtime (tar's 1-s
mtimes, `cp -p`/`rsync -a`/`touch -r` of two checkpoints of one architecture) would keep
the old weights' hash. A replacement has another inode, and ctime cannot be set from user
space: every write, rename-over, utime and chmod moves it. Two further rules close the
remaining gaps:
- Racy files (git's "racily clean" entries): a write in the same timestamp tick as the
  last one leaves every stat field equal, so a hash is remembered only when the file's
  ctime is older than the start of its read by more than the filesystem's timestamp
  granularity (`_settled_from`); a fresher file is hashed again at its next lookup.
  `stamp_dir` waits out that tick (milliseconds; up to 2 s on whole-second filesystems)
  so a model drover just saved is remembered at once.
- Entries of the older manifest format ([size, mtime_ns, sha]) are re-hashed, never trusted.
A copied model directory (or one moved to another filesystem) has new inodes, so it is
re-hashed once, then remembered; one renamed within its filesystem keeps its hashes.

A model is named by `model_fingerprint(spec)`: a local directory by content (a peft adapter
with the base model its `adapter_config.json` names), any other spec (a hub id) by name.

Fingerprints are "sha256:<hex>" strings; `short()` gives the 12-hex form for display.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

PREFIX = "sha256:"
# Files drover writes beside a model that do not change what the model computes.
FINGERPRINT_FILE = "drover-fingerprint.json"
FINGERPRINT_IGNORE = frozenset({"provenance.json", FINGERPRINT_FILE, "README.md"})
# Per process: resolved path -> (stat signature, sha) of files whose hash may be trusted.
_FILE_MEMO: dict[str, tuple[list[int], str]] = {}
# Timestamp granularity assumed when deciding a file is settled: the kernel's coarse clock
# lags by at most a jiffy (<= 10 ms); filesystems with whole-second stamps (ext3, FAT: 2 s)
# are recognised by a ctime with no sub-second part.
FINE_TICK_NS = 20_000_000
COARSE_TICK_NS = 2_000_000_000


def canonical_json(obj: Any) -> str:
    """The one serialisation every digest uses (NaN/Infinity refused: they are not JSON)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str)


def digest(obj: Any) -> str:
    """sha256 of `obj`'s canonical JSON, as "sha256:<hex>"."""
    return PREFIX + hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


def digest_bytes(data: bytes) -> str:
    return PREFIX + hashlib.sha256(data).hexdigest()


def _signature(st: os.stat_result) -> list[int]:
    """The stat fields that must all be unchanged for a remembered hash to hold."""
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]


def _settled_from(ctime_ns: int) -> int:
    """The earliest time (ns) from which any write to a file is sure to move its ctime past
    `ctime_ns`. A hash read before that may be of content rewritten within the same
    timestamp tick, leaving every stat field equal (git's racy-clean problem): it is used,
    never remembered."""
    return ctime_ns + (COARSE_TICK_NS if ctime_ns % 1_000_000_000 == 0 else FINE_TICK_NS)


def file_fingerprint(path: str | Path) -> str:
    """sha256 of a file's content, memoised while its size, mtime, inode and ctime hold."""
    path = Path(path)
    st = path.stat()
    key, signature = str(path.resolve()), _signature(st)
    cached = _FILE_MEMO.get(key)
    if cached is not None and cached[0] == signature:
        return cached[1]
    started = time.time_ns()
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    value = PREFIX + h.hexdigest()
    if _settled_from(st.st_ctime_ns) <= started:
        _FILE_MEMO[key] = (signature, value)
    else:
        _FILE_MEMO.pop(key, None)
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
            try:
                st = full.stat()
            except FileNotFoundError:
                if full.is_symlink():  # a dangling link (a pruned hub blob): no content to compute with
                    continue
                raise _vanished(full) from None
            if stat.S_ISREG(st.st_mode):  # (a named pipe or socket has no content, and would block a read)
                out.append((full.relative_to(root).as_posix(), full, st))
    return out


def _vanished(path: Path) -> Exception:
    from drover.errors import InputError

    return InputError(path, None, None, "vanished while its directory was fingerprinted (is another process "
                                        "writing it?); run again once it is written")


def _user_cache(root: Path) -> Path:
    base = os.environ.get("DROVER_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "drover")
    return Path(base) / "fingerprints" / (digest(str(root.resolve())).removeprefix(PREFIX)[:32] + ".json")


def _read_manifest(path: Path) -> dict[str, list[Any]]:
    """{relative path: [size, mtime_ns, ino, ctime_ns, sha]} from a fingerprint file ({} when
    absent or foreign; entries of another shape are ignored by `_fingerprint_files`)."""
    try:
        files = json.loads(path.read_text(encoding="utf-8")).get("files")
    except (OSError, ValueError, AttributeError):
        return {}
    return files if isinstance(files, dict) else {}


def _write_manifest(path: Path, fingerprint: str, files: dict[str, list[Any]]) -> bool:
    """Best effort (False when it could not be written): a read-only cache only costs a re-hash next time."""
    from drover.atomic import write_json

    try:
        write_json(path, {"fingerprint": fingerprint, "files": files})
    except Exception:  # (InputError included: a DroverError)
        return False
    return True


def _fingerprint_files(root: Path, *manifests: dict[str, list[Any]]) -> tuple[str, dict[str, list[Any]]]:
    """The directory's fingerprint and the manifest entries worth remembering (settled files);
    a file's hash is taken from the first of `manifests` whose entry still holds."""
    files: dict[str, list[Any]] = {}
    hashes: list[list[str]] = []
    for rel, full, st in _dir_files(root):
        signature = _signature(st)
        seen = next((e for e in (m.get(rel) for m in manifests) if isinstance(e, list) and len(e) == 5
                     and e[:4] == signature and isinstance(e[4], str)), None)
        if seen is not None:
            sha = seen[4]
            _FILE_MEMO[str(full.resolve())] = (signature, sha)
        else:
            try:
                sha = file_fingerprint(full)
            except FileNotFoundError:
                raise _vanished(full) from None
        if _FILE_MEMO.get(str(full.resolve())) == (signature, sha):  # settled, and unchanged since the walk
            files[rel] = [*signature, sha]
        hashes.append([rel, sha])
    return digest(hashes), files


def dir_fingerprint(path: str | Path) -> str:
    """A directory's identity: relative paths + content hashes of every file in it.

    Equal to `digest([[relative path, file_fingerprint], ...])` over the sorted files; the
    stored per-file hashes only spare re-reading files whose size, mtime, inode and ctime
    are unchanged."""
    root = Path(path)
    stamped = root / FINGERPRINT_FILE
    known = _read_manifest(stamped) if stamped.is_file() else {}
    cache = _user_cache(root)
    cached = _read_manifest(cache)
    # A stamp's entry is trusted first; the user cache holds what a stamp that cannot be
    # rewritten (a saved model copied to read-only storage: new inodes) no longer vouches for.
    fingerprint, files = _fingerprint_files(root, known, cached)
    if files != known and not (stamped.is_file() and _write_manifest(stamped, fingerprint, files)) and files != cached:
        _write_manifest(cache, fingerprint, files)
    return fingerprint


def _wait_until_settled(root: Path) -> None:
    """Sleep out the timestamp tick of the directory's newest file (see `_settled_from`), at
    most 2 s: a file server whose clock runs ahead only costs a re-hash at the next lookup."""
    ready = max((_settled_from(st.st_ctime_ns) for _, _, st in _dir_files(root)), default=0)
    delay = min(ready - time.time_ns(), COARSE_TICK_NS)
    if delay > 0:
        time.sleep(delay / 1e9)


def stamp_dir(path: str | Path) -> str:
    """Record a directory drover just wrote (a saved model): `drover-fingerprint.json` beside
    its files, so it is never re-hashed while unchanged (a copy elsewhere is, once)."""
    root = Path(path)
    _wait_until_settled(root)
    fingerprint, files = _fingerprint_files(root)
    _write_manifest(root / FINGERPRINT_FILE, fingerprint, files)
    return fingerprint


def path_fingerprint(path: str | Path) -> str:
    """A file's or a directory's fingerprint, whichever `path` is."""
    path = Path(path)
    return dir_fingerprint(path) if path.is_dir() else file_fingerprint(path)


def model_fingerprint(spec: str, _seen: frozenset[str] = frozenset()) -> str:
    """A model's identity: a local directory's `dir_fingerprint`; any other spec (a hub id,
    which drover never downloads unasked) is its own name. A peft adapter directory is loaded
    with the base model its `adapter_config.json` names, so that base's identity is part of it."""
    if not (spec and Path(spec).is_dir()):
        return spec
    own = dir_fingerprint(spec)
    base = adapter_base(spec)
    resolved = str(Path(spec).resolve())
    if base is None or resolved in _seen:
        return own
    return digest({"adapter": own, "base": model_fingerprint(base, _seen | {resolved})})


def adapter_base(path: str | Path) -> str | None:
    """The base model a peft adapter directory names (None for a full model)."""
    try:
        config = json.loads((Path(path) / "adapter_config.json").read_text(encoding="utf-8"))
        return str(config["base_model_name_or_path"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def module_fingerprint(name: str) -> str:
    """The source of module `name` and of every module of its top-level package it imports
    directly (anywhere in the file: drover imports lazily inside functions), without
    importing any of them. A benchmark's number follows its task module *and* the metric and
    parser modules it calls; one import level, so a change far below (error messages) does
    not re-run every benchmark."""
    import ast
    import importlib.util

    def source(module: str) -> str | None:
        spec = importlib.util.find_spec(module)
        return spec.origin if spec is not None and spec.origin and spec.origin.endswith(".py") else None

    root = source(name)
    if root is None:
        raise ValueError(f"module {name!r} has no Python source to fingerprint")
    package = name.split(".")[0]
    used: set[str] = set()
    for node in ast.walk(ast.parse(Path(root).read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            used.update(a.name for a in node.names if a.name.split(".")[0] == package)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == package:
            used.add(node.module)
            for alias in node.names:  # `from pkg.metrics import rouge`: a submodule
                with contextlib.suppress(ImportError, ValueError):
                    if importlib.util.find_spec(f"{node.module}.{alias.name}") is not None:
                        used.add(f"{node.module}.{alias.name}")
    files = {module: source(module) for module in sorted(used - {name})}
    return digest({"module": file_fingerprint(root),
                   "imports": {m: file_fingerprint(f) for m, f in files.items() if f is not None}})


def short(fingerprint: str | None) -> str:
    """The 12-hex display form of a fingerprint ("-" when unknown)."""
    if not fingerprint:
        return "-"
    return fingerprint.removeprefix(PREFIX)[:12]
