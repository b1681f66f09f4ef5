"""The loop every judge shares: prompts -> `LLM.run` -> parse -> one record per call.

A judge module turns its data into `JudgeCall`s (messages, decoding, a parser, the
metadata it needs later, the `Constraint` its verdict obeys). `run_calls` sends them
through the one LLM client (concurrent, cached) and keeps, per call: the raw output, the
typed verdict, the prompt id, the judge model, the decoding settings and the call's
content key. Records are appended to an examples JSONL as they arrive; a re-run reads the
finished ones back and sends only the rest (and the LLM cache makes even those free when
they were answered before the crash). A stored record is reused only when its key - the
digest of (judge identity, prompt id, messages, decoding, constraint, and the judge LLM's
decoding defaults that fill what the call leaves unset: a seed, top_p) - equals the call's:
the messages hold the answers judged, so changed answers under the same ids are re-judged.
A verdict the endpoint gave without its constraint is journaled under the plain call's key
(the call it really was), so `constraints: on` never reuses it. A call whose request failed after the client's retries is returned with
`error` set but not written, so the next run retries it. Parse failures are kept, typed
(`ParseFailure`), counted and listed - never dropped or guessed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from drover.identity import digest
from drover.judges.verdicts import ParseFailure, Verdict, verdict_from_dict
from drover.completions import Completion, Constraint, Request
from drover.records import JsonlAppender


class LLMLike(Protocol):
    def run(self, requests: Iterable[Request], desc: str = "", total: int | None = None) -> Iterable[Completion]: ...


@dataclass
class JudgeCall:
    """One judge request; `id` is unique within a judging job (e.g. "q12/ab")."""

    id: str
    messages: list[dict[str, str]]
    prompt_id: str
    parse: Callable[[Completion], Verdict]
    decoding: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    constraint: Constraint | None = None  # the verdict's shape, asked of endpoints that can enforce it

    def content_key(self, judge: Any, constrained: bool = True, defaults: dict[str, Any] | None = None) -> str:
        """What decides "judged already": judge identity, prompt, messages, decoding, constraint.

        `constrained=False`: the key of the same call answered without its constraint (an
        endpoint that cannot enforce it, or `constraints: off`) - the plain call it was.
        `defaults`: the judge LLM's decoding defaults that fill what `decoding` leaves unset
        (`filled_defaults`: a seed, top_p); keyed only when there are any, so the keys of
        calls judged without them stay as they were."""
        constraint = self.constraint if constrained else None
        payload = {"judge": judge, "prompt_id": self.prompt_id, "messages": self.messages,
                   "decoding": self.decoding, "constraint": None if constraint is None else constraint.to_dict()}
        if defaults:
            payload["defaults"] = defaults
        return digest(payload)


@dataclass
class Judgment:
    """The record of one judge call (a line of the examples JSONL)."""

    id: str
    prompt_id: str
    judge: str
    decoding: dict[str, Any]
    raw: str
    verdict: Verdict | None
    meta: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    cached: bool = False
    usage: dict[str, int] = field(default_factory=dict)
    key: str = ""  # JudgeCall.content_key of the call that produced it
    constraint: dict[str, Any] | None = None

    @property
    def failed(self) -> bool:
        """No usable verdict: a request error or a parse failure."""
        return self.verdict is None or isinstance(self.verdict, ParseFailure)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "prompt_id": self.prompt_id, "judge": self.judge, "decoding": self.decoding,
                "raw": self.raw, "verdict": None if self.verdict is None else self.verdict.to_dict(),
                "meta": self.meta, "error": self.error, "usage": self.usage, "key": self.key,
                "constraint": self.constraint}

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> "Judgment":
        verdict = obj.get("verdict")
        return cls(obj["id"], obj.get("prompt_id", ""), obj.get("judge", ""), obj.get("decoding", {}),
                   obj.get("raw", ""), None if verdict is None else verdict_from_dict(verdict),
                   obj.get("meta", {}), obj.get("error"), True, obj.get("usage", {}), obj.get("key", ""),
                   obj.get("constraint"))


def llm_defaults(llm: Any) -> dict[str, Any]:
    """The judge LLM's decoding defaults that differ from drover's built-in ones (a seed, top_p,
    n, stop strings set in its config): they fill what a call's own decoding leaves unset, so
    they change its verdict as much as the call's own settings do."""
    from dataclasses import fields

    from drover.completions import Decoding
    from drover.llm.config import LLMConfig

    config = getattr(llm, "config", None)
    if not isinstance(config, LLMConfig):
        return {}
    mine, builtin = config.defaults(), LLMConfig().defaults()
    return {f.name: getattr(mine, f.name) for f in fields(Decoding)
            if getattr(mine, f.name) != getattr(builtin, f.name)}


