"""Parsing and validating `drover serve`'s OpenAI-style request bodies (no model, no I/O).

Every invalid value is a `RequestError` (HTTP 400, OpenAI's error body, the offending
`param` named) before anything reaches the model: non-finite or out-of-range numbers,
`n`/`best_of`/`logprobs`/`top_logprobs`/`stop` past the configured `ServeLimits`, wrong
types, conflicting constraint parameters. Prompt lengths are checked against the context
once tokenized (`check_context`, vLLM's rule: prompt + max_tokens must fit).

Constraint parameters, as vLLM's OpenAI server names them: `guided_choice` (list of
strings), `guided_regex`, `guided_json` (schema object or its JSON text), the newer
`structured_outputs: {choice|regex|json}`, and OpenAI's `response_format`
(`{"type": "json_object"}` or `{"type": "json_schema", "json_schema": {"schema": ...}}`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from drover.completions import Constraint


class RequestError(Exception):
    """A bad request (HTTP 400/404/413 with an OpenAI-style error body)."""

    def __init__(self, message: str, status: int = 400, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.param, self.code = status, param, code


@dataclass
class ServeLimits:
    """What one request may ask for; every bound is a `drover serve` option."""

    max_body_bytes: int = 4 * 1024 * 1024  # larger bodies get 413 before they are parsed
    max_n: int = 128  # n and best_of (RSO samples 64 per prompt)
    max_logprobs: int = 20  # top_logprobs (chat) and logprobs (completions); OpenAI's own bound is 20
    max_prompts: int = 64  # prompts in one /v1/completions request
    max_stop: int = 16  # stop strings
    default_max_tokens: int = 256  # when a request gives none (capped by what is left of the context)


@dataclass
class Sampling:
    """The decoding fields chat and completions share, validated."""

    max_tokens: int | None
    temperature: float
    top_p: float
    n: int
    seed: int | None
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool
    constraint: Constraint | None


@dataclass
class ChatCall:
    messages: list[dict[str, str]]
    sampling: Sampling
    logprobs: bool
    top_logprobs: int


@dataclass
class CompletionCall:
    prompts: list[str | list[int]]  # text, or token ids
    sampling: Sampling
    logprobs: int | None  # None: no log-probs; k: the top k alternatives per token
    echo: bool
    best_of: int = 1


def number(body: dict[str, Any], name: str, default: Any, kind: type, low: float | None = None,
           high: float | None = None, low_open: bool = False) -> Any:
    """A finite number in [low, high] (or (low, high] with `low_open`), or `default` when absent/null."""
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(f"{name}: expected a number, got {_show(value)}", param=name)
    if not math.isfinite(value):
        raise RequestError(f"{name}: must be a finite number, got {value!r}", param=name)
    if kind is int and float(value) != int(value):
        raise RequestError(f"{name}: expected an integer, got {value!r}", param=name)
    if low is not None and (value <= low if low_open else value < low):
        raise RequestError(f"{name}: must be {'>' if low_open else '>='} {low:g}, got {value!r}", param=name)
    if high is not None and value > high:
        raise RequestError(f"{name}: must be <= {high:g}, got {value!r}", param=name)
    return kind(value)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def stops(body: dict[str, Any], limits: ServeLimits) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise RequestError("stop: expected a string or a list of strings", param="stop")
    if len(stop) > limits.max_stop:
        raise RequestError(f"stop: at most {limits.max_stop} strings, got {len(stop)}", param="stop")
    return tuple(s for s in stop if s)


def check_model(body: dict[str, Any], model_name: str) -> None:
    name = body.get("model")
    if name not in (None, model_name):
        raise RequestError(f"The model `{_show(name)}` does not exist; this server serves {model_name!r}",
                           status=404, param="model", code="model_not_found")


def constraint(body: dict[str, Any]) -> Constraint | None:
    """The request's one constraint, from vLLM's parameters or OpenAI's `response_format`."""
    found: list[tuple[str, Constraint]] = []
    structured = body.get("structured_outputs")
    if structured is not None:
        if not isinstance(structured, dict):
            raise RequestError("structured_outputs: expected an object", param="structured_outputs")
        for key in ("choice", "regex", "json"):
            if structured.get(key) is not None:
                found.append((f"structured_outputs.{key}", _one(f"structured_outputs.{key}", key, structured[key])))
        unknown = sorted(k for k, v in structured.items() if v is not None and k not in ("choice", "regex", "json"))
        if unknown:
            raise RequestError(f"structured_outputs: {unknown[0]} is not supported by drover serve "
                               "(choice, regex, json are)", param="structured_outputs")
    for name, kind in (("guided_choice", "choice"), ("guided_regex", "regex"), ("guided_json", "json")):
        if body.get(name) is not None:
            found.append((name, _one(name, kind, body[name])))
    if body.get("guided_grammar") is not None:
        raise RequestError("guided_grammar: not supported by drover serve (guided_choice, guided_regex, "
                           "guided_json and response_format are)", param="guided_grammar")
    fmt = _response_format(body.get("response_format"))
    if fmt is not None:
        found.append(("response_format", fmt))
    if len(found) > 1:
        raise RequestError(f"{found[1][0]}: only one constraint per request (also got {found[0][0]})",
                           param=found[1][0])
    return found[0][1] if found else None


def _one(name: str, kind: str, value: Any) -> Constraint:
    if kind == "choice":
        if not isinstance(value, list) or not value or not all(isinstance(c, str) for c in value):
            raise RequestError(f"{name}: expected a non-empty list of strings", param=name)
        return Constraint(choice=tuple(value))
    if kind == "regex":
        if not isinstance(value, str) or not value:
            raise RequestError(f"{name}: expected a regular expression (a string)", param=name)
        return Constraint(regex=value)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise RequestError(f"{name}: not valid JSON", param=name) from None
    if not isinstance(value, (dict, bool)):
        raise RequestError(f"{name}: expected a JSON schema (an object)", param=name)
    return Constraint.schema(value)  # type: ignore[arg-type]


