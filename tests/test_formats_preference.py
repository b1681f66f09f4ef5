"""Ranked converters (GPT-4-LLM comparison, HH-RLHF, LLMBar) and evaluation-set converters."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from drover.formats.base import ConvertOptions, ConvertStats
from drover.formats.driver import convert_records
from drover.formats.preference import parse_hh_transcript
from drover.records import Ranked
from drover.shipped import data_path

SAMPLES = Path(__file__).parent / "data" / "formats"


def convert(fmt: str, path: Path, **options):
    stats = ConvertStats()
    return list(convert_records(fmt, path, ConvertOptions(**options), stats)), stats


def test_gpt4llm_comparison_v1_keeps_preferred_first():
    records, _ = convert("gpt4llm-comparison", SAMPLES / "gpt4llm_comparison_v1.json")
    assert all(isinstance(r, Ranked) for r in records)
    assert records[1].messages[0].content == "What is the capital of France?"
    assert [r.content for r in records[1].responses] == ["The capital of France is Paris.", "France's capital is Lyon."]
    assert all(r.score is None for r in records[1].responses)
    assert records[1].pairs() == [(0, 1)] and records[0].meta["version"] == 1


def test_gpt4llm_comparison_v2_sorted_best_first_stable():
    records, _ = convert("gpt4llm-comparison", SAMPLES / "gpt4llm_comparison_v2.json")
    assert [r.score for r in records[0].responses] == [10.0, 3.0, 1.0]
    second = records[1]
    assert [(r.content, r.score) for r in second.responses] == [
        ("Red is a primary color.", 9.0), ("Blue.", 9.0), ("Green.", 4.0)]
    assert second.pairs() == [(0, 2), (1, 2)]  # equal scores give no pair


def test_hh_rlhf_harmless_test_real_file():
    path = data_path("hh_rlhf", "harmless-base", "test.jsonl.gz")
    raw = [json.loads(line) for line in gzip.decompress(path.read_bytes()).decode().splitlines()]
    records, stats = convert("hh-rlhf", path)
    assert stats.read == len(raw) == 2312
    assert len(records) + sum(stats.skipped.values()) == len(raw)
    assert len(records) > 2300
    first = records[0]
    assert first.id == "hh_rlhf_0"
    assert [m.role for m in first.messages] == ["user", "assistant", "user", "assistant", "user"]
    assert first.messages[0].content == "what are some pranks with a pen i can do?"
    assert [r.source for r in first.responses] == ["chosen", "rejected"]
    # the transcript is rebuilt exactly from prompt + chosen response
    rebuilt = "".join(f"\n\n{'Human' if m.role == 'user' else 'Assistant'}: {m.content}"
                      for m in first.messages + [type(first.messages[0])("assistant", first.responses[0].content)])
    assert rebuilt == raw[0]["chosen"]
    assert all(r.messages[-1].role == "user" and len(r.responses) == 2 for r in records)


def test_hh_transcript_parsing_merges_repeated_speaker_and_rejects_bad_start():
    turns = parse_hh_transcript("\n\nHuman: a\n\nAssistant: b\n\nAssistant: c\n\nHuman: d\n\nAssistant: e")
    assert [(m.role, m.content) for m in turns] == [
        ("user", "a"), ("assistant", "b\n\nc"), ("user", "d"), ("assistant", "e")]
    with pytest.raises(ValueError, match="start"):
        parse_hh_transcript("Hello\n\nAssistant: x")
    with pytest.raises(ValueError, match="end with an Assistant"):
        parse_hh_transcript("\n\nHuman: a\n\nAssistant: b\n\nHuman: c")


def test_llmbar_real_file_better_first():
    path = data_path("llmbar", "LLMBar", "Natural", "dataset.json")
    raw = json.loads(path.read_text())
    records, _ = convert("llmbar", path, source="llmbar_natural")
    assert len(records) == len(raw) == 100
    for rec, item in zip(records, raw):
        assert rec.responses[0].content == item[f"output_{item['label']}"]
        assert rec.responses[1].content == item[f"output_{3 - item['label']}"]
        assert rec.responses[0].source == f"output_{item['label']}" and rec.meta["label"] == item["label"]
    assert {r["label"] for r in raw} == {1, 2}


def test_alpaca_eval_outputs_pair_up_by_id():
    base, _ = convert("alpaca-eval", data_path("alpaca_eval", "results", "gpt4_1106_preview", "model_outputs.json"))
    old, stats = convert("alpaca-eval", data_path("alpaca_eval", "results", "text_davinci_003", "model_outputs.json"))
    assert len(base) == 805 and base[0].source == "gpt4_1106_preview"
    # All 805 prompts: the two empty text_davinci_003 outputs become prompt-only records, not dropped rows.
    assert len(old) == 805 and not stats.skipped and old[0].source == "text_davinci_003"
    assert sum(len(r.messages) == 1 for r in old) == 2
    base_by_id = {r.id: r for r in base}
    for rec in old:
        assert rec.messages[0].content == base_by_id[rec.id].messages[0].content
    datasets = {r.meta["dataset"] for r in base}
    assert datasets == {"helpful_base", "koala", "oasst", "selfinstruct", "vicuna"}


def test_vicuna_and_mt_bench_questions_as_prompts():
    vicuna, _ = convert("vicuna-questions", data_path("vicuna80", "question.jsonl"))
    assert len(vicuna) == 80 and vicuna[0].id == "vicuna_1"
    assert [m.role for m in vicuna[0].messages] == ["user"] and vicuna[0].meta["category"] == "generic"
    judge, _ = convert("vicuna-questions", data_path("vicuna80", "llm_judge_vicuna_bench", "question.jsonl"))
    assert [r.messages[0].content for r in judge] == [r.messages[0].content for r in vicuna]
    mt, _ = convert("mt-bench-questions", data_path("mt_bench", "question.jsonl"))
    assert len(mt) == 80 and mt[0].id == "mt_bench_81"
    assert all(len(r.meta["turns"]) == 2 and r.messages[0].content == r.meta["turns"][0] for r in mt)
    assert sum("reference" in r.meta for r in mt) == 39


def test_every_shipped_llmbar_set_converts():
    from drover.shipped import get_dataset

    for name in ("llmbar_natural", "llmbar_adversarial", "llmbar_casestudy", "llmbar_processed"):
        dataset = get_dataset(name)
        total = 0
        for path in dataset.files():
            records, stats = convert("llmbar", path, source=path.parent.name)
            assert stats.read == len(records) + sum(stats.skipped.values())
            assert all(r.id.startswith(path.parent.name + "_") for r in records)
            total += stats.read
        assert total == dataset.records()
