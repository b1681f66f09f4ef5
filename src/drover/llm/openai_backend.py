"""OpenAI-compatible backend (OpenAI, Azure, vLLM, llama.cpp, Ollama, `drover serve`).

Asynchronous, on the official `openai` package (its own retries switched off: this
module owns them, see `drover.llm.retry`). Concurrency is bounded by a semaphore, RPM/TPM
by token buckets. Chat requests go to `/v1/chat/completions`, raw-text requests to
`/v1/completions`; scoring uses `/v1/completions` with `echo=True, logprobs=1,
max_tokens=0` (supported by `drover serve` and vLLM) and keeps the prompt tokens that
belong to the continuation (by `text_offset`).

Constraints (`Decoding.constraint`) go out as vLLM's OpenAI server names them:
`response_format` json_schema on chat (which OpenAI itself also takes), `guided_json` on
completions, `guided_choice` and `guided_regex`. With `constraints: auto`, an endpoint
that answers HTTP 400 naming one of those parameters is remembered as unconstrained for
the session, and that request and all later ones go without; the Completion records
whether it was constrained, so callers know to parse. `constraints: on` fails the job
instead; with `off` the client drops the constraint before it gets here (`LLM.resolve`).
An answer given without the constraint is the plain request's answer: the client caches
it under the plain request's key, never under the constrained one (`LLM._complete_one`).
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import sys
import time
from collections.abc import Callable
from typing import Any

from drover.errors import LLMError
from drover.llm.config import LLMConfig
from drover.llm.ratelimit import RateLimiter, estimate_tokens
from drover.llm.replicas import Replica, ReplicaSet
from drover.llm.retry import Verdict, backoff_delay, classify_status, redact, retry_after_seconds
from drover.completions import (Choice, Completion, Constraint, Decoding, Request, Score, ScoreRequest, TokenLogprob,
                              Usage)


POOL_SHARD = 8  # connections per httpx pool (see OpenAIBackend.start)


class ItemError(Exception):
    """This one request failed for good (after retries, or a non-retryable 4xx)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


CONSTRAINT_PARAMS = ("guided_choice", "guided_regex", "guided_json", "response_format")


