"""A fake OpenAI-compatible server for tests and benchmarks (no model, no network).

It answers `/v1/chat/completions` and `/v1/completions` deterministically
("answer: <last user message>"), after an optional fixed `delay` (with at most `capacity`
requests in service at once, when given: a model server's batch slots), and records every
request body. Faults can be scripted for the next requests, in order:

    "429"   429 with Retry-After (seconds: `retry_after`)
    "500"   an internal server error
    "400"   a client error (not retried)
    "401"   a bad API key (fatal for the job)
    "hang"  never answer (the client must time out)
    "drop"  close the connection without answering

    with FakeOpenAIServer(delay=0.01) as server:
        server.script("429", "500")
        LLMConfig.from_spec(f"{server.base_url}#fake")

It is a small asyncio HTTP/1.1 server (keep-alive, Content-Length bodies) rather than a web
framework, so that a benchmark measures the client and not the server.
"""

from __future__ import annotations

import asyncio
import collections
import json
import socket
import threading
import time
from typing import Any


class FakeOpenAIServer:
    def __init__(self, delay: float = 0.0, retry_after: float = 0.05, host: str = "127.0.0.1", port: int = 0,
                 model: str = "fake", slow: dict[str, float] | None = None, capacity: int | None = None):
        self.delay = delay
        # At most `capacity` requests in service at once (an engine's batch slots): more wait.
        self._capacity = asyncio.Semaphore(capacity) if capacity else None
        self.slow = dict(slow or {})  # content -> its own delay (to hold one answer back)
        self.retry_after = retry_after
        self.model = model
        self.requests: list[dict[str, Any]] = []
        self.headers_seen: list[dict[str, str]] = []
        self.paths: list[str] = []
        self.answered: list[str] = []  # contents whose answer was fully written to the socket
        self.faults: collections.deque[str] = collections.deque()
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self._sock.listen(1024)
        self.port = self._sock.getsockname()[1]
        self.base_url = f"http://{host}:{self.port}/v1"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None

    # --- control ---------------------------------------------------------------------------
    def script(self, *faults: str) -> None:
        with self._lock:
            self.faults.extend(faults)

    def count(self, content: str) -> int:
        """How many requests carried this (last user message / prompt) content."""
        with self._lock:
            return sum(1 for body in self.requests if _content(body) == content)

    def start(self) -> "FakeOpenAIServer":
        ready = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._server = loop.run_until_complete(asyncio.start_server(self._handle, sock=self._sock, backlog=1024))
            ready.set()
            loop.run_forever()
            self._server.close()
            loop.run_until_complete(self._server.wait_closed())
            loop.close()

        self._thread = threading.Thread(target=main, name="fake-openai-server", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None:
            loop = self._loop

            async def cancel_handlers() -> None:
                for task in asyncio.all_tasks():
                    if task is not asyncio.current_task():
                        task.cancel()

            asyncio.run_coroutine_threadsafe(cancel_handlers(), loop).result(5)
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(5)
            self._loop = None

    def serve_forever(self) -> None:
        """Run in the calling thread (benchmarks start this in a subprocess)."""
        async def main() -> None:
            server = await asyncio.start_server(self._handle, sock=self._sock, backlog=1024)
            async with server:
                await server.serve_forever()

        asyncio.run(main())

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- HTTP --------------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                method, path, _ = line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while True:
                    raw = await reader.readline()
                    if raw in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = raw.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0") or 0)
                body = await reader.readexactly(length) if length else b""
                status, extra, payload = await self._respond(method, path, headers, body)
                if status == 0:  # drop
                    writer.transport.abort()
                    return
                raw = isinstance(payload, bytes)  # a file's content (the batch server's downloads)
                data = payload if raw else json.dumps(payload).encode()
                kind = "application/octet-stream" if raw else "application/json"
                head = [f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}", f"content-type: {kind}",
                        f"content-length: {len(data)}"] + [f"{k}: {v}" for k, v in extra.items()]
                writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
                await writer.drain()
                if status == 200 and isinstance(payload, dict) and "choices" in payload:
                    with self._lock:
                        self.answered.append(_content(json.loads(body or b"{}")))
        except (ConnectionError, asyncio.IncompleteReadError, ValueError, asyncio.CancelledError):
            pass  # a client hung up, or the server is stopping (cancelled hangs)
        finally:
            try:
                writer.close()
            except Exception:
                pass

    async def _respond(self, method: str, path: str, headers: dict[str, str],
                       body: bytes) -> tuple[int, dict[str, str], Any]:
        if method == "GET" and path.endswith("/models"):
            return 200, {}, {"object": "list", "data": [{"id": self.model, "object": "model", "owned_by": "drover"}]}
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            return 400, {}, {"error": {"message": "invalid JSON", "type": "invalid_request_error"}}
        with self._lock:
            self.requests.append(request)
            self.headers_seen.append(headers)
            self.paths.append(path)
            fault = self.faults.popleft() if self.faults else None
        if fault == "429":
            return 429, {"retry-after": f"{self.retry_after:g}"}, {"error": {"message": "rate limited", "type": "rate_limit"}}
        if fault in ("500", "400", "401"):
            # Like OpenAI, the 401 message quotes the key it got: the client must redact it.
            key = headers.get("authorization", "").removeprefix("Bearer ")
            messages = {"500": "internal error", "400": "bad request",
                        "401": f"Incorrect API key provided: {key}"}
            return int(fault), {}, {"error": {"message": messages[fault], "type": "error"}}
        if fault == "hang":
            await asyncio.sleep(3600)
        if fault == "drop":
            return 0, {}, None
        delay = self.slow.get(_content(request), self.delay)
        if self._capacity is not None:
            async with self._capacity:
                await asyncio.sleep(delay)
        elif delay:
            await asyncio.sleep(delay)
        return 200, {}, self._answer(path, request)

    def _answer(self, path: str, request: dict[str, Any]) -> dict[str, Any]:
        n = int(request.get("n") or 1)
        content = _content(request)
        seed = request.get("seed")
        texts = [f"answer: {content}" + (f" #{i}" if n > 1 else "") + (f" seed={seed}" if seed is not None else "")
                 for i in range(n)]
        usage = {"prompt_tokens": max(1, len(content.split())), "completion_tokens": 3 * n,
                 "total_tokens": max(1, len(content.split())) + 3 * n}
        now = int(time.time())
        if path.endswith("/chat/completions"):
            choices = []
            for i, text in enumerate(texts):
                choice: dict[str, Any] = {"index": i, "message": {"role": "assistant", "content": text},
                                          "finish_reason": "stop", "logprobs": None}
                if request.get("logprobs"):
                    k = int(request.get("top_logprobs") or 0)
                    choice["logprobs"] = {"content": [
                        {"token": tok, "logprob": -0.5, "bytes": None,
                         "top_logprobs": [{"token": tok, "logprob": -0.5, "bytes": None}][:k]}
                        for tok in text.split(" ")]}
                choices.append(choice)
            return {"id": "chatcmpl-fake", "object": "chat.completion", "created": now, "model": self.model,
                    "choices": choices, "usage": usage}
        choices = [{"index": i, "text": text, "finish_reason": "stop", "logprobs": None}
                   for i, text in enumerate(texts)]
        return {"id": "cmpl-fake", "object": "text_completion", "created": now, "model": self.model,
                "choices": choices, "usage": usage}


def _content(body: dict[str, Any]) -> str:
    messages = body.get("messages")
    if messages:
        return str(messages[-1].get("content", ""))
    return str(body.get("prompt", ""))
