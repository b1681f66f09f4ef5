"""The two record types everything on disk is made of, and their JSONL I/O.

`Conversation`: SFT data, prompts and model outputs (Tülu's message format).
`Ranked`: a prompt with N responses ordered best first (GPT-4-LLM comparison data,
Tuna rankings, DPO pairs with N=2). Pairs are derived from `Ranked`, never stored.

Reading streams line by line and validates every record, reporting
`file:line: field: problem`; writing is atomic (temp file + rename).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

from drover.atomic import atomic_open, strict_dumps
from drover.errors import InputError
from drover.inputs import iter_json_lines  # noqa: F401 - the reader records use; importable from here too

ROLES = ("system", "user", "assistant")
Role = Literal["system", "user", "assistant"]


@dataclass
class Message:
    role: str
    content: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass
class Conversation:
    """A chat: system/user/assistant turns, with where it came from."""

    id: str
    messages: list[Message]
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "messages": [m.to_dict() for m in self.messages],
            "source": self.source,
            "meta": self.meta,
        }

    @property
    def prompt_messages(self) -> list[Message]:
        """The turns before the final assistant turn (the whole chat if none)."""
        if self.messages and self.messages[-1].role == "assistant":
            return self.messages[:-1]
        return list(self.messages)

    @property
    def last_assistant(self) -> str | None:
        for message in reversed(self.messages):
            if message.role == "assistant":
                return message.content
        return None

    @classmethod
    def from_dict(cls, obj: Any, where: tuple[str, int | None] = ("<dict>", None),
                  require_assistant: bool = False) -> "Conversation":
        path, line = where
        _require_object(obj, path, line)
        _no_unknown_keys(obj, {"id", "messages", "source", "meta"}, path, line)
        rid = _require_id(obj, path, line)
        messages = parse_messages(obj.get("messages"), "messages", path, line)
        if require_assistant and not any(m.role == "assistant" for m in messages):
            raise InputError(path, line, "messages", f"record {rid!r} has no assistant turn")
        return cls(rid, messages, _opt_str(obj, "source", path, line), _opt_meta(obj, path, line))


@dataclass
class Response:
    content: str
    score: float | None = None
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"content": self.content, "score": self.score, "source": self.source}


@dataclass
class Ranked:
    """A prompt and N >= 1 responses ordered best first (scores non-increasing)."""

    id: str
    messages: list[Message]
    responses: list[Response]
    reference: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "messages": [m.to_dict() for m in self.messages],
            "responses": [r.to_dict() for r in self.responses],
            "reference": self.reference,
            "meta": self.meta,
        }

    def pairs(self) -> list[tuple[int, int]]:
        """Index pairs (better, worse) for every pair with a strictly higher score.

        Records without scores are taken as strictly ordered by position.
        """
        out = []
        for i in range(len(self.responses)):
            for j in range(i + 1, len(self.responses)):
                si, sj = self.responses[i].score, self.responses[j].score
                if si is None or sj is None or si > sj:
                    out.append((i, j))
        return out

    @classmethod
    def from_dict(cls, obj: Any, where: tuple[str, int | None] = ("<dict>", None)) -> "Ranked":
        path, line = where
        _require_object(obj, path, line)
        _no_unknown_keys(obj, {"id", "messages", "responses", "reference", "meta"}, path, line)
        rid = _require_id(obj, path, line)
        messages = parse_messages(obj.get("messages"), "messages", path, line)
        if messages[-1].role != "user":
            raise InputError(path, line, f"messages[{len(messages) - 1}].role",
                             "the prompt of a Ranked record must end with a user turn")
        raw = obj.get("responses")
        if not isinstance(raw, list) or not raw:
            raise InputError(path, line, "responses", "expected a non-empty list of responses")
        responses: list[Response] = []
        for i, item in enumerate(raw):
            name = f"responses[{i}]"
            if not isinstance(item, dict):
                raise InputError(path, line, name, f"expected an object, got {_typename(item)}")
            _no_unknown_keys(item, {"content", "score", "source"}, path, line, prefix=name + ".")
            content = item.get("content")
            if not isinstance(content, str) or not content.strip():
                raise InputError(path, line, f"{name}.content", "expected a non-empty string")
            score = item.get("score")
            if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
                raise InputError(path, line, f"{name}.score", f"expected a number, got {score!r}")
            if score is not None and score != score:
                raise InputError(path, line, f"{name}.score", "score is NaN")
            src = item.get("source", "")
            if not isinstance(src, str):
                raise InputError(path, line, f"{name}.source", "expected a string")
            responses.append(Response(content, None if score is None else float(score), src))
        scored = [r.score for r in responses if r.score is not None]
        if scored and len(scored) != len(responses):
            raise InputError(path, line, "responses", "either every response has a score or none does")
        for i in range(1, len(responses)):
            prev, cur = responses[i - 1].score, responses[i].score
            if prev is not None and cur is not None and cur > prev:
                raise InputError(path, line, f"responses[{i}].score",
                                 f"responses must be ordered best first ({cur} after {prev})")
        reference = obj.get("reference")
        if reference is not None and not isinstance(reference, str):
            raise InputError(path, line, "reference", "expected a string or null")
        return cls(rid, messages, responses, reference, _opt_meta(obj, path, line))


Record = Union[Conversation, Ranked]
R = TypeVar("R", Conversation, Ranked)


def prompt_of(record: "Record") -> list[Message]:
    """The prompt turns of a record: a Ranked prompt, or a Conversation without its last answer."""
    return list(record.messages) if isinstance(record, Ranked) else record.prompt_messages


def _typename(obj: Any) -> str:
    return {dict: "object", list: "array", str: "string", type(None): "null",
            bool: "boolean", int: "number", float: "number"}.get(type(obj), type(obj).__name__)


def _require_object(obj: Any, path: str, line: int | None) -> None:
    if not isinstance(obj, dict):
        raise InputError(path, line, None, f"expected a JSON object, got {_typename(obj)}")


def _no_unknown_keys(obj: dict, allowed: set[str], path: str, line: int | None, prefix: str = "") -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise InputError(path, line, prefix + unknown[0],
                         f"unknown field (expected one of: {', '.join(sorted(allowed))})")


def _require_id(obj: dict, path: str, line: int | None) -> str:
    rid = obj.get("id")
    if isinstance(rid, int) and not isinstance(rid, bool):
        return str(rid)
    if not isinstance(rid, str) or not rid:
        raise InputError(path, line, "id", "missing or empty (expected a string)")
    return rid


def _opt_str(obj: dict, key: str, path: str, line: int | None) -> str:
    value = obj.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InputError(path, line, key, f"expected a string, got {_typename(value)}")
    return value


def _opt_meta(obj: dict, path: str, line: int | None) -> dict[str, Any]:
    meta = obj.get("meta") or {}
    if not isinstance(meta, dict):
        raise InputError(path, line, "meta", f"expected an object, got {_typename(meta)}")
    return meta


def parse_messages(raw: Any, name: str, path: str | Path, line: int | None) -> list[Message]:
    """Validated chat turns of field `name`; InputError naming file, line and field otherwise."""
    if not isinstance(raw, list) or not raw:
        raise InputError(path, line, name, "expected a non-empty list of messages")
    out = []
    for i, item in enumerate(raw):
        where = f"{name}[{i}]"
        if not isinstance(item, dict):
            raise InputError(path, line, where, f"expected an object, got {_typename(item)}")
        _no_unknown_keys(item, {"role", "content"}, path, line, prefix=where + ".")
        role = item.get("role")
        if role not in ROLES:
            problem = "missing" if role is None else f"unknown role {role!r}"
            raise InputError(path, line, f"{where}.role", f"{problem} (expected one of: {', '.join(ROLES)})")
        content = item.get("content")
        if not isinstance(content, str):
            raise InputError(path, line, f"{where}.content", f"expected a string, got {_typename(content)}")
        if not content.strip():
            raise InputError(path, line, f"{where}.content", "empty content")
        out.append(Message(role, content))
    return out


def read_conversations(path: str | Path, require_assistant: bool = False) -> Iterator[Conversation]:
    """Stream validated `Conversation` records from a JSONL file."""
    for number, obj in iter_json_lines(path):
        yield Conversation.from_dict(obj, (str(path), number), require_assistant=require_assistant)


def read_ranked(path: str | Path) -> Iterator[Ranked]:
    """Stream validated `Ranked` records from a JSONL file."""
    for number, obj in iter_json_lines(path):
        yield Ranked.from_dict(obj, (str(path), number))


def read_records(path: str | Path) -> Iterator[Record]:
    """Stream records of either type, telling them apart by the `responses` field."""
    for _, record in read_numbered_records(path):
        yield record


def read_numbered_records(path: str | Path) -> Iterator[tuple[int, Record]]:
    """(line number in the file, record): blank lines are skipped but still counted, so a
    later error about a record can name its real line."""
    for number, obj in iter_json_lines(path):
        if isinstance(obj, dict) and "responses" in obj:
            yield number, Ranked.from_dict(obj, (str(path), number))
        elif isinstance(obj, dict) and "label" in obj and "completion" in obj and "responses" not in obj:
            raise InputError(path, number, None, "a labelled (unpaired) item, not a record: convert the file "
                             "with `drover convert --from unpaired IN OUT` (KTO reads the result)")
        else:
            yield number, Conversation.from_dict(obj, (str(path), number))


def write_jsonl(path: str | Path, records: Iterable[Record | dict[str, Any]]) -> int:
    """Atomically write records (or plain dicts) as JSONL; returns the count."""
    count = 0
    with atomic_open(path) as handle:
        for record in records:
            obj = record if isinstance(record, dict) else record.to_dict()
            handle.write(strict_dumps(obj, ensure_ascii=False) + "\n")
            count += 1
    return count


class JsonlAppender:
    """Append records one at a time, flushed per line, for resumable stages.

    A resumed stage reads back the ids already present (`done_ids`) and skips them. Only a
    torn tail is ever removed: a last line without its newline that does not parse (the
    process was killed mid-write). A complete last record that merely lacks the newline
    (a file written by another tool) is kept and the newline added. A file that is not
    JSONL of records (a JSON array, a line that is not a JSON object) is refused, never
    rewritten: appending to it would destroy what it holds.
    """

    def __init__(self, path: str | Path, lazy: bool = False):
        """`lazy`: create the file only at the first write (a sidecar of failures or
        rejections that most runs leave empty)."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.done_ids: set[str] = set()
        if self.path.exists():
            self._recover()
        self._handle: Any = None if lazy and not self.path.exists() else open(self.path, "a", encoding="utf-8")

    def _refuse(self, line: int, problem: str) -> InputError:
        return InputError(self.path, line, None, f"{problem}; this output must be a JSONL file of records "
                                                 "drover appends to (give a new --output path)")

    def _recover(self) -> None:
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        tail = lines.pop()  # b"" when the file ends with a newline
        for number, raw in enumerate(lines, start=1):
            if raw.strip():
                self._take(self._parse(raw, number), number)
        if not tail.strip():
            return
        number = len(lines) + 1
        try:
            obj = json.loads(tail)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            with open(self.path, "ab") as handle:  # a complete record: only the newline is missing
                handle.write(b"\n")
            self._take(obj, number)
        elif tail.lstrip().startswith(b"{") and obj is None:
            os.truncate(self.path, len(data) - len(tail))  # a torn record: drop exactly that tail
        else:
            raise self._refuse(number, "is not a JSON object")

    def _parse(self, raw: bytes, number: int) -> dict[str, Any]:
        try:
            obj = json.loads(raw)
        except ValueError:
            raise self._refuse(number, "is not valid JSON") from None
        if not isinstance(obj, dict):
            raise self._refuse(number, f"is a JSON {type(obj).__name__}, not a record object")
        return obj

    def _take(self, obj: dict[str, Any], number: int) -> None:
        if "id" in obj:
            self.done_ids.add(str(obj["id"]))

    def write(self, record: Record | dict[str, Any]) -> None:
        obj = record if isinstance(record, dict) else record.to_dict()
        if self._handle is None:
            self._handle = open(self.path, "a", encoding="utf-8")
        self._handle.write(strict_dumps(obj, ensure_ascii=False) + "\n")
        self._handle.flush()
        self.done_ids.add(str(obj["id"]))

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
