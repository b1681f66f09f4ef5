"""Shaping `drover serve`'s answers as OpenAI's API does (plain JSON and server-sent events).

Chat: `chat.completion` with `message` and `logprobs.content[]` (token, logprob, bytes,
top_logprobs). Completions (legacy): `text_completion` with `text` and `logprobs` as
parallel lists (tokens, token_logprobs, top_logprobs dicts, text_offset); choice `index`
is `prompt_index * n + sample_index`, as vLLM and OpenAI number them. Streams are
`data: {chunk}` events ending in `data: [DONE]`; with `stream_options.include_usage`
every chunk carries `"usage": null` and one last chunk with no choices carries the usage.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from drover.infer.serve_requests import RequestError
from drover.completions import TokenLogprob


def error_body(exc: RequestError) -> dict[str, Any]:
    kind = {400: "invalid_request_error", 404: "not_found_error", 413: "invalid_request_error"}.get(
        exc.status, "server_error")
    return {"error": {"message": str(exc), "type": kind, "param": exc.param, "code": exc.code}}


def usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def top_k(top: dict[str, float] | None, k: int) -> dict[str, float] | None:
    """The k best of a (possibly larger) top-alternatives dict; None when k is 0."""
    if not k or top is None:
        return None
    return dict(sorted(top.items(), key=lambda kv: -kv[1])[:k])


def chat_logprobs(tokens: list[TokenLogprob], k: int) -> dict[str, Any]:
    return {"content": [{"token": t.token, "logprob": t.logprob, "bytes": list(t.token.encode()),
                         "top_logprobs": [{"token": a, "logprob": v, "bytes": list(a.encode())}
                                          for a, v in (top_k(t.top, k) or {}).items()]} for t in tokens]}


def chat_response(model: str, choices: list[tuple[str, str | None, dict[str, Any] | None]],
                  prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    """choices: (content, finish_reason, logprobs or None) per sample."""
    return {"id": new_id("chatcmpl"), "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": finish,
                         "logprobs": lp} for i, (text, finish, lp) in enumerate(choices)],
            "usage": usage(prompt_tokens, completion_tokens)}


def text_logprobs(echoed: Any, generated: list[TokenLogprob], k: int, start: int) -> dict[str, Any]:
    """Legacy logprobs of the echoed prompt (a `PromptLogprobs`, or None) then the generated
    tokens, whose offsets start at `start` (the echoed text's length, or 0)."""
    tokens: list[str] = []
    values: list[float | None] = []
    tops: list[dict[str, float] | None] = []
    offsets: list[int] = []
    if echoed is not None:
        tokens, values, offsets = list(echoed.tokens), list(echoed.token_logprobs), list(echoed.text_offset)
        tops = [top_k(t, k) if t is not None else None for t in echoed.top_logprobs]
    position = start
    for t in generated:
        tokens.append(t.token)
        values.append(t.logprob)
        tops.append(top_k(t.top, k))
        offsets.append(position)
        position += len(t.token)
    return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets}


def completion_response(model: str, choices: list[dict[str, Any]], prompt_tokens: int,
                        completion_tokens: int) -> dict[str, Any]:
    """choices: {index, text, finish_reason, logprobs} in index order."""
    return {"id": new_id("cmpl"), "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": choices, "usage": usage(prompt_tokens, completion_tokens)}


def sse(obj: dict[str, Any] | str) -> bytes:
    """One server-sent event."""
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)}\n\n".encode()


def stream_chunk(ident: str, created: int, model: str, kind: str, choice: dict[str, Any],
                 include_usage: bool = False) -> dict[str, Any]:
    """One streamed chunk of one choice: `kind` "chat.completion.chunk" (choice has a `delta`)
    or "text_completion" (choice has `text`)."""
    chunk: dict[str, Any] = {"id": ident, "object": kind, "created": created, "model": model, "choices": [choice]}
    if include_usage:
        chunk["usage"] = None
    return chunk


def usage_chunk(ident: str, created: int, model: str, kind: str, prompt: int, completion: int) -> dict[str, Any]:
    return {"id": ident, "object": kind, "created": created, "model": model, "choices": [],
            "usage": usage(prompt, completion)}
