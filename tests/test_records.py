"""Records: validation errors name file:line and field; writing is atomic; reading streams."""

from __future__ import annotations

import json

import pytest

from drover.errors import InputError
from drover.records import (
    Conversation, JsonlAppender, Message, Ranked, Response, read_conversations, read_ranked,
    read_records, write_jsonl,
)


def _write(tmp_path, lines, name="in.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD = {"id": "a", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}


def test_round_trip(tmp_path):
    conv = Conversation("x", [Message("system", "s"), Message("user", "u"), Message("assistant", "a")],
                        source="t", meta={"k": 1})
    ranked = Ranked("r", [Message("user", "q")], [Response("good", 9.0, "m1"), Response("bad", 3, "m2")],
                    reference="ref")
    write_jsonl(tmp_path / "c.jsonl", [conv])
    write_jsonl(tmp_path / "r.jsonl", [ranked])
    assert list(read_conversations(tmp_path / "c.jsonl")) == [conv]
    assert list(read_ranked(tmp_path / "r.jsonl")) == [ranked]
    assert [type(r) for r in read_records(tmp_path / "r.jsonl")] == [Ranked]


@pytest.mark.parametrize(
    "line, field, problem",
    [
        ("{not json", None, "invalid JSON"),
        ('["a"]', None, "expected a JSON object"),
        (json.dumps({"messages": GOOD["messages"]}), "id", "missing"),
        (json.dumps({**GOOD, "messages": [{"role": "bot", "content": "x"}]}), "messages[0].role", "unknown role"),
        (json.dumps({**GOOD, "messages": [{"content": "x"}]}), "messages[0].role", "missing"),
        (json.dumps({**GOOD, "messages": [{"role": "user", "content": "  "}]}), "messages[0].content", "empty"),
        (json.dumps({**GOOD, "messages": [{"role": "user", "content": 3}]}), "messages[0].content", "expected a string"),
        (json.dumps({**GOOD, "extra": 1}), "extra", "unknown field"),
        (json.dumps({**GOOD, "messages": []}), "messages", "non-empty"),
    ],
)
def test_conversation_errors_name_line_and_field(tmp_path, line, field, problem):
    path = _write(tmp_path, [json.dumps(GOOD), line])
    with pytest.raises(InputError) as info:
        list(read_conversations(path))
    err = info.value
    assert err.line == 2 and err.field == field and problem in err.problem
    assert str(err).startswith(f"{path}:2: ")


def test_missing_assistant_when_required(tmp_path):
    path = _write(tmp_path, [json.dumps({"id": "q", "messages": [{"role": "user", "content": "hi"}]})])
    assert len(list(read_conversations(path))) == 1
    with pytest.raises(InputError, match="no assistant turn"):
        list(read_conversations(path, require_assistant=True))


@pytest.mark.parametrize(
    "responses, field, problem",
    [
        ([{"content": "a", "score": "high"}], "responses[0].score", "expected a number"),
        ([{"content": "a", "score": 1}, {"content": "b", "score": 5}], "responses[1].score", "ordered best first"),
        ([{"content": "a", "score": 1}, {"content": "b"}], "responses", "every response"),
        ([], "responses", "non-empty"),
        ([{"content": ""}], "responses[0].content", "non-empty"),
    ],
)
def test_ranked_errors(tmp_path, responses, field, problem):
    rec = {"id": "r", "messages": [{"role": "user", "content": "q"}], "responses": responses}
    path = _write(tmp_path, [json.dumps(rec)])
    with pytest.raises(InputError) as info:
        list(read_ranked(path))
    assert info.value.field == field and problem in info.value.problem and info.value.line == 1


def test_empty_and_binary_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(InputError, match="empty file"):
        list(read_conversations(empty))
    garbage = tmp_path / "bin.jsonl"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff")
    with pytest.raises(InputError) as info:
        list(read_conversations(garbage))
    assert info.value.line == 1
    with pytest.raises(InputError, match="not found"):
        list(read_conversations(tmp_path / "nope.jsonl"))


def test_reading_streams(tmp_path):
    """A bad line far down is only reached after earlier records were yielded."""
    path = _write(tmp_path, [json.dumps({**GOOD, "id": str(i)}) for i in range(1000)] + ["{bad"])
    it = read_conversations(path)
    assert next(it).id == "0"
    with pytest.raises(InputError) as info:
        list(it)
    assert info.value.line == 1001


def test_pairs_skip_ties():
    ranked = Ranked("r", [Message("user", "q")],
                    [Response("a", 9), Response("b", 7), Response("c", 7), Response("d", 1)])
    assert ranked.pairs() == [(0, 1), (0, 2), (0, 3), (1, 3), (2, 3)]


def test_atomic_write_keeps_old_file_on_crash(tmp_path):
    path = tmp_path / "out.jsonl"
    write_jsonl(path, [Conversation.from_dict(GOOD)])

    def boom():
        yield Conversation.from_dict(GOOD)
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        write_jsonl(path, boom())
    assert [c.id for c in read_conversations(path)] == ["a"]
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_appender_recovers_torn_line(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text(json.dumps({**GOOD, "id": "1"}) + "\n" + '{"id": "2", "mess')
    with JsonlAppender(path) as out:
        assert out.done_ids == {"1"}
        out.write({**GOOD, "id": "3"})
    assert [c.id for c in read_conversations(path)] == ["1", "3"]
