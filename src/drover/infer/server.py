"""An OpenAI-compatible HTTP server over a local model (`drover serve`).

Endpoints: `GET /v1/models`, `GET /health`, `POST /v1/chat/completions` and
`POST /v1/completions` (a string, a list of strings, token ids or a list of token-id
lists; `echo=True` with `logprobs=k` returns the prompt tokens' log-probs, and
`max_tokens=0` returns nothing else: that is how the HTTP client scores text). Both take
n, temperature, top_p, max_tokens, stop, seed, logprobs, stream (server-sent events,
usage in the last chunk with `stream_options.include_usage`) and constraints (vLLM's
`guided_choice` / `guided_regex` / `guided_json`, OpenAI's `response_format`); completions
also `best_of` (best_of samples, the n with the highest mean token log-prob returned).
Parsing lives in `serve_requests`, response shapes in `serve_responses`.

Hostile input: bodies over `ServeLimits.max_body_bytes` get 413 while they are read;
JSON parsing, chat templates, tokenization and grammar compilation run in worker
threads, never on the event loop; every invalid value is a 400 naming the parameter;
a prompt longer than the context is refused before tokenizing when its byte length
alone proves it (each token covers at most `token_bytes` bytes), else after.

Concurrent requests are batched onto the model by its one `ModelWorker`
(`model_worker.py`), on a model thread, so the event loop keeps answering (`/health`
too) while the model computes; streams are shaped in `serve_stream.py`. A request without `seed` samples with a fresh random seed
(as hosted APIs do); with a seed its samples are reproducible: sample j of a prompt draws
from a stream seeded by (seed, the prompt's token ids, j), so one seed sent with every
request does not give different prompts the same noise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request  # at module level: FastAPI resolves the handlers' string annotations here

from drover.infer import serve_responses as shape
from drover.infer import serve_stream
from drover.local.decode import (GenerationItem, GenerationResult, eos_ids, logits_width, max_positions,
                                     sample_seed)
from drover.infer.model_worker import ModelWorker
from drover.infer.serve_requests import (ChatCall, CompletionCall, RequestError, Sampling, ServeLimits, check_context,
                                         check_model, parse_chat, parse_completion)
from drover.completions import Choice
from drover.tokenization import encode_rendered, encode_rendered_offsets

GREEDY_BELOW = 1e-5  # temperatures below this decode greedily (vLLM's rule): 1/T would overflow


@dataclass
class Served:
    """What the handlers need: the model's worker, its tokenizer and the request limits."""

    worker: ModelWorker
    tokenizer: Any
    model_name: str
    limits: ServeLimits
    context: int  # prompt + completion tokens the model takes
    vocab_size: int
    eos: set[int]
    token_bytes: int  # an upper bound on the UTF-8 bytes one token covers
    created: int = field(default_factory=lambda: int(time.time()))


@dataclass
class _Prompt:
    """One tokenized prompt and its decoding item."""

    ids: list[int]
    offsets: list[int]
    text: str  # what echo returns
    item: GenerationItem


def _longest_token(tokenizer: Any) -> int:
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return max((len(t.encode()) for t in tokens if isinstance(t, str)), default=16) + 1


# --- request bodies -------------------------------------------------------------------------

