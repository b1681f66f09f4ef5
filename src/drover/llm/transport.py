"""A lean HTTP/1.1 keep-alive transport for the `openai` client, on asyncio streams.

httpx's default transport (httpcore + h11 + anyio) costs a few milliseconds of CPU per
request, and its pool scans every connection on every request. Against a local server
answering hundreds of requests per second (vLLM, `drover serve`), that CPU, spent on the
client's one event-loop thread, becomes the throughput ceiling (benchmarks/llm_client.py).
This transport does the same job for the simple case (one host, HTTP/1.1, Content-Length
or chunked bodies) in a fraction of the CPU. The `openai` client above it is unchanged:
same request building, auth, status-error types; timeouts and connection failures raise
the httpx exceptions `openai` maps to `APITimeoutError` / `APIConnectionError`.

Used for plain-`http://` base URLs only (local and LAN servers); hosted `https://` APIs
keep httpx's own transport (proxies, HTTP/2, TLS session handling), where rate limits,
not client CPU, bound throughput.
"""

from __future__ import annotations

import asyncio
import collections
import importlib

import openai

# The httpx the installed `openai` is built on (openai 3.x: `httpx2`; earlier: `httpx`):
# transports, timeouts and response types must come from that same package.
httpx = importlib.import_module(openai.DefaultAsyncHttpxClient.__mro__[1].__module__.split(".")[0])

_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class _Stale(Exception):
    """A pooled keep-alive connection the server had already closed."""


class LeanTransport(httpx.AsyncBaseTransport):
    def __init__(self, max_idle: int = 64):
        self._idle: dict[tuple[str, int], collections.deque[_Conn]] = {}
        self._max_idle = max_idle

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        read_timeout = timeouts.get("read")
        connect_timeout = timeouts.get("connect")
        body = await request.aread()
        host, port = request.url.host, request.url.port or 80
        lines = [f"{request.method} {request.url.raw_path.decode('ascii')} HTTP/1.1"]
        has_length = False
        for name, value in request.headers.raw:
            lowered = name.lower()
            if lowered in (b"transfer-encoding", b"connection"):
                continue
            has_length = has_length or lowered == b"content-length"
            lines.append(f"{name.decode('latin-1')}: {value.decode('latin-1')}")
        if not has_length:
            lines.append(f"Content-Length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        for attempt in range(2):
            conn, reused = await self._connect(host, port, connect_timeout)
            try:
                status, headers, content, keep = await asyncio.wait_for(self._exchange(conn, head, reused), read_timeout)
            except _Stale:
                continue  # the server closed an idle connection: once more on a fresh one
            except asyncio.TimeoutError:
                conn[1].close()
                raise httpx.ReadTimeout(f"no response within {read_timeout} s", request=request) from None
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                conn[1].close()
                raise httpx.RemoteProtocolError(f"connection lost: {exc or type(exc).__name__}", request=request) from None
            except BaseException:
                conn[1].close()
                raise
            if keep:
                idle = self._idle.setdefault((host, port), collections.deque())
                if len(idle) < self._max_idle:
                    idle.append(conn)
                else:
                    conn[1].close()
            else:
                conn[1].close()
            return httpx.Response(status, headers=headers, stream=httpx.ByteStream(content),
                                  extensions={"http_version": b"HTTP/1.1"}, request=request)
        raise httpx.RemoteProtocolError("the server closed the connection twice", request=request)

    async def _connect(self, host: str, port: int, timeout: float | None) -> tuple[_Conn, bool]:
        idle = self._idle.get((host, port))
        while idle:
            reader, writer = idle.pop()
            if not reader.at_eof() and not writer.is_closing():
                return (reader, writer), True
            writer.close()
        try:
            conn = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        except asyncio.TimeoutError:
            raise httpx.ConnectTimeout(f"could not connect to {host}:{port} within {timeout} s") from None
        except OSError as exc:
            raise httpx.ConnectError(f"could not connect to {host}:{port}: {exc}") from None
        return conn, False

    async def _exchange(self, conn: _Conn, head: bytes, reused: bool) -> tuple[int, list[tuple[bytes, bytes]], bytes, bool]:
        reader, writer = conn
        writer.write(head)
        await writer.drain()
        status_line = await reader.readline()
        if not status_line:
            writer.close()
            if reused:
                raise _Stale()
            raise OSError("the server closed the connection without a response")
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise ValueError(f"bad status line {status_line[:80]!r}")
        status = int(parts[1])
        headers: list[tuple[bytes, bytes]] = []
        length: int | None = None
        chunked = False
        keep = parts[0] == b"HTTP/1.1"
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n"):
                break
            if not line:
                raise OSError("the connection closed inside the response headers")
            name, _, value = line.partition(b":")
            name, value = name.strip(), value.strip()
            lowered = name.lower()
            if lowered == b"content-length":
                length = int(value)
            elif lowered == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif lowered == b"connection":
                keep = value.lower() == b"keep-alive" or (keep and value.lower() != b"close")
            headers.append((name, value))
        if chunked:
            pieces = []
            while True:
                size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                pieces.append(await reader.readexactly(size))
                await reader.readexactly(2)
            content = b"".join(pieces)
        elif length is not None:
            content = await reader.readexactly(length)
        elif status in (204, 304) or 100 <= status < 200:
            content = b""
        else:
            content = await reader.read()  # delimited by closing the connection
            keep = False
        return status, headers, content, keep

    async def aclose(self) -> None:
        for idle in self._idle.values():
            while idle:
                idle.pop()[1].close()
        self._idle.clear()
