"""The message format between a sandbox's test runner and the untrusted program's process.

Why plain data only: the tests run in their own process and only ever see values rebuilt
here from JSON (None, bool, int, float, str, bytes, complex, list, tuple, dict, set,
frozenset). A program's object that overrides `__eq__` (or any other method) never
reaches the tests, so it cannot make an assertion pass. Every container is a
`[tag, payload]` pair so that decoding is unambiguous. Standard library only: the sandbox
child imports this under `python -I`.

>>> decode(encode({"a": (1, 2.5), 3: {None}}))
{'a': (1, 2.5), 3: {None}}
>>> decode(encode([True, 1, b"x", 1j]))
[True, 1, b'x', 1j]
"""

from __future__ import annotations

import json
import os
import struct

MAX_MESSAGE = 64 * 1024 * 1024  # bytes; a bigger reply fails the call
_SCALARS = (type(None), bool, int, float, str)


class WireError(Exception):
    """A value that cannot cross the boundary, or a malformed message."""


def encode(value: object, depth: int = 0) -> object:
    """`value` as JSON-able tagged data; WireError for anything that is not plain data."""
    if depth > 100:
        raise WireError("value nested too deeply")
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return ["b", bytes(value).hex()]
    if isinstance(value, complex):
        return ["c", [value.real, value.imag]]
    if isinstance(value, list):
        return ["l", [encode(v, depth + 1) for v in value]]
    if isinstance(value, tuple):
        return ["t", [encode(v, depth + 1) for v in value]]
    if isinstance(value, dict):
        return ["d", [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]]
    if isinstance(value, frozenset):
        return ["f", [encode(v, depth + 1) for v in value]]
    if isinstance(value, set):
        return ["s", [encode(v, depth + 1) for v in value]]
    raise WireError(f"a value of type {type(value).__name__} cannot be passed to or from the tested code")


def decode(data: object) -> object:
    """The plain value `encode` produced; only builtin types are ever built."""
    if type(data) in _SCALARS:
        return data
    if type(data) is not list or len(data) != 2 or type(data[0]) is not str:
        raise WireError("malformed value")
    tag, payload = data
    try:
        if tag == "b":
            return bytes.fromhex(payload)
        if tag == "c":
            return complex(float(payload[0]), float(payload[1]))
        items = list(payload)
        if tag == "l":
            return [decode(v) for v in items]
        if tag == "t":
            return tuple(decode(v) for v in items)
        if tag == "d":
            return {decode(k): decode(v) for k, v in items}
        if tag == "s":
            return {decode(v) for v in items}
        if tag == "f":
            return frozenset(decode(v) for v in items)
    except (TypeError, ValueError, IndexError) as exc:
        raise WireError(f"malformed value: {exc}") from None
    raise WireError(f"malformed value tag {tag!r}")


def frame(message: dict) -> bytes:
    """One length-prefixed JSON message, as bytes."""
    body = json.dumps(message, ensure_ascii=True).encode("ascii")
    if len(body) > MAX_MESSAGE:
        raise WireError(f"message of {len(body)} bytes is over the {MAX_MESSAGE}-byte limit")
    return struct.pack(">Q", len(body)) + body


def send(fd: int, message: dict) -> None:
    """One length-prefixed JSON message, written whole."""
    view = memoryview(frame(message))
    while view:
        view = view[os.write(fd, view):]


def _read_exact(fd: int, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def receive(fd: int) -> dict | None:
    """The next message, or None at end of stream; WireError when it is malformed."""
    head = _read_exact(fd, 8)
    if head is None:
        return None
    (size,) = struct.unpack(">Q", head)
    if size > MAX_MESSAGE:
        raise WireError(f"message of {size} bytes is over the {MAX_MESSAGE}-byte limit")
    body = _read_exact(fd, size)
    if body is None:
        return None
    try:
        message = json.loads(body)
    except ValueError as exc:
        raise WireError(f"malformed message: {exc}") from None
    if type(message) is not dict:
        raise WireError("malformed message")
    return message


def parse(data: bytes) -> dict | None:
    """The first message in `data` (everything read from a pipe), or None if there is none."""
    if len(data) < 8:
        return None
    (size,) = struct.unpack(">Q", data[:8])
    if size > MAX_MESSAGE or len(data) < 8 + size:
        return None
    try:
        message = json.loads(data[8:8 + size])
    except ValueError:
        return None
    return message if type(message) is dict else None
