"""An OpenAI-compatible HTTP server over a local model (`drover serve`).

Endpoints: `GET /v1/models`, `POST /v1/chat/completions` (n, temperature, top_p,
max_tokens, stop, seed, logprobs/top_logprobs) and `POST /v1/completions` (prompt;
`echo=True` with `logprobs=k` returns the prompt tokens' log-probs, and `max_tokens=0`
returns nothing else: that is how the HTTP client scores text).

Concurrent requests are batched onto the model: a single worker takes the first waiting
request, collects more for a few milliseconds (up to `max_batch_size` sequences) and
runs them as one batch in a worker thread, so the event loop keeps accepting requests
while the model computes. A request without `seed` samples with a fresh random seed (as
hosted APIs do); with a seed its samples are reproducible.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from fastapi import Request  # at module level: FastAPI resolves the handlers' string annotations here

from drover.infer.generation import GenerationItem, GenerationResult, generate, sample_seed
from drover.tokenization import encode_rendered


class RequestError(Exception):
    """A bad request (HTTP 400/404 with an OpenAI-style error body)."""

    def __init__(self, message: str, status: int = 400, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.param, self.code = status, param, code


@dataclass
class _Job:
    kind: str  # "generate" | "echo"
    payload: Any
    future: asyncio.Future
    rows: int


class ModelWorker:
    """Owns the model; batches jobs from many concurrent requests into one call."""

    def __init__(self, model: Any, tokenizer: Any, max_batch_size: int = 8, batch_wait: float = 0.005,
                 max_length: int | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.max_batch_size = max_batch_size
        self.batch_wait = batch_wait
        self.max_length = max_length
        self.queue: asyncio.Queue[_Job] | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="drover-model")
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self.queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, kind: str, payload: Any, rows: int) -> Any:
        assert self.queue is not None
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(_Job(kind, payload, future, rows))
        return await future

    async def _loop(self) -> None:
        assert self.queue is not None
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self.queue.get()]
            rows = jobs[0].rows
            deadline = loop.time() + self.batch_wait
            while rows < self.max_batch_size:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self.queue.get(), timeout)
                except asyncio.TimeoutError:
                    break
                jobs.append(job)
                rows += job.rows
            jobs = [j for j in jobs if not j.future.cancelled()]
            if not jobs:
                continue
            try:
                await loop.run_in_executor(self.executor, self._run, jobs, loop)
            except Exception as exc:  # a bug or out-of-memory: fail these requests, keep serving
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)

    def _run(self, jobs: list[_Job], loop: asyncio.AbstractEventLoop) -> None:
        from drover.infer.scoring import prompt_logprobs

        def resolve(job: _Job, value: Any) -> None:
            loop.call_soon_threadsafe(lambda: job.future.done() or job.future.set_result(value))

        gen = [j for j in jobs if j.kind == "generate"]
        echo = [j for j in jobs if j.kind == "echo"]
        if echo:
            texts = [j.payload[0] for j in echo]
            top_k = max(j.payload[1] for j in echo)
            for job, result in zip(echo, prompt_logprobs(self.model, self.tokenizer, texts, top_k=top_k,
                                                         batch_size=self.max_batch_size)):
                resolve(job, result)
        if gen:
            for index, result in generate(self.model, self.tokenizer, [j.payload for j in gen],
                                          batch_size=self.max_batch_size, max_length=self.max_length):
                resolve(gen[index], result)


def _error(exc: RequestError) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse(status_code=exc.status, content={"error": {
        "message": str(exc), "type": "invalid_request_error" if exc.status == 400 else "not_found_error",
        "param": exc.param, "code": exc.code}})


def _number(body: dict[str, Any], name: str, default: Any, kind: type, low: float | None = None) -> Any:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(f"{name}: expected a number, got {value!r}", param=name)
    if kind is int and float(value) != int(value):
        raise RequestError(f"{name}: expected an integer, got {value!r}", param=name)
    if low is not None and value < low:
        raise RequestError(f"{name}: must be >= {low}, got {value!r}", param=name)
    return kind(value)


def _stops(body: dict[str, Any]) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,)
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return tuple(stop)
    raise RequestError("stop: expected a string or a list of strings", param="stop")


def create_app(model: Any, tokenizer: Any, model_name: str, max_batch_size: int = 8, batch_wait: float = 0.005,
               max_length: int | None = None, default_max_tokens: int = 256) -> Any:
    """The FastAPI app serving one loaded model under `model_name`."""
    from fastapi import FastAPI

    worker = ModelWorker(model, tokenizer, max_batch_size, batch_wait, max_length)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        worker.start()
        yield
        await worker.stop()

    app = FastAPI(title="drover serve", lifespan=lifespan)
    created = int(time.time())

    def check_model(body: dict[str, Any]) -> None:
        name = body.get("model")
        if name not in (None, model_name):
            raise RequestError(f"The model `{name}` does not exist; this server serves {model_name!r}",
                               status=404, param="model", code="model_not_found")

    def decoding(body: dict[str, Any], prompt_ids: list[int], logprobs: bool, top_logprobs: int) -> GenerationItem:
        if body.get("stream"):
            raise RequestError("stream=true is not supported by drover serve", param="stream")
        n = _number(body, "n", 1, int, 1)
        seed = _number(body, "seed", None, int)
        base = seed if seed is not None else random.getrandbits(62)
        return GenerationItem(
            prompt_ids=prompt_ids, max_tokens=_number(body, "max_tokens", None, int, 0)
            if body.get("max_tokens") is not None else _number(body, "max_completion_tokens", default_max_tokens, int, 0),
            temperature=_number(body, "temperature", 1.0, float, 0), top_p=_number(body, "top_p", 1.0, float, 0),
            stop=_stops(body), n=n, seeds=[sample_seed("serve", base, j) for j in range(n)],
            logprobs=logprobs, top_logprobs=top_logprobs)

    async def json_body(request: Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise RequestError("the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise RequestError("the request body must be a JSON object")
        return body

    def usage(prompt: int, completion: int) -> dict[str, int]:
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    @app.get("/v1/models")
    async def models() -> Any:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": created,
                                            "owned_by": "drover"}]}

    @app.get("/health")
    async def health() -> Any:
        return {"status": "ok"}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        try:
            body = await json_body(request)
            check_model(body)
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages or not all(
                    isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                    for m in messages):
                raise RequestError("messages: expected a non-empty list of {role, content} strings", param="messages")
            try:
                text = tokenizer.apply_chat_template([{"role": m["role"], "content": m["content"]} for m in messages],
                                                     tokenize=False, add_generation_prompt=True)
            except Exception as exc:
                raise RequestError(f"messages: the chat template rejected them: {exc}", param="messages") from None
            ids = encode_rendered(tokenizer, text)
            top = _number(body, "top_logprobs", 0, int, 0)
            item = decoding(body, ids, bool(body.get("logprobs")), top)
        except RequestError as exc:
            return _error(exc)
        result: GenerationResult = await worker.submit("generate", item, item.n)
        choices = []
        for i, c in enumerate(result.choices):
            lp = None
            if item.logprobs and c.logprobs is not None:
                lp = {"content": [{"token": t.token, "logprob": t.logprob, "bytes": list(t.token.encode()),
                                   "top_logprobs": [{"token": k, "logprob": v, "bytes": list(k.encode())}
                                                    for k, v in (t.top or {}).items()]} for t in c.logprobs]}
            choices.append({"index": i, "message": {"role": "assistant", "content": c.text},
                            "finish_reason": c.finish_reason, "logprobs": lp})
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": model_name, "choices": choices, "usage": usage(result.prompt_tokens, result.completion_tokens)}

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        try:
            body = await json_body(request)
            check_model(body)
            prompt = body.get("prompt")
            if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
                prompt = prompt[0]
            if not isinstance(prompt, str):
                raise RequestError("prompt: expected one string (send one request per prompt)", param="prompt")
            k = _number(body, "logprobs", None, int, 0)
            echo = bool(body.get("echo"))
            ids = encode_rendered(tokenizer, prompt)
            item = decoding(body, ids, k is not None, k or 0)
        except RequestError as exc:
            return _error(exc)
        echoed = await worker.submit("echo", (prompt, max(1, k or 1)), 1) if echo else None
        if item.max_tokens > 0 or not echo:
            result: GenerationResult = await worker.submit("generate", item, item.n)
        else:
            from drover.llm.types import Choice

            result = GenerationResult([Choice("", "length") for _ in range(item.n)], len(ids), 0)
        choices = []
        for i, c in enumerate(result.choices):
            text = (prompt if echo else "") + c.text
            lp = None
            if k is not None:
                tokens, values, tops, offsets = [], [], [], []
                if echoed is not None:
                    tokens, values = list(echoed.tokens), list(echoed.token_logprobs)
                    tops = [(t if k else None) for t in echoed.top_logprobs]
                    offsets = list(echoed.text_offset)
                position = len(prompt) if echo else 0
                for t in c.logprobs or []:
                    tokens.append(t.token)
                    values.append(t.logprob)
                    tops.append(t.top if k else None)
                    offsets.append(position)
                    position += len(t.token)
                lp = {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets}
            choices.append({"index": i, "text": text, "finish_reason": c.finish_reason, "logprobs": lp})
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": model_name, "choices": choices, "usage": usage(result.prompt_tokens, result.completion_tokens)}

    return app


def load_app(model_path: str, model_name: str | None = None, chat_template: str | None = None,
             max_batch_size: int = 8, dtype: str = "auto", device: str | None = None,
             max_length: int | None = None) -> Any:
    from drover.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(model_path, chat_template=chat_template)
    model = load_model(model_path, dtype=dtype, device=device)
    return create_app(model, tokenizer, model_name or str(model_path), max_batch_size=max_batch_size,
                      max_length=max_length)


@contextlib.contextmanager
def serve_in_thread(model_path: str, port: int = 0, host: str = "127.0.0.1", model_name: str = "tiny",
                    chat_template: str | None = None, max_batch_size: int = 8, app: Any = None) -> Iterator[str]:
    """Run `drover serve` on a loopback port in a background thread; yields the base URL
    (`http://127.0.0.1:PORT/v1`). For tests: `with serve_in_thread(tiny_model_dir) as url:`."""
    import uvicorn

    if app is None:
        app = load_app(str(model_path), model_name=model_name, chat_template=chat_template,
                       max_batch_size=max_batch_size)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="drover-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("drover serve did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{bound}/v1"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
