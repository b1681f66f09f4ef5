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

`reject_params` makes it answer like an endpoint without those parameters (OpenAI's
400 "Unrecognized request argument supplied: guided_choice"), e.g. constraint parameters.

    with FakeOpenAIServer(delay=0.01) as server:
        server.script("429", "500")
        LLMConfig.from_spec(f"{server.base_url}#fake")

Constraints (vLLM's request fields `guided_choice`, `guided_regex`): `constraints="ignore"`
(default) answers as above, as an endpoint without structured outputs; `"honour"` answers
with a valid output (a seeded random choice or regex sample), as vLLM or drover serve;
`"reject"` answers 400 to any request that carries one (for fallback tests; the same as
`reject_params=CONSTRAINT_PARAMS`).

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


CONSTRAINT_PARAMS = ("guided_choice", "guided_regex", "guided_json", "structured_outputs", "response_format")


class FakeOpenAIServer:
    def __init__(self, delay: float = 0.0, retry_after: float = 0.05, host: str = "127.0.0.1", port: int = 0,
                 model: str = "fake", slow: dict[str, float] | None = None, constraints: str = "ignore",
                 reject_params: tuple[str, ...] = (), capacity: int | None = None, ignores_n: bool = False):
        import random

        if constraints not in ("ignore", "honour", "reject"):
            raise ValueError("constraints: 'ignore', 'honour' or 'reject'")
        self.constraints = constraints
        self._rng = random.Random(0)
        self.delay = delay
        # "reject" is reject_params for every constraint parameter (one way to refuse parameters).
        self.reject_params = reject_params or (CONSTRAINT_PARAMS if constraints == "reject" else ())
        # At most `capacity` requests in service at once (an engine's batch slots): more wait.
        self._capacity = asyncio.Semaphore(capacity) if capacity else None
        self.slow = dict(slow or {})  # content -> its own delay (to hold one answer back)
        self.retry_after = retry_after
        self.model = model
        self.ignores_n = ignores_n  # one choice whatever `n` asks (Ollama's OpenAI API, some llama.cpp builds)
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
        unknown = [name for name in self.reject_params if name in request]
        if unknown:
            return 400, {}, {"error": {"message": f"Unrecognized request argument supplied: {unknown[0]}",
                                       "type": "invalid_request_error", "param": None, "code": None}}
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
        n = 1 if self.ignores_n else int(request.get("n") or 1)
        content = _content(request)
        seed = request.get("seed")
        # a seeded request's choice i is sampled with seed + i, as vLLM seeds the n "child" requests
        # of one request (vllm/v1/engine/parallel_sampling.py)
        texts = [f"answer: {content}" + (f" #{i}" if n > 1 else "") + (f" seed={seed + i}" if seed is not None else "")
                 for i in range(n)]
        if self.constraints == "honour" and request.get("guided_choice"):
            texts = [self._rng.choice(list(request["guided_choice"])) for _ in range(n)]
        elif self.constraints == "honour" and request.get("guided_regex"):
            texts = [sample_regex(request["guided_regex"], self._rng) for _ in range(n)]
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


# --- Fake LLM clients for judges: one that honours constraints, one that ignores them ------


def sample_regex(pattern: str, rng: Any) -> str:
    """A string that fully matches `pattern` (the regex subset judges use: literals, classes,
    groups, alternation, bounded repeats), drawn with `rng` - what a grammar engine may emit.

    >>> import random, re
    >>> text = sample_regex(r"(10|[1-9]) (10|[1-9])", random.Random(0))
    >>> bool(re.fullmatch(r"(10|[1-9]) (10|[1-9])", text))
    True
    """
    import re._constants as c  # type: ignore[import-not-found]
    import re._parser as parser  # type: ignore[import-not-found]

    def any_of(items: Any) -> str:
        chars: list[str] = []
        negate = False
        for op, arg in items:
            if op is c.NEGATE:
                negate = True
            elif op is c.LITERAL:
                chars.append(chr(arg))
            elif op is c.RANGE:
                chars.extend(chr(x) for x in range(arg[0], arg[1] + 1))
            elif op is c.CATEGORY:
                chars.extend({c.CATEGORY_DIGIT: "0123456789", c.CATEGORY_SPACE: " ",
                              c.CATEGORY_WORD: "abcXYZ_019"}.get(arg, "a"))
        if negate:
            chars = [x for x in "abcdefghijklmnopqrstuvwxyz ABC0123456789.,!?" if x not in chars]
        return rng.choice(chars)

    def emit(tokens: Any) -> str:
        out = []
        for op, arg in tokens:
            if op is c.LITERAL:
                out.append(chr(arg))
            elif op is c.NOT_LITERAL:
                out.append("a" if chr(arg) != "a" else "b")
            elif op is c.ANY:
                out.append(rng.choice("abc xyz"))
            elif op is c.IN:
                out.append(any_of(arg))
            elif op is c.BRANCH:
                out.append(emit(rng.choice(arg[1])))
            elif op is c.SUBPATTERN:
                out.append(emit(arg[-1]))
            elif op in (c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", None)):
                low, high, body = arg
                high = min(high, low + 3) if high is not c.MAXREPEAT else low + 3
                out.append("".join(emit(body) for _ in range(rng.randint(low, high))))
            elif op is c.AT:
                continue
            else:
                raise ValueError(f"sample_regex: unsupported regex construct {op} in {pattern!r}")
        return "".join(out)

    return emit(parser.parse(pattern))


class FakeJudgeLLM:
    """An in-process stand-in for the judge `LLM` (same `run`/`score`/`config`/`stats` surface).

    `constraints="honour"` answers every constrained request with a valid output of its
    Constraint (a seeded random choice / regex sample), as drover serve or vLLM do;
    `"ignore"` answers every request with `reply(request)` (default: free text no judge
    parser reads), as an endpoint without structured outputs would. `fail` names request
    keys that come back as errors (after retries). Log-probs, when asked, give the
    answered first token -0.1 and nothing else in the top list.
    """

    def __init__(self, constraints: str = "honour", reply: Any = None, fail: Any = (), seed: int = 0,
                 model: str = "fake-judge"):
        import random

        from drover.llm.client import LLMStats
        from drover.llm.config import LLMConfig

        if constraints not in ("honour", "ignore"):
            raise ValueError("constraints: 'honour' or 'ignore'")
        self.constraints = constraints
        self.reply = reply or (lambda request: "I cannot decide; both have merits.")
        self.fail = set(fail)
        self.rng = random.Random(seed)
        self.config = LLMConfig(backend="openai", model=model, base_url="http://fake.invalid/v1",
                                price_input_per_1k=1.0, price_output_per_1k=2.0)
        self.stats = LLMStats()
        self.sent: list[Any] = []

    def _text(self, request: Any) -> str:
        constraint = request.decoding.constraint
        if self.constraints == "ignore" or constraint is None:
            return self.reply(request)
        if constraint.choice is not None:
            return self.rng.choice(list(constraint.choice))
        if constraint.regex is not None:
            return sample_regex(constraint.regex, self.rng)
        raise ValueError("FakeJudgeLLM: json_schema constraints are not sampled")

    def run(self, requests: Any, desc: str = "", total: int | None = None) -> Any:
        from drover.completions import Choice, Completion, TokenLogprob, Usage

        for request in requests:
            self.sent.append(request)
            self.stats.misses += 1
            if request.key in self.fail:
                self.stats.errors += 1
                yield Completion(choices=[], error="HTTP 500 after 6 retries", key=request.key)
                continue
            text = self._text(request)
            logprobs = None
            if request.decoding.logprobs:
                first = text.split(" ")[0] if text else ""
                logprobs = [TokenLogprob(first, -0.1, {first: -0.1})]
            usage = Usage(sum(len(c.split()) for _, c in request.messages or ()), max(1, len(text.split())))
            self.stats.prompt_tokens += usage.prompt_tokens
            self.stats.completion_tokens += usage.completion_tokens
            constrained = None if request.decoding.constraint is None else self.constraints == "honour"
            yield Completion(choices=[Choice(text, "stop", logprobs)], usage=usage, model=self.config.model,
                             key=request.key, constrained=constrained)

    def score(self, requests: Any, desc: str = "") -> Any:
        from drover.completions import Score

        for request in requests:
            self.sent.append(request)
            if request.key in self.fail or request.continuation in self.fail:
                yield Score([], [], 0.0, False, error="scoring request failed")
                continue
            total = -0.5 if request.continuation == " yes" else -1.5
            yield Score([total], [request.continuation], total, True)

    def close(self) -> None:
        pass

    def __enter__(self) -> "FakeJudgeLLM":
        return self

    def __exit__(self, *exc: object) -> None:
        pass
