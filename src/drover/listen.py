"""Check that a server can listen on host:port before it spends time loading anything.

`drover serve` loads a model and `drover human serve` opens its study first; a busy port or a
bad --port should fail at once with a clear message, not after the load with a traceback.
"""

from __future__ import annotations

import errno
import socket

from drover.errors import ConfigError


def check_listen(host: str, port: int) -> None:
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port must be between 1 and 65535 (got {port})")
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        hint = " (another server is running there: stop it or choose another --port)" \
            if exc.errno == errno.EADDRINUSE else ""
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}{hint}") from None
