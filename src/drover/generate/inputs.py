"""Prompts for the generation stages, from whatever instruction file the user has.

Accepted, per line or JSON-array item: Alpaca `{instruction, input?, output?, id?}`,
Self-Instruct tasks `{id, instruction, instances: [{input, output}]}` (one prompt per
instance), `Conversation` records (the turns before the last assistant turn are the
prompt; the last assistant turn is the reference answer) and `Ranked` records.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drover.errors import InputError
from drover.records import Conversation, Message, Ranked


@dataclass
class Prompt:
    id: str
    messages: list[Message]  # the prompt turns, ending with a user turn
    instruction: str | None = None  # Alpaca fields when known (render_alpaca needs them)
    input: str = ""
    reference: str | None = None  # the original answer, if the file has one
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def user_text(self) -> str:
        return self.messages[-1].content


def _join(instruction: str, input_: str) -> str:
    from drover.templates import join_instruction

    return join_instruction(instruction, input_)


def _text(obj: dict, key: str, path: str, line: int, required: bool = True) -> str:
    value = obj.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise InputError(path, line, key, "expected a non-empty string")
    return value


def read_prompts(path: str | Path) -> Iterator[Prompt]:
    """Stream prompts from `path` (JSON array or JSONL, any of the accepted shapes)."""
    from drover.formats.source import read_rows

    name = str(path)
    for number, row in enumerate(read_rows(path)):
        obj = row.obj
        if not isinstance(obj, dict):
            raise InputError(name, row.line, None, "expected a JSON object")
        if "messages" in obj:
            yield _from_record(obj, name, row.line)
        elif "instances" in obj and "instruction" in obj:
            instruction = _text(obj, "instruction", name, row.line)
            instances = obj["instances"] or [{}]
            tid = str(obj.get("id", number))
            for i, inst in enumerate(instances):
                input_ = str(inst.get("input") or "")
                rid = tid if len(instances) == 1 else f"{tid}_{i}"
                yield Prompt(rid, [Message("user", _join(instruction, input_))], instruction, input_,
                             inst.get("output") or None, meta={"instruction": instruction, "input": input_})
        elif "instruction" in obj:
            instruction = _text(obj, "instruction", name, row.line)
            input_ = _text(obj, "input", name, row.line, required=False)
            output = obj.get("output")
            rid = str(obj["id"]) if isinstance(obj.get("id"), (str, int)) else str(number)
            yield Prompt(rid, [Message("user", _join(instruction, input_))], instruction, input_,
                         output if isinstance(output, str) and output.strip() else None,
                         meta={"instruction": instruction, "input": input_})
        else:
            raise InputError(name, row.line, None, "expected an Alpaca record (instruction, input, output), "
                                                   "a Self-Instruct task, or a Conversation/Ranked record")


def _from_record(obj: dict, path: str, line: int) -> Prompt:
    if "responses" in obj:
        ranked = Ranked.from_dict(obj, (path, line))
        messages, reference, source, meta = ranked.messages, ranked.reference, "", ranked.meta
    else:
        conv = Conversation.from_dict(obj, (path, line))
        messages, reference, source, meta = conv.prompt_messages, None, conv.source, conv.meta
        if conv.messages[-1].role == "assistant":
            reference = conv.messages[-1].content
    if not messages or messages[-1].role != "user":
        raise InputError(path, line, "messages", "the prompt turns must end with a user turn")
    instruction = meta.get("instruction") if isinstance(meta.get("instruction"), str) else None
    input_ = meta.get("input") if isinstance(meta.get("input"), str) else ""
    if instruction is None and len(messages) == 1:
        instruction, input_ = messages[0].content, ""
    return Prompt(str(obj["id"]), list(messages), instruction, input_ or "", reference, source, dict(meta))
