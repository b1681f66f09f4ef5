"""Instruction-format converters on the shipped real files and format-exact samples."""

from __future__ import annotations

import json
from pathlib import Path

from drover.formats.base import ConvertOptions, ConvertStats
from drover.formats.driver import convert_records
from drover.shipped import data_path

SAMPLES = Path(__file__).parent / "data" / "formats"


def convert(fmt: str, path: Path, **options) -> tuple[list, ConvertStats]:
    stats = ConvertStats()
    return list(convert_records(fmt, path, ConvertOptions(**options), stats)), stats


def test_code_alpaca_2k_real_file():
    path = data_path("codealpaca", "code_alpaca_2k.json")
    raw = json.loads(path.read_text())
    records, stats = convert("alpaca", path, source="code_alpaca")
    empty = sum(1 for r in raw if not r["output"].strip())
    assert stats.read == len(raw) == 2017
    assert len(records) == len(raw) - empty and stats.skipped["empty output"] == empty
    first = records[0]
    assert first.id == "code_alpaca_0" and first.source == "code_alpaca"
    assert first.messages[0].content == raw[0]["instruction"] + "\n\n" + raw[0]["input"]
    assert first.messages[1].content == raw[0]["output"]
    assert first.meta["instruction"] == raw[0]["instruction"] and first.meta["input"] == raw[0]["input"]
    # an item without input has the bare instruction as its user turn
    i = next(k for k, r in enumerate(raw) if not r["input"].strip() and r["output"].strip())
    rec = next(r for r in records if r.id == f"code_alpaca_{i}")
    assert rec.messages[0].content == raw[i]["instruction"].strip()


def test_self_instruct_seed_and_user_oriented_real_files():
    seeds, _ = convert("self-instruct", data_path("self_instruct", "seed_tasks.jsonl"))
    assert len(seeds) == 175 and seeds[0].id == "seed_task_0"
    assert seeds[0].meta["is_classification"] is False and seeds[0].meta["name"] == "breakfast_suggestion"
    assert [m.role for m in seeds[0].messages] == ["user", "assistant"]
    users, _ = convert("self-instruct", data_path("self_instruct", "user_oriented_instructions.jsonl"))
    assert len(users) == 252 and users[0].meta["motivation_app"] == "Grammarly"
    raw = json.loads(data_path("self_instruct", "user_oriented_instructions.jsonl").read_text().splitlines()[0])
    expected = raw["instruction"].strip() + "\n\n" + raw["instances"][0]["input"].strip()
    assert users[0].messages[0].content == expected
    # Alpaca ships the very same seed tasks
    alpaca, _ = convert("self-instruct", data_path("alpaca", "seed_tasks.jsonl"))
    assert [r.to_dict() for r in alpaca] == [r.to_dict() for r in seeds]


def test_gpt4_alpaca_chinese_sample():
    records, _ = convert("alpaca", SAMPLES / "alpaca_gpt4_zh.json", source="gpt4_alpaca_zh")
    assert [r.id for r in records] == ["gpt4_alpaca_zh_0", "gpt4_alpaca_zh_1"]
    assert records[1].messages[0].content == "将下面的句子翻译成英文。\n\n我喜欢读书。"


def test_dolly_maps_context_to_input_and_keeps_category():
    records, _ = convert("dolly", SAMPLES / "dolly.jsonl")
    assert len(records) == 3
    assert records[0].messages[0].content.startswith("When did Virgin Australia start operating?\n\nVirgin Australia,")
    assert records[0].meta["category"] == "closed_qa"
    assert records[1].messages[0].content == "Which is a species of fish? Tope or Rope"
    assert records[1].messages[1].content == "Tope"


def test_unnatural_constraints_and_reformulations():
    records, _ = convert("unnatural", SAMPLES / "unnatural_full.jsonl")
    assert len(records) == 2
    assert records[0].messages[0].content.endswith("The cat sat on the mat.")  # "None." dropped
    assert records[1].messages[0].content.endswith("[3, 9, 4]\nThe output should be a single integer.")
    with_ref, _ = convert("unnatural", SAMPLES / "unnatural_full.jsonl", reformulations=True)
    assert len(with_ref) == 3
    assert with_ref[2].messages[0].content == "Find the maximum of the numbers in [3, 9, 4]."
    assert with_ref[2].meta["group"] == "reformulations"
    assert len({r.id for r in with_ref}) == 3


def test_flan_and_cot_field_names():
    flan, _ = convert("flan", SAMPLES / "flan.jsonl")
    assert flan[1].messages[1].content == "Ich mag Äpfel." and flan[1].meta["task_name"] == "wmt16_translate"
    cot, _ = convert("flan", SAMPLES / "cot.jsonl", source="cot")
    assert cot[0].id == "cot_0" and cot[0].messages[1].content.endswith("The answer is 11.")


def test_superni_zero_and_few_shot():
    path = SAMPLES / "task999_movie_review_sentiment.json"
    zero, _ = convert("superni", path)
    assert [r.id for r in zero] == ["super_ni_task999-1a2b3c", "super_ni_task999-4d5e6f", "super_ni_task999-7a8b9c"]
    prompt = zero[0].messages[0].content
    assert prompt.startswith("Definition: Given a movie review")
    assert "Positive Example" not in prompt
    assert prompt.endswith("Now complete the following example -\nInput: The best movie I have seen this year.\nOutput:")
    assert zero[1].meta["references"] == ["negative", "Negative"] and zero[1].meta["task"] == path.stem
    two, _ = convert("superni", path, shots=2, max_instances=1)
    assert len(two) == 1 and two[0].id.endswith("_2shot")
    p = two[0].messages[0].content
    assert "Positive Example 1 -\nInput: I loved every minute of this film.\nOutput: positive.\n\n" in p
    assert "Positive Example 2 -\nInput: A dull, lifeless mess.\nOutput: negative." in p
    assert "Positive Example 3" not in p and "Terrible plot" not in p
