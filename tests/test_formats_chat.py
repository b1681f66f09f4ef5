"""ShareGPT, Baize and OpenAssistant converters on format-exact samples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drover.cli import main
from drover.formats.base import ConvertOptions, ConvertStats
from drover.formats.chat import TURN_OVERHEAD
from drover.formats.driver import convert_records
from drover.formats.tokens import heuristic_count
from drover.records import read_conversations

SAMPLES = Path(__file__).parent / "data" / "formats"


def convert(fmt: str, path: Path, **options):
    stats = ConvertStats()
    return list(convert_records(fmt, path, ConvertOptions(**options), stats)), stats


def roles(record):
    return [m.role for m in record.messages]


def test_sharegpt_roles_dropped_turns_and_alternation():
    records, stats = convert("sharegpt", SAMPLES / "sharegpt.json")
    by_id = {r.id: r for r in records}
    assert sorted(by_id) == ["sharegpt_abc1", "sharegpt_abc2", "sharegpt_abc3", "sharegpt_abc5"]
    assert roles(by_id["sharegpt_abc1"]) == ["user", "assistant"] * 2
    # system turn dropped
    assert [m.content for m in by_id["sharegpt_abc2"].messages] == ["What is 2 + 2?", "2 + 2 = 4."]
    # leading gpt turn and unanswered final human turn trimmed
    assert by_id["sharegpt_abc3"].messages[0].content == "Write a haiku about rain."
    assert roles(by_id["sharegpt_abc3"]) == ["user", "assistant"]
    # the bing turn is dropped, leaving human, human, gpt: not alternating -> skipped
    assert stats.skipped["bing turns dropped"] == 1 and stats.skipped["system turns dropped"] == 1
    # abc4 (after dropping bing) and abc7 (two gpt turns in a row) do not alternate
    assert stats.skipped["conversations that do not alternate human/gpt"] == 2
    assert stats.skipped["conversations without a complete human/gpt round"] == 1  # abc6 (empty)
    assert stats.read == 7 and stats.written == 4


def test_sharegpt_split_by_token_budget():
    raw = json.loads((SAMPLES / "sharegpt.json").read_text())[4]["conversations"]
    rounds = [heuristic_count(raw[i]["value"]) + heuristic_count(raw[i + 1]["value"]) + 2 * TURN_OVERHEAD
              for i in range(0, 6, 2)]
    # a budget that fits any two consecutive rounds but not all three
    budget = max(rounds[0] + rounds[1], rounds[1] + rounds[2])
    assert budget < sum(rounds)
    records, _ = convert("sharegpt", SAMPLES / "sharegpt.json", max_tokens=budget)
    pieces = [r for r in records if r.meta.get("conversation_id") == "abc5"]
    assert [r.id for r in pieces] == ["sharegpt_abc5_0", "sharegpt_abc5_4"]
    assert [len(p.messages) for p in pieces] == [4, 2]
    assert pieces[1].messages[0].content.startswith("Part three please")
    # a round over the budget is dropped, never cut mid-turn
    records, stats = convert("sharegpt", SAMPLES / "sharegpt.json", max_tokens=min(rounds) - 1)
    assert not [r for r in records if r.meta.get("conversation_id") == "abc5"]
    assert stats.skipped["rounds longer than max_tokens"] >= 3
    # no budget: one piece
    records, _ = convert("sharegpt", SAMPLES / "sharegpt.json", max_tokens=None)
    assert "sharegpt_abc5" in {r.id for r in records}


def test_sharegpt_pluggable_counter_and_tokenizer(tmp_path, tiny_model_dir):
    calls = []

    def count(text: str) -> int:
        calls.append(text)
        return 1000

    records, _ = convert("sharegpt", SAMPLES / "sharegpt.json", max_tokens=2500, count_tokens=count)
    assert calls and all(len(r.messages) == 2 for r in records)  # 2 rounds never fit 2,500
    out = tmp_path / "sg.jsonl"
    assert main(["convert", "--from", "sharegpt", "--tokenizer", str(tiny_model_dir), "--max-tokens", "100",
                 str(SAMPLES / "sharegpt.json"), str(out)]) == 0
    assert all(r.id.startswith("sharegpt_") for r in read_conversations(out))


def test_heuristic_counter():
    assert heuristic_count("") == 0
    assert heuristic_count("a b c") == 3
    assert heuristic_count("你好世界") == 4
    assert heuristic_count("x" * 13) == 3


def test_baize_transcripts():
    records, _ = convert("baize", SAMPLES / "baize.json")
    assert [r.id for r in records] == ["baize_0", "baize_1"]
    first = records[0]
    assert roles(first) == ["user", "assistant", "user", "assistant"]
    assert first.messages[0].content == "How do I boil an egg?"
    assert first.messages[3].content == "Boil it for about six minutes instead."
    assert first.meta["topic"] == "How do I boil an egg?"


def test_oasst_every_path_and_top_only():
    records, stats = convert("oasst", SAMPLES / "oasst_ready.trees.jsonl")
    assert [r.id for r in records] == ["oasst1_a1", "oasst1_a2", "oasst1_a4", "oasst1_b1"]
    assert [m.content for m in records[2].messages][1:3] == [
        "Some popular cat names are Luna, Milo and Oliver.", "Which one is the most popular?"]
    assert all(r.messages[-1].role == "assistant" for r in records)
    assert stats.skipped["deleted messages (with their replies)"] == 2
    top, _ = convert("oasst", SAMPLES / "oasst_ready.trees.jsonl", oasst_mode="top")
    assert [r.id for r in top] == ["oasst1_a2", "oasst1_a4", "oasst1_b1"]
    assert top[0].meta["message_tree_id"] == "p0"


@pytest.mark.parametrize("fmt,obj,field", [
    ("sharegpt", {"id": "x", "conversations": [{"from": "robot", "value": "hi"}]}, "conversations[0].from"),
    ("sharegpt", {"id": "x", "conversations": [{"from": "human"}]}, "conversations[0].value"),
    ("sharegpt", {"id": "x", "conversations": "hello"}, "conversations"),
    ("baize", {"topic": "t", "input": 7}, "input"),
    ("oasst", {"message_tree_id": "t", "prompt": {"role": "assistant", "text": "hi", "replies": []}}, "prompt.role"),
    ("oasst", {"message_tree_id": "t", "prompt": {"role": "prompter", "text": "hi", "replies": [
        {"role": "prompter", "text": "again", "replies": []}]}}, "prompt.replies[0].role"),
])
def test_chat_malformed_items_name_line_and_field(tmp_path, capsys, fmt, obj, field):
    path = tmp_path / "bad.jsonl"
    good = {"sharegpt": {"id": "ok", "conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]},
            "baize": {"topic": "t", "input": "[|Human|] a\n[|AI|] b"},
            "oasst": {"message_tree_id": "ok", "prompt": {"role": "prompter", "text": "a", "replies": []}}}[fmt]
    path.write_text(json.dumps(good) + "\n" + json.dumps(obj) + "\n")
    assert main(["convert", "--from", fmt, str(path), str(tmp_path / "out.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{path}:2: {field}:" in err
    assert not (tmp_path / "out.jsonl").exists()