def _response_format(fmt: Any) -> Constraint | None:
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or not isinstance(fmt.get("type"), str):
        raise RequestError("response_format: expected an object with a type", param="response_format")
    kind = fmt["type"]
    if kind == "text":
        return None
    if kind == "json_object":
        return Constraint.schema({"type": "object"})
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
            raise RequestError("response_format.json_schema: expected {name, schema}", param="response_format")
        return Constraint.schema(spec.get("schema") or {})
    raise RequestError(f"response_format.type: {_show(kind)} is not one of text, json_object, json_schema",
                       param="response_format")


def sampling(body: dict[str, Any], limits: ServeLimits) -> Sampling:
    n = number(body, "n", 1, int, 1, limits.max_n)
    if body.get("max_tokens") is not None:
        max_tokens = number(body, "max_tokens", None, int, 0)
    else:
        max_tokens = number(body, "max_completion_tokens", None, int, 0)
    stream = body.get("stream")
    if stream not in (None, True, False):
        raise RequestError("stream: expected true or false", param="stream")
    options = body.get("stream_options")
    if options is not None and (not isinstance(options, dict) or not stream):
        raise RequestError("stream_options: only an object, and only with stream=true", param="stream_options")
    include = bool((options or {}).get("include_usage"))
    return Sampling(
        max_tokens=max_tokens, temperature=number(body, "temperature", 1.0, float, 0),
        top_p=number(body, "top_p", 1.0, float, 0, 1, low_open=True), n=n, seed=number(body, "seed", None, int),
        stop=stops(body, limits), stream=bool(stream), include_usage=include, constraint=constraint(body))


def parse_chat(body: dict[str, Any], limits: ServeLimits) -> ChatCall:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages):
        raise RequestError("messages: expected a non-empty list of {role, content} strings", param="messages")
    if body.get("best_of") is not None:
        raise RequestError("best_of: not defined for chat completions (use /v1/completions)", param="best_of")
    logprobs = body.get("logprobs")
    if logprobs not in (None, True, False):
        raise RequestError("logprobs: expected true or false on chat completions", param="logprobs")
    top = number(body, "top_logprobs", 0, int, 0, limits.max_logprobs)
    if top and not logprobs:
        raise RequestError("top_logprobs: needs logprobs=true", param="top_logprobs")
    return ChatCall([{"role": m["role"], "content": m["content"]} for m in messages], sampling(body, limits),
                    bool(logprobs), top)


def parse_completion(body: dict[str, Any], limits: ServeLimits, vocab_size: int) -> CompletionCall:
    prompts = prompt_list(body.get("prompt"), limits, vocab_size)
    samp = sampling(body, limits)
    best_of = number(body, "best_of", samp.n, int, 1, limits.max_n)
    if best_of < samp.n:
        raise RequestError(f"best_of: must be >= n ({samp.n}), got {best_of}", param="best_of")
    if best_of > samp.n and samp.stream:
        raise RequestError("best_of: cannot be combined with stream=true", param="best_of")
    echo = body.get("echo")
    if echo not in (None, True, False):
        raise RequestError("echo: expected true or false", param="echo")
    if echo and samp.stream:
        raise RequestError("echo: not supported with stream=true by drover serve", param="echo")
    return CompletionCall(prompts, samp, number(body, "logprobs", None, int, 0, limits.max_logprobs), bool(echo),
                          best_of)


def prompt_list(prompt: Any, limits: ServeLimits, vocab_size: int) -> list[str | list[int]]:
    """OpenAI's four prompt forms: a string, a list of strings, token ids, a list of token-id lists."""
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(_is_id(t) for t in prompt):
        prompts: list[Any] = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        prompts = list(prompt)
    elif isinstance(prompt, list) and prompt and all(isinstance(p, list) and all(_is_id(t) for t in p) for p in prompt):
        prompts = list(prompt)
    else:
        raise RequestError("prompt: expected a string, a list of strings, a list of token ids, or a list of "
                           "token-id lists", param="prompt")
    if len(prompts) > limits.max_prompts:
        raise RequestError(f"prompt: at most {limits.max_prompts} prompts per request, got {len(prompts)}",
                           param="prompt")
    for i, p in enumerate(prompts):
        if isinstance(p, list):
            if not p:
                raise RequestError(f"prompt[{i}]: empty token list", param="prompt")
            bad = next((t for t in p if not 0 <= t < vocab_size), None)
            if bad is not None:
                raise RequestError(f"prompt[{i}]: token id {bad} is outside the vocabulary (0..{vocab_size - 1})",
                                   param="prompt")
    return prompts


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_context(prompt_tokens: int, max_tokens: int | None, context: int, limits: ServeLimits,
                  where: str = "prompt") -> int:
    """The completion budget of one prompt: max_tokens if prompt + max_tokens fits the context
    (else 400, vLLM's message), or the default capped by what the context leaves."""
    if prompt_tokens > context or (max_tokens is not None and prompt_tokens + max_tokens > context):
        asked = f"{prompt_tokens + (max_tokens or 0)} tokens ({prompt_tokens} in the {where}, " \
                f"{max_tokens or 0} in the completion)"
        raise RequestError(f"This model's maximum context length is {context} tokens. However, you requested "
                           f"{asked}. Please reduce the length of the {where} or the completion.",
                           param="max_tokens" if prompt_tokens <= context else where, code="context_length_exceeded")
    if max_tokens is not None:
        return max_tokens
    return min(limits.default_max_tokens, context - prompt_tokens)
