"""OpenAI-compatible backend (OpenAI, Azure, vLLM, llama.cpp, Ollama, `drover serve`).

Asynchronous, on the official `openai` package (its own retries switched off: this
module owns them, see `drover.llm.retry`). Concurrency is bounded by a semaphore, RPM/TPM
by token buckets. Chat requests go to `/v1/chat/completions`, raw-text requests to
`/v1/completions`; scoring uses `/v1/completions` with `echo=True, logprobs=1,
max_tokens=0` (supported by `drover serve` and vLLM) and keeps the prompt tokens that
belong to the continuation (by `text_offset`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from drover.errors import LLMError
from drover.llm.config import LLMConfig
from drover.llm.ratelimit import RateLimiter, estimate_tokens
from drover.llm.retry import Verdict, backoff_delay, classify_status, redact, retry_after_seconds
from drover.llm.types import Choice, Completion, Decoding, Request, Score, ScoreRequest, TokenLogprob, Usage


class ItemError(Exception):
    """This one request failed for good (after retries, or a non-retryable 4xx)."""


class OpenAIBackend:
    name = "openai"

    def __init__(self, config: LLMConfig):
        self.config = config
        self._key = config.api_key()
        self._client: Any = None
        self._sem: asyncio.Semaphore | None = None
        self.limiter = RateLimiter(config.rpm, config.tpm)

    # --- lifecycle (called on the client's event-loop thread) ---------------------------
    async def start(self) -> None:
        import httpx
        import openai

        if self._key is None and not self.config.base_url:
            raise LLMError(f"no API key: set the environment variable {self.config.api_key_env} "
                           "(or give a base_url for a local OpenAI-compatible server)")
        limits = httpx.Limits(max_connections=self.config.concurrency,
                              max_keepalive_connections=self.config.concurrency)
        timeout = httpx.Timeout(self.config.timeout, connect=min(self.config.timeout, 10.0))
        self._client = openai.AsyncOpenAI(
            api_key=self._key or "EMPTY", base_url=self.config.base_url, timeout=timeout, max_retries=0,
            http_client=openai.DefaultAsyncHttpxClient(limits=limits, timeout=timeout))
        self._sem = asyncio.Semaphore(self.config.concurrency)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def redact(self, text: str) -> str:
        return redact(text, [self._key])

    # --- the retry loop ---------------------------------------------------------------
    async def _call(self, method: Any, kwargs: dict[str, Any], est_tokens: float) -> tuple[Any, float]:
        import openai

        assert self._sem is not None
        attempt = 0
        while True:
            status: int | None = None
            headers: Any = None
            async with self._sem:
                await self.limiter.acquire(est_tokens)
                start = time.perf_counter()
                try:
                    response = await method(**kwargs)
                    latency = time.perf_counter() - start
                    usage = getattr(response, "usage", None)
                    if usage is not None:
                        self.limiter.correct(est_tokens, (usage.prompt_tokens or 0) + (usage.completion_tokens or 0))
                    return response, latency
                except openai.APIStatusError as exc:
                    status, headers = exc.status_code, exc.response.headers
                    message = f"HTTP {status}: {_status_message(exc)}"
                except openai.APITimeoutError:
                    message = f"timed out after {self.config.timeout:g} s"
                except openai.APIConnectionError as exc:
                    message = f"connection error: {exc.__cause__ or exc}"
                except openai.APIError as exc:  # malformed response and the like
                    raise ItemError(self.redact(f"invalid response: {exc}")) from None
            verdict = Verdict.RETRY if status is None else classify_status(status)
            message = self.redact(message)
            if verdict is Verdict.FATAL:
                where = self.config.base_url or "the OpenAI API"
                raise LLMError(f"{where} refused model {self.config.model!r}: {message} "
                               f"(check {self.config.api_key_env}, the model name and base_url)")
            if verdict is Verdict.RECORD:
                raise ItemError(message)
            if attempt >= self.config.max_retries:
                raise ItemError(f"{message} (gave up after {attempt + 1} attempts)")
            wait = backoff_delay(attempt, self.config.backoff_base, self.config.backoff_max)
            server_wait = retry_after_seconds(headers)
            if server_wait is not None:
                wait = min(max(server_wait, 0.0), max(self.config.backoff_max, wait))
                if status == 429:
                    self.limiter.pause(wait)
            attempt += 1
            await asyncio.sleep(wait)

    # --- completions ----------------------------------------------------------------------
    async def complete(self, request: Request, decoding: Decoding) -> Completion:
        """One request (n choices); raises ItemError or LLMError."""
        n = decoding.n or 1
        if n > 1 and not self.config.supports_n:
            parts = await asyncio.gather(*(self.complete(request, _one_sample(decoding, j)) for j in range(n)))
            return Completion(choices=[c for p in parts for c in p.choices], model=parts[0].model,
                              usage=Usage(sum(p.usage.prompt_tokens for p in parts),
                                          sum(p.usage.completion_tokens for p in parts)),
                              latency=max(p.latency for p in parts))
        assert self._client is not None
        kwargs = _sampling_kwargs(self.config.model, decoding)
        if request.messages is not None:
            kwargs["messages"] = request.message_dicts()
            if decoding.logprobs:
                kwargs["logprobs"] = True
                if decoding.top_logprobs:
                    kwargs["top_logprobs"] = decoding.top_logprobs
            chars = sum(len(c) for _, c in request.messages)
            response, latency = await self._call(self._client.chat.completions.create, kwargs,
                                                 estimate_tokens(chars, decoding.max_tokens or 0, n))
            choices = [Choice(text=c.message.content or "", finish_reason=c.finish_reason,
                              logprobs=_chat_logprobs(c.logprobs) if decoding.logprobs else None)
                       for c in sorted(response.choices, key=lambda c: c.index)]
        else:
            kwargs["prompt"] = request.prompt
            if decoding.logprobs:
                kwargs["logprobs"] = decoding.top_logprobs or 1
            response, latency = await self._call(self._client.completions.create, kwargs,
                                                 estimate_tokens(len(request.prompt or ""), decoding.max_tokens or 0, n))
            choices = [Choice(text=c.text or "", finish_reason=c.finish_reason,
                              logprobs=_text_logprobs(c.logprobs, decoding.top_logprobs) if decoding.logprobs else None)
                       for c in sorted(response.choices, key=lambda c: c.index)]
        usage = response.usage
        return Completion(choices=choices, model=getattr(response, "model", "") or self.config.model,
                          usage=Usage(usage.prompt_tokens or 0, usage.completion_tokens or 0) if usage else Usage(),
                          latency=latency)

    async def score(self, request: ScoreRequest) -> Score:
        from drover.infer.scoring import align_boundary

        assert self._client is not None
        context, continuation = align_boundary(request.context, request.continuation)
        text = context + continuation
        kwargs = {"model": self.config.model, "prompt": text, "echo": True, "logprobs": 1, "max_tokens": 0,
                  "temperature": 0.0}
        response, _ = await self._call(self._client.completions.create, kwargs, estimate_tokens(len(text), 0, 1))
        lp = response.choices[0].logprobs
        if lp is None or lp.text_offset is None or lp.token_logprobs is None:
            raise ItemError("the server returned no prompt log-probs for echo=True (it cannot score text)")
        tokens, values, greedy = [], [], True
        start, end = len(context), len(text)
        for i, offset in enumerate(lp.text_offset):
            if offset < start and not (i + 1 < len(lp.text_offset) and lp.text_offset[i + 1] > start):
                continue  # a context token
            if offset >= end:
                break  # a generated token, if the server ignored max_tokens=0
            value = lp.token_logprobs[i]
            if value is None:
                raise ItemError("the server gave no log-prob for a continuation token (empty context?)")
            token = lp.tokens[i]
            tokens.append(token)
            values.append(float(value))
            top = (lp.top_logprobs or [None] * (i + 1))[i]
            if top:
                best = max(top.items(), key=lambda kv: kv[1])
                greedy = greedy and (best[0] == token or best[1] <= value + 1e-6)
        return Score(token_logprobs=values, tokens=tokens, total=float(sum(values)), greedy=greedy)


def _one_sample(decoding: Decoding, j: int) -> Decoding:
    from dataclasses import replace

    return replace(decoding, n=1, seed=None if decoding.seed is None else decoding.seed + j)


def _sampling_kwargs(model: str, d: Decoding) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"model": model}
    for name, value in (("temperature", d.temperature), ("top_p", d.top_p), ("max_tokens", d.max_tokens),
                        ("seed", d.seed)):
        if value is not None:
            kwargs[name] = value
    if d.stop:
        kwargs["stop"] = list(d.stop)
    if d.n and d.n > 1:
        kwargs["n"] = d.n
    return kwargs


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
    if lp is None or not getattr(lp, "content", None):
        return None
    return [TokenLogprob(token=t.token, logprob=float(t.logprob),
                         top={a.token: float(a.logprob) for a in (t.top_logprobs or [])} or None)
            for t in lp.content]


def _text_logprobs(lp: Any, top_k: int | None) -> list[TokenLogprob] | None:
    if lp is None or lp.tokens is None:
        return None
    tops = lp.top_logprobs or [None] * len(lp.tokens)
    return [TokenLogprob(token=tok, logprob=float(val if val is not None else 0.0),
                         top=({k: float(v) for k, v in top.items()} if (top and top_k) else None))
            for tok, val, top in zip(lp.tokens, lp.token_logprobs, tops)]
