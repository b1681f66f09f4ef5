"""Unpaired (labelled) preference data into one-response `Ranked` records, for KTO.

Each item is one response labelled desirable (true) or undesirable (false):

    {"messages": [{"role": "user", "content": ...}, ...], "completion": str, "label": bool}   (drover)
    {"prompt": str | [messages], "completion": str | [one assistant message], "label": bool}  (TRL)

The prompt must end with a user turn. The label becomes the response's score, 1.0 or
0.0, which is how KTO reads a lone response (desirable when score ≥ its threshold, 0.5);
`meta.label` keeps it verbatim. Unknown fields are kept in `meta` as provenance.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from drover.formats.base import Converter, ConvertOptions, ConvertStats, Row, extra_meta, typename
from drover.records import Message, Ranked, Response, parse_messages

FIELDS = ("messages", "prompt", "completion", "label")


def _prompt(row: Row) -> list[Message]:
    obj = row.object()
    if ("messages" in obj) == ("prompt" in obj):
        raise row.error(None, "expected exactly one of `messages` (drover) or `prompt` (TRL)")
    key = "messages" if "messages" in obj else "prompt"
    raw = obj[key]
    if isinstance(raw, str):
        if key == "messages":
            raise row.error(key, "expected a list of messages, got string")
        if not raw.strip():
            raise row.error(key, "empty prompt")
        return [Message("user", raw)]
    messages = parse_messages(raw, row.name(key), row.path, row.line)
    if messages[-1].role != "user":
        raise row.error(f"{key}[{len(messages) - 1}].role", "the prompt must end with a user turn")
    return messages


def _completion(row: Row) -> str:
    raw = row.get("completion", (str, list), expected="a string or a list with one assistant message")
    if isinstance(raw, list):
        turns = parse_messages(raw, row.name("completion"), row.path, row.line)
        if len(turns) != 1 or turns[0].role != "assistant":
            raise row.error("completion", "expected exactly one assistant message")
        return turns[0].content
    return raw


def convert_unpaired(rows: Iterable[Row], opts: ConvertOptions, stats: ConvertStats) -> Iterator[Ranked]:
    source = opts.name("unpaired")
    for number, row in enumerate(rows):
        obj = row.object()
        messages = _prompt(row)
        completion = _completion(row)
        label = obj.get("label")
        if not isinstance(label, bool):
            raise row.error("label", f"expected true or false, got {typename(label)}"
                            + ("" if label is None else f" {str(label)[:20]!r}"))
        if not completion.strip():
            stats.skip("items with an empty completion")
            continue
        yield Ranked(f"{source}_{number}", messages, [Response(completion, 1.0 if label else 0.0, "")], None,
                     {"source": source, "label": label, **extra_meta(obj, FIELDS)})


UNPAIRED = Converter(convert_unpaired, "ranked")
