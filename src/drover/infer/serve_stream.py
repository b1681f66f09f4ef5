"""Streamed answers of `drover serve` (server-sent events), chat and completions.

The decoding loop reports every token as it is drawn (`GenerationItem.on_token`, on the
model thread); `_tokens` carries those reports onto the event loop and merges them with
each item's final result. Text goes out through `TextDelta` (held back while it may be a
stop string's start or half a UTF-8 character), so what was streamed equals the
non-streamed answer; the final chunk of a choice carries its finish_reason, and with
`include_usage` a last chunk without choices carries the usage. When the client
disconnects, its rows stop at the next decoding step (the rest of the batch goes on).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from drover.infer import serve_responses as shape
from drover.local.decode import GenerationItem, GenerationResult
from drover.infer.model_worker import ModelWorker
from drover.infer.serve_requests import ChatCall, CompletionCall, RequestError
from drover.infer.stream_text import TextDelta
from drover.completions import TokenLogprob


def response(events: AsyncIterator[bytes]) -> Any:
    from fastapi.responses import StreamingResponse

    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _tokens(worker: ModelWorker, items: list[GenerationItem]) -> AsyncIterator[tuple[str, int, int, Any]]:
    """Merge the token callbacks of several items' decoding into one async stream:
    ("token", item, sample, (token, logprob)) as drawn, then ("done", item, -1, result)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, int, int, Any]] = asyncio.Queue()
    listening = [True]  # False once the client has gone: the decoding loop then drops the rows
    for p, item in enumerate(items):
        def heard(sample: int, token: int, logprob: TokenLogprob | None, p: int = p) -> bool:
            if listening[0]:
                loop.call_soon_threadsafe(queue.put_nowait, ("token", p, sample, (token, logprob)))
            return listening[0]
        item.on_token = heard

    async def run(p: int, item: GenerationItem) -> None:
        try:
            queue.put_nowait(("done", p, -1, await worker.submit("generate", item, item.n)))
        except Exception as exc:
            queue.put_nowait(("error", p, -1, exc))

    tasks = [asyncio.ensure_future(run(p, item)) for p, item in enumerate(items)]
    try:
        remaining = len(items)
        while remaining:
            event = await queue.get()
            remaining -= event[0] != "token"
            yield event
    finally:  # done, or the client disconnected (the response task is cancelled)
        listening[0] = False
        for task in tasks:
            task.cancel()


async def _sample_events(worker: ModelWorker, tokenizer: Any, model_name: str, items: list[GenerationItem], n: int,
                         include_usage: bool, chunk: Any, kind: str, ident: str, created: int) -> AsyncIterator[bytes]:
    """The SSE events of sampled text, shared by chat and completions; `chunk(index, text,
    finish, logprobs)` shapes one chunk."""
    deltas = {(p, j): TextDelta(tokenizer, item.stop) for p, item in enumerate(items) for j in range(item.n)}
    pending: dict[tuple[int, int], list[TokenLogprob]] = {key: [] for key in deltas}
    sent: dict[tuple[int, int], int] = {key: 0 for key in deltas}
    completion_tokens = 0
    async for kind_, p, j, value in _tokens(worker, items):
        if kind_ == "token":
            token, logprob = value
            if logprob is not None:
                pending[(p, j)].append(logprob)
            text = deltas[(p, j)].push(token)
            if text:
                yield shape.sse(chunk(p * n + j, text, None, pending[(p, j)]))
                sent[(p, j)] += len(pending[(p, j)])
                pending[(p, j)] = []
        elif kind_ == "error":
            yield shape.sse(shape.error_body(RequestError(f"generation failed: {value}", status=500)))
            return
        else:
            result: GenerationResult = value
            completion_tokens += result.completion_tokens
            for j, choice in enumerate(result.choices):
                rest = (choice.logprobs or [])[sent[(p, j)]:] if items[p].logprobs else []
                yield shape.sse(chunk(p * n + j, deltas[(p, j)].finish(choice.text), choice.finish_reason, rest))
    if include_usage:
        yield shape.sse(shape.usage_chunk(ident, created, model_name, kind,
                                          sum(len(i.prompt_ids) for i in items), completion_tokens))
    yield shape.sse("[DONE]")


async def chat_events(worker: ModelWorker, tokenizer: Any, name: str, call: ChatCall,
                      item: GenerationItem) -> AsyncIterator[bytes]:
    """A chat completion as SSE: a role chunk per choice, content deltas, finish, [usage], [DONE]."""
    ident, created = shape.new_id("chatcmpl"), int(time.time())
    usage = call.sampling.include_usage
    for j in range(call.sampling.n):
        yield shape.sse(shape.stream_chunk(ident, created, name, "chat.completion.chunk", {
            "index": j, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}, usage))

    def chunk(index: int, text: str, finish: str | None, logprobs: list[TokenLogprob]) -> dict[str, Any]:
        lp = shape.chat_logprobs(logprobs, call.top_logprobs) if call.logprobs else None
        delta = {"content": text} if text or not finish else {}
        return shape.stream_chunk(ident, created, name, "chat.completion.chunk",
                                  {"index": index, "delta": delta, "logprobs": lp, "finish_reason": finish}, usage)

    async for event in _sample_events(worker, tokenizer, name, [item], call.sampling.n, usage, chunk,
                                      "chat.completion.chunk", ident, created):
        yield event


async def completion_events(worker: ModelWorker, tokenizer: Any, name: str, call: CompletionCall,
                            items: list[GenerationItem]) -> AsyncIterator[bytes]:
    """Completions of one or more prompts as SSE: text chunks (index = prompt x n + sample), [usage], [DONE]."""
    ident, created = shape.new_id("cmpl"), int(time.time())
    usage = call.sampling.include_usage
    offsets: dict[int, int] = {}

    def chunk(index: int, text: str, finish: str | None, logprobs: list[TokenLogprob]) -> dict[str, Any]:
        lp = None
        if call.logprobs is not None:
            lp = shape.text_logprobs(None, logprobs, call.logprobs, offsets.get(index, 0))
            offsets[index] = offsets.get(index, 0) + sum(len(t.token) for t in logprobs)
        return shape.stream_chunk(ident, created, name, "text_completion",
                                  {"index": index, "text": text, "logprobs": lp, "finish_reason": finish}, usage)

    async for event in _sample_events(worker, tokenizer, name, items, call.sampling.n, usage, chunk,
                                      "text_completion", ident, created):
        yield event
