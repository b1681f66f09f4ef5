"""Aggregate memory and process caps for one sandboxed run, through cgroups.

Why: RLIMIT_AS bounds each process, not their sum; a program that forks can use
`processes x memory` in total. A cgroup caps the sum (tmpfs pages included, since the
kernel charges them to the writer's cgroup) and lets the evaluator kill every member,
even ones that left the process group. cgroup v2 is used where the evaluator's own
cgroup can hold children with the `memory`/`pids` controllers; the v1 `memory` and
`pids` hierarchies otherwise. Where neither is writable (a non-root user without a
delegated subtree), nothing here applies and `available()` says so.
"""

from __future__ import annotations

import functools
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

PREFIX = "drover-sandbox-"


@dataclass(frozen=True)
class Controller:
    """Where runs' cgroups go for one controller, and the file names it uses."""

    kind: str  # "memory" or "pids"
    parent: Path  # the evaluator's own cgroup directory
    limit_file: str
    swap_file: str | None = None


def _own_paths() -> dict[str, str]:
    """Hierarchy name ("" for v2, else controller names) -> this process's cgroup path."""
    out: dict[str, str] = {}
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, names, path = line.split(":", 2)
            for name in names.split(",") if names else [""]:
                out[name] = path
    except (OSError, ValueError):
        pass
    return out


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, fs type, super options) of the cgroup file systems."""
    found = []
    try:
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            left, right = line.split(" - ", 1)
            point = left.split()[4].replace("\\040", " ")
            fstype, _, options = right.split()[:3]
            if fstype in ("cgroup", "cgroup2"):
                found.append((point, fstype, set(options.split(","))))
    except (OSError, ValueError, IndexError):
        pass
    return found


def _writable(directory: Path) -> bool:
    return directory.is_dir() and os.access(directory, os.W_OK | os.X_OK)


@functools.lru_cache(maxsize=None)
def controllers() -> tuple[Controller, ...]:
    """The usable controllers, memory first; empty where none is writable."""
    own, found = _own_paths(), {}
    for point, fstype, options in _mounts():
        if fstype == "cgroup2" and "" in own:
            parent = Path(point + own[""])
            try:
                enabled = (parent / "cgroup.subtree_control").read_text().split()
            except OSError:
                continue
            if _writable(parent):
                if "memory" in enabled:
                    found.setdefault("memory", Controller("memory", parent, "memory.max", "memory.swap.max"))
                if "pids" in enabled:
                    found.setdefault("pids", Controller("pids", parent, "pids.max"))
        elif fstype == "cgroup":
            for kind, limit, swap in (("memory", "memory.limit_in_bytes", "memory.memsw.limit_in_bytes"),
                                      ("pids", "pids.max", None)):
                if kind in options and kind in own:
                    parent = Path(point + own[kind])
                    if _writable(parent) and (parent / limit).exists():
                        found.setdefault(kind, Controller(kind, parent, limit, swap))
    return tuple(found[k] for k in ("memory", "pids") if k in found)


def available() -> dict[str, str | None]:
    """For the isolation report: where each aggregate cap comes from, or None."""
    by_kind = {c.kind: c for c in controllers()}
    return {kind: (f"cgroup {by_kind[kind].parent}" if kind in by_kind else None) for kind in ("memory", "pids")}


def create(run: str, memory_bytes: int, processes: int) -> list[Path]:
    """One cgroup per controller for run `run` (a name under PREFIX), limits written."""
    made = []
    for ctl in controllers():
        path = ctl.parent / run
        try:
            path.mkdir()
            made.append(path)
            value = memory_bytes if ctl.kind == "memory" else processes
            (path / ctl.limit_file).write_text(str(value))
            if ctl.swap_file and (path / ctl.swap_file).exists():
                (path / ctl.swap_file).write_text("0" if ctl.swap_file.endswith("swap.max") else str(value))
        except OSError:
            continue
    return made


def kill_and_remove(paths: list[Path], deadline_s: float = 5.0) -> None:
    """SIGKILL every process left in the run's cgroups, then remove them."""
    end = time.monotonic() + deadline_s
    for path in paths:
        while True:
            try:
                pids = [int(p) for p in (path / "cgroup.procs").read_text().split()]
            except OSError:
                pids = []
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            if time.monotonic() > end:
                break
            time.sleep(0.01)
        try:
            path.rmdir()
        except OSError:
            pass


def remove_stale(is_live: callable) -> None:
    """Remove the cgroups of earlier evaluators that died (`is_live(name)` is False)."""
    for ctl in controllers():
        try:
            entries = [p for p in ctl.parent.iterdir() if p.name.startswith(PREFIX) and p.is_dir()]
        except OSError:
            continue
        for path in entries:
            if not is_live(path.name):
                kill_and_remove([path], deadline_s=1.0)
