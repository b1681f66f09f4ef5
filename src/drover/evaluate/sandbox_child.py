"""The trusted process that builds a sandbox and starts the tests in it (see `sandbox.py`).

Run as `python -I sandbox_child.py CONFIG_JSON`, on stdin two `sandbox_wire` messages:
`{"code"}`, read here, then `{"tests"}`, read by the tester only once the program's
process has been forked (so the tests never sit in memory the program inherits).
Standard library only. Steps, all before any untrusted code exists in a process:

1. join the run's cgroups (aggregate memory and process caps), die with the evaluator;
2. isolated mode: unshare user, mount, PID, network, IPC and UTS namespaces; a helper
   still outside writes the id maps, so that inside id 0 is an *unprivileged* id outside
   (root: a fresh high uid per run; otherwise the user's own) and never host root;
3. fork the namespace's PID 1, which mounts a new root: a small tmpfs holding read-only
   binds of only what Python needs (its standard library, shared libraries, a few
   /dev nodes), package directories hidden under empty mounts, a fresh /proc, and a
   bounded tmpfs on /tmp as the only writable place; then pivot_root into it;
4. drop every capability for good (bounding set, ambient set, locked securebits,
   no_new_privs), set resource limits, become non-dumpable (no ptrace, no /proc/1/mem);
5. run the tester (`sandbox_exec.tester`), which forks the untrusted program's process.

Degraded mode (explicit opt-in only): no namespaces; as root the run switches to the
fresh uid with setresuid, which also drops capabilities.
"""

import ctypes
import json
import os
import platform
import resource
import signal
import sys

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
MNT_DETACH = 2
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV = 1, 2, 4
AT_FDCWD, AT_RECURSIVE = -100, 0x8000
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP = 1, 4, 24
PR_SET_SECUREBITS, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 28, 38, 47, 4
# NOROOT, NO_SETUID_FIXUP and NO_CAP_AMBIENT_RAISE, each with its lock; KEEP_CAPS locked off.
SECUREBITS_LOCKED_DOWN = 0b11101111
_SYSCALLS = {"x86_64": {"pivot_root": 155, "mount_setattr": 442},
             "aarch64": {"pivot_root": 41, "mount_setattr": 442}}
DEVICES = ("null", "zero", "full", "random", "urandom")

_libc = ctypes.CDLL(None, use_errno=True)


class SetupError(Exception):
    """The sandbox could not be built; the message says which step failed."""


def _check(result: int, what: str) -> None:
    if result != 0:
        raise SetupError(f"{what}: {os.strerror(ctypes.get_errno())}")


def _prctl(option: int, arg: int, what: str) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)), what)


def _syscall(name: str) -> int:
    table = _SYSCALLS.get(platform.machine())
    if table is None:
        raise SetupError(f"no known {name} system call number on {platform.machine()}")
    return table[name]


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(_libc.mount(enc(source), target.encode(), enc(fstype), ctypes.c_ulong(flags), enc(data)),
           f"mount {fstype or 'bind'} {source} on {target}")


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _read_only(target: str, recursive: bool, nodev: bool = True) -> None:
    """Make a mount (and, recursive, every mount under it) read-only, nosuid, nodev."""
    attr = _MountAttr(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | (MOUNT_ATTR_NODEV if nodev else 0), 0, 0, 0)
    flags = AT_RECURSIVE if recursive else 0
    _check(_libc.syscall(_syscall("mount_setattr"), AT_FDCWD, target.encode(), flags,
                         ctypes.byref(attr), ctypes.sizeof(attr)), f"make {target} read-only")


def die_with_parent(parent: int) -> None:
    """SIGKILL this process when the one that started it dies (a killed evaluator).

    A parent outside this process's PID namespace shows as 0.
    """
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, "PR_SET_PDEATHSIG")
    if os.getppid() not in (parent, 0):
        os._exit(137)


def join_cgroups(procs_files: list[str]) -> None:
    """Move this process (and so every descendant) into the run's cgroups."""
    for path in procs_files:
        try:
            with open(path, "w", encoding="ascii") as handle:
                handle.write(str(os.getpid()))
        except OSError as exc:
            raise SetupError(f"join cgroup {os.path.dirname(path)}: {exc.strerror}") from None


def enter_namespaces(uid: int, gid: int, binds: list[str]) -> dict[str, int]:
    """Unshare all namespaces; a helper left outside maps inner id 0 to `uid`/`gid`.

    Returns O_PATH handles on `binds`, opened in the new mount namespace while still the
    evaluator's id: as the unprivileged id it may not traverse e.g. /root (where pyenv
    puts Python), while binding through /proc/self/fd/N needs no traversal.
    """
    go_r, go_w = os.pipe()
    done_r, done_w = os.pipe()
    helper = os.fork()
    if helper == 0:
        os.close(go_w)
        os.close(done_r)
        message = b"ok"
        if os.read(go_r, 1) == b"x":
            target = os.getppid()
            try:
                for name, text in (("uid_map", f"0 {uid} 1\n"), ("setgroups", "deny\n"), ("gid_map", f"0 {gid} 1\n")):
                    with open(f"/proc/{target}/{name}", "w", encoding="ascii") as handle:
                        handle.write(text)
            except OSError as exc:
                message = f"write {name} for the user namespace: {exc.strerror}".encode()
        os.write(done_w, message)
        os._exit(0)
    os.close(go_r)
    os.close(done_w)
    if os.geteuid() == 0:
        os.setgroups([])  # host root's groups would stay attached, unmapped
    flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
    failed = _libc.unshare(flags) != 0
    error = ctypes.get_errno()
    os.write(go_w, b"-" if failed else b"x")
    os.close(go_w)
    message = os.read(done_r, 500)
    os.waitpid(helper, 0)
    if failed:
        raise SetupError(f"unshare(user, mount, pid, net, ipc, uts namespaces): {os.strerror(error)}")
    if message != b"ok":
        raise SetupError(message.decode(errors="replace"))
    handles = {}
    for path in binds:
        try:
            handles[path] = os.open(path, os.O_PATH)
        except OSError:
            continue
    # Become the mapped inner id 0 (for host root: the unprivileged outer id `uid`).
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    return handles


