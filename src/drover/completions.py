"""The request and result types of every LLM call (teachers, judges, raters, policies).

A leaf module (it imports nothing from drover) below every layer: the client (`drover.llm`),
its backends and the local engine (`drover.local`) speak it.

A request is either a chat (`messages`) or a raw text prompt (`prompt`, for
base-model benchmarks and pre-formatted chat text). `sample_index` makes the k-th of
several independent samples of the same request a different cache entry (and, when a
seed is set, a different seed: base + k, or base + k*n for n choices, whose choice j an
endpoint seeds with base + k*n + j; the base is drawn from (seed, messages/prompt), so one
seed does not give every prompt the same noise), so sampling is reproducible and resumable. `key` is the caller's label (a record id) and
is *not* part of the cache key.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class Constraint:
    """Constrained decoding: the output must be one of `choice`, match `regex`, or be JSON
    valid under `json_schema` (its canonical JSON text, so the value stays hashable).

    Exactly one field is set. Sent to OpenAI-compatible endpoints as vLLM's server names
    them (`guided_choice`, `guided_regex`, `guided_json` / `response_format`), enforced by the
    local backend with a grammar engine; part of the cache key like every decoding field.
    """

    choice: tuple[str, ...] | None = None
    regex: str | None = None
    json_schema: str | None = None

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.choice, self.regex, self.json_schema)) != 1:
            raise ValueError("a Constraint needs exactly one of choice, regex or json_schema")

    @classmethod
    def schema(cls, schema: dict[str, Any]) -> "Constraint":
        return cls(json_schema=json.dumps(schema, sort_keys=True, separators=(",", ":")))

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Decoding:
    """Decoding parameters; `None` means "the client's configured default"."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] | None = None
    n: int | None = None
    seed: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    constraint: Constraint | None = None


@dataclass(frozen=True)
class Request:
    """One completion request: `messages` (chat) xor `prompt` (raw text)."""

    messages: tuple[tuple[str, str], ...] | None = None  # ((role, content), ...)
    prompt: str | None = None
    decoding: Decoding = field(default_factory=Decoding)
    sample_index: int = 0
    key: str | None = None

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("a Request needs exactly one of messages or prompt")

    @classmethod
    def chat(cls, messages: list[dict[str, str]] | list[tuple[str, str]], key: str | None = None,
             sample_index: int = 0, **decoding: Any) -> "Request":
        pairs = tuple((m["role"], m["content"]) if isinstance(m, dict) else (m[0], m[1]) for m in messages)
        if "stop" in decoding and decoding["stop"] is not None:
            decoding["stop"] = tuple(decoding["stop"])
        return cls(messages=pairs, decoding=Decoding(**decoding), sample_index=sample_index, key=key)

    @classmethod
    def text(cls, prompt: str, key: str | None = None, sample_index: int = 0, **decoding: Any) -> "Request":
        if "stop" in decoding and decoding["stop"] is not None:
            decoding["stop"] = tuple(decoding["stop"])
        return cls(prompt=prompt, decoding=Decoding(**decoding), sample_index=sample_index, key=key)

    def message_dicts(self) -> list[dict[str, str]]:
        return [{"role": r, "content": c} for r, c in (self.messages or ())]


@dataclass
class TokenLogprob:
    token: str
    logprob: float
    top: dict[str, float] | None = None  # top alternatives at this position


@dataclass
class Choice:
    text: str
    finish_reason: str | None = None  # "stop" | "length" | ...
    logprobs: list[TokenLogprob] | None = None


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class Completion:
    """The result of one Request: n choices, or an error recorded after retries."""

    choices: list[Choice]
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    cached: bool = False
    latency: float = 0.0
    error: str | None = None
    key: str | None = None
    # Was the output constrained? None: no Constraint asked (or `constraints: off`); False:
    # asked, but the endpoint does not support it, so the text must be parsed as it comes.
    constrained: bool | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def text(self) -> str:
        """The first choice's text ('' on error)."""
        return self.choices[0].text if self.choices else ""

    def to_dict(self) -> dict[str, Any]:
        """Same as `dataclasses.asdict(self)`, written out: it runs once per cached answer."""
        return {
            "choices": [{"text": c.text, "finish_reason": c.finish_reason,
                         "logprobs": None if c.logprobs is None else [
                             {"token": t.token, "logprob": t.logprob, "top": None if t.top is None else dict(t.top)}
                             for t in c.logprobs]} for c in self.choices],
            "usage": {"prompt_tokens": self.usage.prompt_tokens, "completion_tokens": self.usage.completion_tokens},
            "model": self.model, "cached": self.cached, "latency": self.latency, "error": self.error, "key": self.key,
            "constrained": self.constrained,
        }

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> "Completion":
        choices = []
        for c in obj.get("choices", ()):
            lps = c.get("logprobs")
            choices.append(Choice(c["text"], c.get("finish_reason"),
                                  None if lps is None else [TokenLogprob(t["token"], t["logprob"], t.get("top"))
                                                            for t in lps]))
        usage = obj.get("usage")
        return cls(choices, Usage(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)) if usage else Usage(),
                   obj.get("model", ""), obj.get("cached", False), obj.get("latency", 0.0), obj.get("error"),
                   obj.get("key"), obj.get("constrained"))


@dataclass(frozen=True)
class ScoreRequest:
    """Log-probability of `continuation` given `context` (raw text, already formatted)."""

    context: str
    continuation: str
    key: str | None = None


@dataclass
class Score:
    """Per-token and summed log-probs of a continuation; `greedy` if argmax at every token."""

    token_logprobs: list[float]
    tokens: list[str]
    total: float
    greedy: bool
    error: str | None = None

    @property
    def mean(self) -> float:
        return self.total / max(1, len(self.token_logprobs))

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> "Score":
        return cls(token_logprobs=list(obj["token_logprobs"]), tokens=list(obj["tokens"]),
                   total=obj["total"], greedy=obj["greedy"], error=obj.get("error"))


_DECODING_FIELDS = tuple(f.name for f in fields(Decoding))


def _fingerprint_default(value: Any) -> Any:
    return value.to_dict() if isinstance(value, Constraint) else list(value)


def request_fingerprint(identity: dict[str, Any], request: Request, decoding: Decoding) -> str:
    """The cache key: hash of (the LLM's `LLMConfig.identity()`, messages/prompt, resolved
    decoding, sample index). The request's `key` (a caller's label) is not part of it."""
    payload = {
        "llm": identity,
        "messages": request.messages,
        "prompt": request.prompt,
        "decoding": {name: getattr(decoding, name) for name in _DECODING_FIELDS},  # = asdict(), 10x faster
        "sample_index": request.sample_index,
    }
    if payload["decoding"]["constraint"] is None:  # keys written before constraints existed stay valid
        del payload["decoding"]["constraint"]
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=_fingerprint_default)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def score_fingerprint(identity: dict[str, Any], request: ScoreRequest) -> str:
    """The cache key of a scoring request: hash of (the LLM's identity, context, continuation)."""
    payload = {"llm": identity, "kind": "score", "context": request.context, "continuation": request.continuation}
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()