def filled_defaults(defaults: dict[str, Any], call: JudgeCall) -> dict[str, Any]:
    """Of `llm_defaults`, those this call does not set itself (its own value wins when sent)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in defaults.items()
            if call.decoding.get(k) is None}


def _read_done(path: Path) -> dict[str, Judgment]:
    out: dict[str, Judgment] = {}
    if not path.exists():
        return out
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                try:
                    judgment = Judgment.from_dict(json.loads(line))
                except (ValueError, KeyError, TypeError):
                    continue  # a torn line: JsonlAppender drops it, the call is re-run
                out[judgment.id] = judgment
    return out


def run_calls(llm: LLMLike, calls: Sequence[JudgeCall], judge: str, examples_path: str | Path | None = None,
              desc: str = "judge", identity: Any = None) -> list[Judgment]:
    """Judge every call (resuming from `examples_path`), returning Judgments in call order.

    `judge` is the label recorded per judgment; `identity` (default: `judge`) is what the
    content keys hold - the endpoint and model, so another judge never reuses a verdict.
    """
    ids = [c.id for c in calls]
    if len(set(ids)) != len(ids):
        raise ValueError("judge call ids must be unique")
    done: dict[str, Judgment] = {}
    appender: JsonlAppender | None = None
    if examples_path is not None:
        done = _read_done(Path(examples_path))
        appender = JsonlAppender(examples_path)
    who = judge if identity is None else identity
    defaults = llm_defaults(llm)
    keys = {c.id: c.content_key(who, defaults=filled_defaults(defaults, c)) for c in calls}
    plain = {c.id: c.content_key(who, constrained=False, defaults=filled_defaults(defaults, c)) for c in calls}
    # A stored record is reused only if it came from the same judge, prompt, decoding and answers.
    # A verdict given without its constraint is stored under the plain call's key: reused unless
    # the judge must now be constrained (`constraints: on`). A request that failed is never
    # reused: the next run retries exactly those.
    strict = getattr(getattr(llm, "config", None), "constraints", "auto") == "on"
    accepted = {c.id: {keys[c.id]} if strict else {keys[c.id], plain[c.id]} for c in calls}
    done = {c.id: done[c.id] for c in calls
            if c.id in done and done[c.id].key in accepted[c.id] and done[c.id].error is None}
    todo = [c for c in calls if c.id not in done]
    results: dict[str, Judgment] = {}
    try:
        requests = [Request.chat(c.messages, key=c.id, constraint=c.constraint, **c.decoding) for c in todo]
        for call, completion in zip(todo, llm.run(requests, desc=desc, total=len(requests))):
            honest = keys[call.id] if call.constraint is None or completion.constrained else plain[call.id]
            judgment = _judge_one(call, completion, judge, honest)
            results[call.id] = judgment
            if appender is not None and judgment.error is None:
                appender.write(judgment.to_dict())
    finally:
        if appender is not None:
            appender.close()
    return [results.get(c.id) or _refresh(done[c.id], c) for c in calls]


def _refresh(judgment: Judgment, call: JudgeCall) -> Judgment:
    """A resumed record keeps its stored verdict; metadata comes from the current call."""
    judgment.meta = {**judgment.meta, **call.meta}
    return judgment


def _judge_one(call: JudgeCall, completion: Completion, judge: str, key: str) -> Judgment:
    usage = {"prompt_tokens": completion.usage.prompt_tokens, "completion_tokens": completion.usage.completion_tokens}
    constraint = None if call.constraint is None else call.constraint.to_dict()
    if completion.error is not None:
        return Judgment(call.id, call.prompt_id, judge, call.decoding, "", None, dict(call.meta),
                        completion.error, completion.cached, usage, key, constraint)
    verdict = call.parse(completion)
    return Judgment(call.id, call.prompt_id, judge, call.decoding, completion.text, verdict, dict(call.meta),
                    None, completion.cached, usage, key, constraint)


def failures(judgments: Iterable[Judgment]) -> list[dict[str, Any]]:
    """The failed calls, listed for the result file: id, why, and the start of the raw output
    (the whole output is in the examples file)."""
    out = []
    for j in judgments:
        if j.error is not None:
            out.append({"id": j.id, "kind": "request_error", "reason": j.error, "raw": ""})
        elif isinstance(j.verdict, ParseFailure):
            out.append({"id": j.id, "kind": "parse_failure", "reason": j.verdict.reason, "raw": j.raw[:300]})
    return out