class OpenAIBackend:
    name = "openai"

    def __init__(self, config: LLMConfig):
        self.config = config
        self._key = config.api_key()
        self._clients: list[Any] = []
        self._slots: asyncio.Semaphore | None = None
        self.replicas: ReplicaSet | None = None
        self.limiter = RateLimiter(config.rpm, config.tpm)
        self._reached = False  # has any request got an HTTP answer from the endpoint?
        self._unconstrained = False  # did the endpoint reject constraint parameters (constraints: auto)?
        self._refused: LLMError | None = None  # the endpoint refused the job (401/403/404): no more requests

    # --- lifecycle (called on the client's event-loop thread) ---------------------------
    async def start(self) -> None:
        import openai

        from drover.llm.transport import httpx

        if self._key is None and not self.config.base_url:
            raise LLMError(f"no API key: set the environment variable {self.config.api_key_env} "
                           "(or give a base_url for a local OpenAI-compatible server)")
        timeout = httpx.Timeout(self.config.timeout, connect=min(self.config.timeout, 10.0))
        urls = self.config.base_urls() or [None]
        # One CA-bundle load (~0.1 s), shared by every client that needs TLS.
        tls = None if all(self.config.lean_transport and _lean_ok(u) for u in urls) else ssl.create_default_context()
        replicas = []
        for url in urls:
            # Each replica gets clients for the whole concurrency (it may carry all the load
            # while the others are out); `self._slots` bounds the total.
            clients = _clients(openai, httpx, url, self._key, self.config, timeout, tls)
            self._clients.extend(clients)
            free: asyncio.Queue[Any] = asyncio.Queue()
            for i in range(self.config.concurrency):
                free.put_nowait(clients[i % len(clients)])
            replicas.append(Replica(url or "the OpenAI API", free))
        self.replicas = ReplicaSet(replicas, self.config.replica_cooldown)
        self._slots = asyncio.Semaphore(self.config.concurrency)

    async def aclose(self) -> None:
        clients, self._clients = self._clients, []
        for client in clients:
            await client.close()

    def redact(self, text: str) -> str:
        return redact(text, [self._key])

    # --- the retry loop ---------------------------------------------------------------
    async def _call(self, path: str, body: dict[str, Any], est_tokens: float,
                    sample: int = 0) -> tuple[dict[str, Any], float]:
        """POST `body` to `path` with retries; returns the parsed JSON response and its latency.
        `sample` (the request's sample index) tells apart independent samples whose bodies are
        the same (no seed); each POST is its own sample here, the batch backend keys by it.

        Uses the client's low-level `post` with a raw httpx response: the same auth,
        URL handling and error types as `client.chat.completions.create`, without its
        per-call parameter transformation and pydantic parsing, which cost more CPU than
        the rest of a request (see benchmarks/llm_client.py).
        """
        import openai

        from drover.llm.transport import httpx

        assert self._slots is not None and self.replicas is not None
        attempt = hops = 0  # hops: replicas switched to since the last counted attempt
        while True:
            status: int | None = None
            headers: Any = None
            failure: str | None = None  # a replica-level failure (connection, timeout, 5xx)
            await self._slots.acquire()
            if self._refused is not None:   # waiting requests are never sent once the job is refused
                self._slots.release()
                raise LLMError(str(self._refused))
            replica, client = self.replicas.acquire()
            try:
                await self.limiter.acquire(est_tokens)
                start = time.perf_counter()
                try:
                    raw = await client.post(path, body=body, cast_to=httpx.Response)
                    latency = time.perf_counter() - start
                    self._reached = True
                    try:
                        response = json.loads(raw.content)
                    except ValueError:
                        raise ItemError(f"invalid response: not JSON: {raw.text[:200]!r}") from None
                    if not isinstance(response, dict) or not isinstance(response.get("choices"), list):
                        raise ItemError(self.redact(f"invalid response: no choices in {str(response)[:200]!r}"))
                    usage = response.get("usage") or {}
                    self.limiter.correct(est_tokens, (usage.get("prompt_tokens") or 0) + (usage.get("completion_tokens") or 0))
                    return response, latency
                except openai.APIStatusError as exc:
                    status, headers = exc.status_code, exc.response.headers
                    self._reached = True
                    message = f"HTTP {status}: {_status_message(exc)}"
                    failure = message if status >= 500 else None
                except openai.APITimeoutError:
                    message = failure = f"timed out after {self.config.timeout:g} s"
                except openai.APIConnectionError as exc:
                    message = failure = f"connection error: {exc.__cause__ or exc}"
                except openai.APIError as exc:  # malformed response and the like
                    raise ItemError(self.redact(f"invalid response: {exc}")) from None
            finally:
                self.replicas.release(replica, client, failure)
                self._slots.release()
            verdict = Verdict.RETRY if status is None else classify_status(status)
            message = self.redact(message)
            if len(self.replicas) > 1:
                message = f"{replica.url}: {message}"
                if (failure is not None and verdict is Verdict.RETRY and hops < len(self.replicas) - 1
                        and self.replicas.another_healthy(replica)):
                    hops += 1
                    continue  # this replica is out for a while: straight on to another one
            if verdict is Verdict.FATAL:
                where = replica.url
                self._refused = LLMError(f"{where} refused model {self.config.model!r}: {message} "
                                         f"(check {self.config.api_key_env}, the model name and base_url)")
                raise LLMError(str(self._refused))
            if verdict is Verdict.RECORD:
                raise ItemError(message, status)
            if attempt >= self.config.max_retries:
                if status is None and not self._reached:
                    # Nothing ever answered: every other item would fail the same way.
                    where = ", ".join(r.url for r in self.replicas.replicas)
                    raise LLMError(f"cannot reach {where}: {message} (gave up after {attempt + 1} attempts; "
                                   f"is the server running and the URL right?)")
                raise ItemError(f"{message} (gave up after {attempt + 1} attempts)")
            wait = backoff_delay(attempt, self.config.backoff_base, self.config.backoff_max)
            server_wait = retry_after_seconds(headers)
            if server_wait is not None:
                wait = min(max(server_wait, 0.0), max(self.config.backoff_max, wait))
                if status == 429:
                    self.limiter.pause(wait)
            attempt += 1
            hops = 0
            await asyncio.sleep(wait)

    # --- completions ----------------------------------------------------------------------
    async def complete(self, request: Request, decoding: Decoding,
                       plain_cached: Callable[[], Completion | None] | None = None) -> Completion:
        """One request (n choices); raises ItemError or LLMError.

        A constrained request that goes out without its constraint (the endpoint rejects
        them) *is* the plain request: `plain_cached` returns that request's cached answer,
        if any, so a resumed run does not pay for it again.
        """
        chat = request.messages is not None
        if decoding.constraint is not None and self._unconstrained and plain_cached is not None:
            hit = plain_cached()
            if hit is not None:
                return hit
        extra = constraint_params(decoding.constraint, chat) if not self._unconstrained else {}
        try:
            completion = await self._complete(request, decoding, extra)
        except ItemError as exc:
            if not extra or exc.status != 400 or not any(name in str(exc) for name in extra):
                raise
            where = self.config.base_url or "the OpenAI API"
            if self.config.constraints == "on":
                raise LLMError(f"{where} rejects constrained decoding ({exc}); set the LLM option constraints: "
                               "auto (parse unconstrained outputs) or off") from None
            if not self._unconstrained:
                print(f"drover: {where} rejects constrained decoding ({exc}); sending requests unconstrained "
                      "for the rest of this session", file=sys.stderr, flush=True)
            self._unconstrained = True
            extra = {}
            hit = plain_cached() if plain_cached is not None else None
            if hit is not None:
                return hit
            completion = await self._complete(request, decoding, extra)
        if decoding.constraint is not None:
            completion.constrained = bool(extra)
        return completion

    async def _complete(self, request: Request, decoding: Decoding, extra: dict[str, Any]) -> Completion:
        n = decoding.n or 1
        kwargs = {**_sampling_kwargs(self.config.model, decoding, request), **extra}
        if request.messages is not None:
            kwargs["messages"] = request.message_dicts()
            if decoding.logprobs:
                kwargs["logprobs"] = True
                if decoding.top_logprobs:
                    kwargs["top_logprobs"] = decoding.top_logprobs
            chars = sum(len(c) for _, c in request.messages)
            response, latency = await self._call("/chat/completions", kwargs,
                                                 estimate_tokens(chars, decoding.max_tokens or 0, n),
                                                 request.sample_index)
            choices = [Choice(text=(c.get("message") or {}).get("content") or "", finish_reason=c.get("finish_reason"),
                              logprobs=_chat_logprobs(c.get("logprobs")) if decoding.logprobs else None)
                       for c in sorted(response["choices"], key=lambda c: c.get("index", 0))]
        else:
            kwargs["prompt"] = request.prompt
            if decoding.logprobs:
                kwargs["logprobs"] = decoding.top_logprobs or 1
            response, latency = await self._call("/completions", kwargs,
                                                 estimate_tokens(len(request.prompt or ""), decoding.max_tokens or 0, n),
                                                 request.sample_index)
            choices = [Choice(text=c.get("text") or "", finish_reason=c.get("finish_reason"),
                              logprobs=_text_logprobs(c.get("logprobs"), decoding.top_logprobs) if decoding.logprobs else None)
                       for c in sorted(response["choices"], key=lambda c: c.get("index", 0))]
        if len(choices) != n:  # the same for every request: a best-of-n of one sample, a pass@k without k
            where = self.config.base_url or "the OpenAI API"
            raise LLMError(f"{where} answered {len(choices)} choice(s) to a request for n={n}: it does not sample "
                           "n per request; set the LLM option supports_n: false (n requests of one sample each)")
        usage = response.get("usage") or {}
        return Completion(choices=choices, model=response.get("model") or self.config.model,
                          usage=Usage(usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0),
                          latency=latency)

    async def score(self, request: ScoreRequest) -> Score:
        from drover.local.scoring import align_boundary

        context, continuation = align_boundary(request.context, request.continuation)
        text = context + continuation
        kwargs = {"model": self.config.model, "prompt": text, "echo": True, "logprobs": 1, "max_tokens": 0,
                  "temperature": 0.0}
        response, _ = await self._call("/completions", kwargs, estimate_tokens(len(text), 0, 1))
        lp = response["choices"][0].get("logprobs") if response["choices"] else None
        if not lp or lp.get("text_offset") is None or lp.get("token_logprobs") is None:
            raise ItemError("the server returned no prompt log-probs for echo=True (it cannot score text)")
        offsets, token_logprobs, lp_tokens = lp["text_offset"], lp["token_logprobs"], lp["tokens"]
        top_logprobs = lp.get("top_logprobs") or [None] * len(offsets)
        tokens, values, greedy = [], [], True
        start, end = len(context), len(text)
        for i, offset in enumerate(offsets):
            token_end = offsets[i + 1] if i + 1 < len(offsets) else end
            if offset < start and token_end <= start:
                continue  # a context token (one straddling the boundary counts as continuation)
            if offset >= end:
                break  # a generated token, if the server ignored max_tokens=0
            value = token_logprobs[i]
            if value is None:
                raise ItemError("the server gave no log-prob for a continuation token (empty context?)")
            token = lp_tokens[i]
            tokens.append(token)
            values.append(float(value))
            top = top_logprobs[i]
            if top:
                best = max(top.items(), key=lambda kv: kv[1])
                greedy = greedy and (best[0] == token or best[1] <= value + 1e-6)
        return Score(token_logprobs=values, tokens=tokens, total=float(sum(values)), greedy=greedy)