def _make_path(root: str, path: str, is_dir: bool) -> str:
    target = root + path
    if is_dir:
        os.makedirs(target, mode=0o755, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        if not os.path.exists(target):
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
    return target


def build_root(cfg: dict, sources: dict[str, int]) -> None:
    """In the new mount namespace: the minimal read-only root, then pivot into it."""
    root = cfg["mountpoint"]
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    for path, fd in sources.items():
        target = _make_path(root, path, os.path.isdir(f"/proc/self/fd/{fd}"))
        _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
        _read_only(target, recursive=True)
        os.close(fd)
    for link, points_to in cfg["symlinks"]:
        os.makedirs(os.path.dirname(root + link), mode=0o755, exist_ok=True)
        os.symlink(points_to, root + link)
    for path in cfg["hide"]:
        if os.path.isdir(root + path):
            _mount("tmpfs", root + path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=0555")
    for name in DEVICES:
        if os.path.exists(f"/dev/{name}"):
            target = _make_path(root, f"/dev/{name}", False)
            _mount(f"/dev/{name}", target, None, MS_BIND)
            _read_only(target, recursive=False, nodev=False)
    os.makedirs(root + "/tmp", mode=0o755, exist_ok=True)
    _mount("tmpfs", root + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, f"size={cfg['tmpfs_mb']}m,mode=1777")
    os.makedirs(root + "/proc", mode=0o555, exist_ok=True)
    _mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.chdir(root)
    _check(_libc.syscall(_syscall("pivot_root"), b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", MNT_DETACH), "detach the old root")
    os.chdir("/")
    _read_only("/", recursive=False)
    os.chdir("/tmp")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_capabilities(last_cap: int) -> None:
    """No capability now or after any exec: bounding set emptied, securebits locked."""
    _prctl(PR_SET_SECUREBITS, SECUREBITS_LOCKED_DOWN, "lock securebits")
    for cap in range(last_cap + 1):
        _prctl(PR_CAPBSET_DROP, cap, f"drop capability {cap} from the bounding set")
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, "clear ambient capabilities")
    header, data = _CapHeader(0x20080522, 0), (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(header), data), "capset")


def become(uid: int, gid: int) -> None:
    """Degraded mode as root: switch to an unprivileged id (this drops every capability)."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


def apply_limits(cfg: dict) -> None:
    limits = cfg["rlimits"]
    for name, value in (("RLIMIT_CORE", 0), ("RLIMIT_AS", limits["memory_bytes"]),
                        ("RLIMIT_FSIZE", limits["file_bytes"]), ("RLIMIT_NPROC", limits["processes"]),
                        ("RLIMIT_NOFILE", limits["open_files"])):
        resource.setrlimit(getattr(resource, name), (value, value))
    resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu_s"], limits["cpu_s"] + 1))
    _prctl(PR_SET_NO_NEW_PRIVS, 1, "PR_SET_NO_NEW_PRIVS")
    _prctl(PR_SET_DUMPABLE, 0, "PR_SET_DUMPABLE")


def _fail(message: str) -> None:
    os.write(2, f"sandbox: {message}\n".encode(errors="replace"))
    os._exit(3)


def main() -> None:
    cfg = json.loads(sys.argv[1])
    sys.path.insert(0, cfg["modules"])  # drover's source root: imported now, invisible after pivot_root
    from drover.evaluate import sandbox_exec, sandbox_wire  # noqa: PLC0415

    # Gone again before any untrusted code runs: a source root under /tmp (a venv there) would
    # lie in the program's writable tmpfs, and the tester imports the modules the program names.
    sys.path.remove(cfg["modules"])
    sys.path_importer_cache.clear()

    job = sandbox_wire.receive(0)  # unbuffered: the tests stay in the pipe for the tester
    if job is None or not isinstance(job.get("code"), str):
        _fail("no program on stdin")

    verdict_fd = cfg["verdict_fd"]
    with open("/proc/sys/kernel/cap_last_cap", encoding="ascii") as handle:
        last_cap = int(handle.read())
    try:
        join_cgroups(cfg["cgroup_procs"])
        if cfg["isolate"]:
            sources = enter_namespaces(cfg["uid"], cfg["gid"], cfg["binds"])
        die_with_parent(cfg["parent"])  # after the id change, which clears it
    except SetupError as exc:
        _fail(str(exc))
    me = os.getpid()
    pid = os.fork()
    if pid == 0:
        try:
            die_with_parent(me)
            if cfg["isolate"]:
                build_root(cfg, sources)
                drop_capabilities(last_cap)
            elif cfg["uid"] is not None:
                become(cfg["uid"], cfg["gid"])
                die_with_parent(me)  # the id change cleared it
            apply_limits(cfg)
        except (SetupError, OSError) as exc:
            _fail(str(exc))
        sandbox_exec.tester(job["code"], 0, verdict_fd)
    os.close(verdict_fd)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    os._exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main()