async def read_body(request: Request, limits: ServeLimits) -> dict[str, Any]:
    """The JSON object of a request, read up to the body limit (413 beyond), parsed off the loop."""
    from starlette.concurrency import run_in_threadpool

    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise _too_large(int(declared), limits)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limits.max_body_bytes:
            raise _too_large(size, limits)
        chunks.append(chunk)
    try:
        body = await run_in_threadpool(_parse_json, b"".join(chunks))
    except UnicodeError:
        raise RequestError("the request body holds a lone UTF-16 surrogate escape (e.g. \\ud800): "
                           "not valid Unicode text") from None
    except (ValueError, RecursionError):
        raise RequestError("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    return body


def _parse_json(raw: bytes) -> Any:
    """JSON whose strings are all valid Unicode: `\\ud800` alone parses, then breaks the tokenizer (a 500)."""
    body = json.loads(raw)
    json.dumps(body, ensure_ascii=False).encode("utf-8")  # UnicodeEncodeError on a lone surrogate
    return body


def _too_large(size: int, limits: ServeLimits) -> RequestError:
    return RequestError(f"the request body is larger than {limits.max_body_bytes} bytes (got {size}"
                        f"{'+' if size > limits.max_body_bytes else ''}); the limit is --max-body-bytes",
                        status=413, code="request_too_large")


# --- tokenization (run in a thread) ---------------------------------------------------------

def _item(served: Served, ids: list[int], samp: Sampling, rows: int, logprobs: bool, top: int,
          where: str) -> GenerationItem:
    max_tokens = check_context(len(ids), samp.max_tokens, served.context, served.limits, where)
    # A seed names one stream per prompt, not one for all: clients seed every request alike
    # (a recipe's `seed: 42`), and the same noise for every prompt makes their samples alike.
    stream = ("serve", random.getrandbits(62)) if samp.seed is None else ("serve", samp.seed, ids)
    return GenerationItem(prompt_ids=ids, max_tokens=max_tokens,
                          temperature=samp.temperature if samp.temperature >= GREEDY_BELOW else 0.0,
                          top_p=samp.top_p, stop=samp.stop, n=rows,
                          seeds=[sample_seed(*stream, j) for j in range(rows)],
                          logprobs=logprobs, top_logprobs=top, constraint=samp.constraint)


def _check_bytes(served: Served, text: str, where: str) -> None:
    """Refuse, without tokenizing, a text that cannot fit the context in any tokenization."""
    if len(text) * 4 > served.context * served.token_bytes and \
            len(text.encode("utf-8", "replace")) > served.context * served.token_bytes:
        raise RequestError(f"This model's maximum context length is {served.context} tokens; the {where} "
                           f"({len(text)} characters) is longer than that in any tokenization. Please reduce "
                           f"the length of the {where}.", param=where, code="context_length_exceeded")


def _check_constraint(served: Served, samp: Sampling) -> None:
    if samp.constraint is None:
        return
    from drover.local.constrained import ConstraintError, check

    try:
        check(samp.constraint, served.tokenizer, served.vocab_size, served.eos)
    except ConstraintError as exc:
        raise RequestError(f"constraint: {exc}", param="response_format") from None


def prepare_chat(served: Served, call: ChatCall) -> _Prompt:
    for m in call.messages:
        _check_bytes(served, m["content"], "messages")
    try:
        text = served.tokenizer.apply_chat_template(call.messages, tokenize=False, add_generation_prompt=True)
    except Exception as exc:
        raise RequestError(f"messages: the chat template rejected them: {exc}", param="messages") from None
    _check_bytes(served, text, "messages")
    ids = encode_rendered(served.tokenizer, text)
    _check_constraint(served, call.sampling)
    item = _item(served, ids, call.sampling, call.sampling.n, call.logprobs, call.top_logprobs, "messages")
    return _Prompt(ids, [], text, item)


def prepare_completion(served: Served, call: CompletionCall) -> list[_Prompt]:
    from drover.local.scoring import token_offsets

    _check_constraint(served, call.sampling)
    prompts = []
    for prompt in call.prompts:
        if isinstance(prompt, str):
            _check_bytes(served, prompt, "prompt")
            ids, spans = encode_rendered_offsets(served.tokenizer, prompt)
            offsets, text = [int(s) for s, _ in spans], prompt
        else:
            ids, offsets = list(prompt), token_offsets(served.tokenizer, prompt)
            text = "".join(served.tokenizer.decode([t]) for t in prompt)
        if not ids:
            raise RequestError("prompt: empty (it encodes to no tokens)", param="prompt")
        # best_of > n ranks samples by their log-probs, so they are computed either way.
        item = _item(served, ids, call.sampling, call.best_of, call.logprobs is not None or call.best_of > call.sampling.n,
                     call.logprobs or 0, "prompt")
        prompts.append(_Prompt(ids, offsets, text, item))
    return prompts


# --- handlers -------------------------------------------------------------------------------

def _served(request: Request) -> Served:
    return request.app.state.served


async def _parsed(request: Request, parse: Any, prepare: Any) -> tuple[Any, Any]:
    from starlette.concurrency import run_in_threadpool

    served = _served(request)
    body = await read_body(request, served.limits)
    check_model(body, served.model_name)
    call = await run_in_threadpool(parse, body)  # a body of up to max_body_bytes of token ids takes a while
    return call, await run_in_threadpool(prepare, served, call)


async def models(request: Request) -> Any:
    served = _served(request)
    return {"object": "list", "data": [{"id": served.model_name, "object": "model", "created": served.created,
                                        "owned_by": "drover", "max_model_len": served.context}]}


async def health(request: Request) -> Any:
    return {"status": "ok"}


async def chat(request: Request) -> Any:
    served = _served(request)
    try:
        call, prompt = await _parsed(request, lambda b: parse_chat(b, served.limits), prepare_chat)
    except RequestError as exc:
        return _error(exc)
    except Exception as exc:  # a bug: an OpenAI-style 500, not a bare one
        return _error(RequestError(f"internal error while reading the request: {exc}", status=500))
    if call.sampling.stream:
        return serve_stream.response(serve_stream.chat_events(served.worker, served.tokenizer, served.model_name,
                                                              call, prompt.item))
    try:
        result: GenerationResult = await served.worker.submit("generate", prompt.item, prompt.item.n)
    except Exception as exc:  # the model failed (e.g. out of memory): a 500, the server goes on
        return _error(RequestError(f"generation failed: {exc}", status=500))
    choices = [(c.text, c.finish_reason, shape.chat_logprobs(c.logprobs, call.top_logprobs)
                if call.logprobs and c.logprobs is not None else None) for c in result.choices]
    return shape.chat_response(served.model_name, choices, result.prompt_tokens, result.completion_tokens)


async def completions(request: Request) -> Any:
    served = _served(request)
    try:
        call, prompts = await _parsed(request, lambda b: parse_completion(b, served.limits, served.vocab_size),
                                      prepare_completion)
    except RequestError as exc:
        return _error(exc)
    except Exception as exc:
        return _error(RequestError(f"internal error while reading the request: {exc}", status=500))
    if call.sampling.stream:
        return serve_stream.response(serve_stream.completion_events(
            served.worker, served.tokenizer, served.model_name, call, [p.item for p in prompts]))
    try:
        answers = await asyncio.gather(*(_complete_one(served, call, p) for p in prompts))
    except Exception as exc:
        return _error(RequestError(f"generation failed: {exc}", status=500))
    choices, prompt_tokens, completion_tokens = [], 0, 0
    for p, (entries, used) in enumerate(answers):
        for j, entry in enumerate(entries):
            choices.append({"index": p * call.sampling.n + j, **entry})
        prompt_tokens += len(prompts[p].ids)
        completion_tokens += used
    return shape.completion_response(served.model_name, choices, prompt_tokens, completion_tokens)


async def _complete_one(served: Served, call: CompletionCall, prompt: _Prompt) -> tuple[list[dict[str, Any]], int]:
    """One prompt's n choices ({text, finish_reason, logprobs}) and its completion tokens."""
    worker = served.worker
    echoed = None
    if call.echo and call.logprobs is not None:  # echo alone needs no model call
        echoed = await worker.submit("echo", ((prompt.ids, prompt.offsets), max(1, call.logprobs)), 1)
    if prompt.item.max_tokens > 0 or not call.echo:
        result: GenerationResult = await worker.submit("generate", prompt.item, prompt.item.n)
    else:
        result = GenerationResult([Choice("", "length", []) for _ in range(prompt.item.n)], len(prompt.ids), 0)
    picked = _best(result.choices, call.sampling.n)
    entries = []
    for c in picked:
        lp = None
        if call.logprobs is not None:
            lp = shape.text_logprobs(echoed, c.logprobs or [], call.logprobs, len(prompt.text) if call.echo else 0)
        entries.append({"text": (prompt.text if call.echo else "") + c.text, "finish_reason": c.finish_reason,
                        "logprobs": lp})
    return entries, result.completion_tokens


def _best(choices: list[Choice], n: int) -> list[Choice]:
    """best_of: the n samples with the highest mean token log-prob (OpenAI's rule, "the highest log
    probability per token"; vLLM ranks by the summed log-prob instead)."""
    if len(choices) <= n:
        return choices

    def mean(c: Choice) -> float:
        values = [t.logprob for t in c.logprobs or []]
        return sum(values) / len(values) if values else float("-inf")

    return sorted(choices, key=mean, reverse=True)[:n]


def _error(exc: RequestError) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse(status_code=exc.status, content=shape.error_body(exc))


# --- the app --------------------------------------------------------------------------------

def create_app(model: Any, tokenizer: Any, model_name: str, max_batch_size: int = 8, batch_wait: float = 0.005,
               max_length: int | None = None, default_max_tokens: int = 256, limits: ServeLimits | None = None) -> Any:
    """The FastAPI app serving one loaded model under `model_name`."""
    from fastapi import FastAPI

    limits = limits or ServeLimits(default_max_tokens=default_max_tokens)
    worker = ModelWorker(model, tokenizer, max_batch_size, batch_wait, max_length)
    served = Served(worker, tokenizer, model_name, limits, max_positions(model, tokenizer, max_length),
                    logits_width(model), eos_ids(model, tokenizer), _longest_token(tokenizer))

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        worker.start()
        yield
        await worker.stop()

    app = FastAPI(title="drover serve", lifespan=lifespan)
    app.state.served = served
    app.add_api_route("/v1/models", models, methods=["GET"])
    app.add_api_route("/health", health, methods=["GET"])
    app.add_api_route("/v1/chat/completions", chat, methods=["POST"])
    app.add_api_route("/v1/completions", completions, methods=["POST"])
    return app


def load_app(model_path: str, model_name: str | None = None, chat_template: str | None = None,
             max_batch_size: int = 8, dtype: str = "auto", device: str | None = None,
             max_length: int | None = None, limits: ServeLimits | None = None) -> Any:
    from drover.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(model_path, chat_template=chat_template)
    model = load_model(model_path, dtype=dtype, device=device)
    return create_app(model, tokenizer, model_name or str(model_path), max_batch_size=max_batch_size,
                      max_length=max_length, limits=limits)


@contextlib.contextmanager
def serve_in_thread(model_path: str, port: int = 0, host: str = "127.0.0.1", model_name: str = "tiny",
                    chat_template: str | None = None, max_batch_size: int = 8, app: Any = None,
                    limits: ServeLimits | None = None) -> Iterator[str]:
    """Run `drover serve` on a loopback port in a background thread; yields the base URL
    (`http://127.0.0.1:PORT/v1`). For tests: `with serve_in_thread(tiny_model_dir) as url:`."""
    import uvicorn

    if app is None:
        app = load_app(str(model_path), model_name=model_name, chat_template=chat_template,
                       max_batch_size=max_batch_size, limits=limits)
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