def _clients(openai: Any, httpx: Any, url: str | None, key: str | None, config: LLMConfig, timeout: Any,
             tls: ssl.SSLContext | None) -> list[Any]:
    """The `openai` clients of one endpoint URL, together able to carry `config.concurrency` requests."""
    if config.lean_transport and _lean_ok(url):
        from drover.llm.transport import LeanTransport

        # One client: the lean transport's pool is O(1) per request (see transport.py).
        return [openai.AsyncOpenAI(
            api_key=key or "EMPTY", base_url=url, timeout=timeout, max_retries=0,
            http_client=openai.DefaultAsyncHttpxClient(
                transport=LeanTransport(max_idle=config.concurrency), timeout=timeout))]
    # httpx's connection pool scans every connection on each request (and polls idle
    # sockets), so one pool of 256 connections costs more CPU per request than the
    # request itself. Shards of at most POOL_SHARD connections keep that scan short.
    shards = -(-config.concurrency // POOL_SHARD)
    clients = []
    for i in range(shards):
        size = len(range(i, config.concurrency, shards))
        limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
        clients.append(openai.AsyncOpenAI(
            api_key=key or "EMPTY", base_url=url, timeout=timeout, max_retries=0,
            http_client=openai.DefaultAsyncHttpxClient(limits=limits, timeout=timeout, verify=tls)))
    return clients


def _lean_ok(base_url: str | None) -> bool:
    """Plain-HTTP endpoints without a proxy in the environment (httpx would honour one)."""
    if not base_url or not base_url.startswith("http://"):
        return False
    return not any(os.environ.get(v) for v in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"))


def prompt_seed(seed: int, request: Request) -> int:
    """The seed a seeded request's samples start from: 31 bits of the digest of (seed, its
    messages or prompt). An endpoint draws the same noise for the same seed whatever the
    prompt (vLLM: one generator per request, seeded by it), and a config seed is sent with
    every request: the seed as given made every prompt's sample k share one noise stream,
    so samples of different prompts came out alike (drover serve's random tiny model: the
    same text for every prompt). Stable across runs: a resumed or repeated run sends it again."""
    from drover.identity import digest

    return int(digest([seed, request.messages, request.prompt]).rsplit(":", 1)[1][:8], 16) >> 1


def _sampling_kwargs(model: str, d: Decoding, request: Request | None = None) -> dict[str, Any]:
    """The body's sampling fields. A seeded request's k-th sample (`sample_index`) is sent
    with `prompt_seed` + k: one seed would make the endpoint return the same sample k times.
    With n choices, + k*n: an endpoint samples choice j with seed + j (vLLM's child
    requests), so + k gave index k the choices of index k-1 shifted by one; + k*n are
    exactly the seeds of the emulated n (`LLM._samples_one_by_one`: index k*n + j)."""
    kwargs: dict[str, Any] = {"model": model}
    seed = None
    if d.seed is not None:
        seed = d.seed if request is None else prompt_seed(d.seed, request) + request.sample_index * (d.n or 1)
    for name, value in (("temperature", d.temperature), ("top_p", d.top_p), ("max_tokens", d.max_tokens),
                        ("seed", seed)):
        if value is not None:
            kwargs[name] = value
    if d.stop:
        kwargs["stop"] = list(d.stop)
    if d.n and d.n > 1:
        kwargs["n"] = d.n
    return kwargs


def constraint_params(constraint: Constraint | None, chat: bool) -> dict[str, Any]:
    """The request fields that ask an OpenAI-compatible server for `constraint`."""
    if constraint is None:
        return {}
    if constraint.choice is not None:
        return {"guided_choice": list(constraint.choice)}
    if constraint.regex is not None:
        return {"guided_regex": constraint.regex}
    schema = json.loads(constraint.json_schema or "{}")
    if chat and schema == {"type": "object"}:  # any JSON object: OpenAI's JSON mode
        return {"response_format": {"type": "json_object"}}
    if chat:
        return {"response_format": {"type": "json_schema",
                                    "json_schema": {"name": "output", "schema": schema, "strict": True}}}
    return {"guided_json": schema}


def _status_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
    return str(getattr(exc, "message", exc))


def _chat_logprobs(lp: Any) -> list[TokenLogprob] | None:
    if not lp or not lp.get("content"):
        return None
    return [TokenLogprob(token=t["token"], logprob=float(t["logprob"]),
                         top={a["token"]: float(a["logprob"]) for a in (t.get("top_logprobs") or [])} or None)
            for t in lp["content"]]


def _text_logprobs(lp: Any, top_k: int | None) -> list[TokenLogprob] | None:
    if not lp or lp.get("tokens") is None:
        return None
    tokens = lp["tokens"]
    tops = lp.get("top_logprobs") or [None] * len(tokens)
    return [TokenLogprob(token=tok, logprob=float(val if val is not None else 0.0),
                         top=({k: float(v) for k, v in top.items()} if (top and top_k) else None))
            for tok, val, top in zip(tokens, lp["token_logprobs"], tops)]
