"""Vicuna-80: the original evaluation's totals from the shipped GPT-4 reviews, and the score parser."""

from __future__ import annotations

import pytest

from drover.judges import vicuna
from drover.judges.runner import Judgment
from drover.judges.verdicts import ParseFailure, ScorePair

REVIEWS = vicuna.data_path("review", "vicuna-13b_20230322-clean-lang")

# The Vicuna blog's table (lmsys.org/blog/2023-03-30-vicuna): baseline total : Vicuna-13B total.
BLOG_TOTALS = {
    "review_llama-13b_vicuna-13b.jsonl": (513.0, 694.0),
    "review_alpaca-13b_vicuna-13b.jsonl": (583.0, 704.0),
    "review_bard_vicuna-13b.jsonl": (664.0, 655.5),
    "review_gpt35_vicuna-13b.jsonl": (693.0, 638.0),
}


@pytest.mark.parametrize("name", sorted(BLOG_TOTALS))
def test_shipped_reviews_give_the_original_totals(name: str) -> None:
    totals = vicuna.reviews_totals(REVIEWS / name)
    assert totals["n"] == 80
    assert (totals["total_1"], totals["total_2"]) == BLOG_TOTALS[name]


def test_parser_reads_every_shipped_review_like_its_stored_score() -> None:
    files = sorted(vicuna.data_path("review").glob("*/*.jsonl"))
    assert len(files) == 13
    disagreements = {}
    for path in files:
        totals = vicuna.reviews_totals(path)
        assert totals["failures"] == [], path.name
        if totals["disagreements"]:
            disagreements[path.name] = totals["disagreements"]
    # Question 70's stored scores were fixed by hand and differ from the text in two files
    # ("Assistant 2: 4" in the text, 2 stored); every other review parses to its stored score.
    assert disagreements == {"review_bard_vicuna-13b.jsonl": [69], "review_llama-13b_vicuna-13b.jsonl": [69]}


def test_prompt_variant_follows_the_category() -> None:
    prompts = vicuna.load_prompts()
    assert vicuna.prompt_for(prompts, "coding").prompt_id.endswith("coding")
    assert vicuna.prompt_for(prompts, "math").prompt_id.endswith("math")
    assert vicuna.prompt_for(prompts, "fermi").prompt_id.endswith("default")
    messages = vicuna.prompt_for(prompts, "math").messages("What is 2+2?", "4", "5")
    assert "mathematical proficiency" in messages[1]["content"]
    assert "[The Start of Assistant 1's Answer]\n4\n" in messages[1]["content"]


def test_build_calls_both_orders() -> None:
    questions = vicuna.load_questions()[:3]
    model = {"1": "M1", "2": "M2", "3": "M3"}
    reference = {"1": "R1", "2": "R2"}
    calls = vicuna.build_calls(questions, model, reference)
    assert [c.id for c in calls] == ["1/ab", "1/ba", "2/ab", "2/ba"]
    ab, ba = calls[0].messages[1]["content"], calls[1].messages[1]["content"]
    assert ab.index("R1") < ab.index("M1") and ba.index("M1") < ba.index("R1")
    assert calls[0].decoding == {"temperature": 0.2, "max_tokens": 1024}


def _j(qid: str, order: str, verdict) -> Judgment:
    return Judgment(f"{qid}/{order}", "p", "judge", {}, "", verdict, {"question_id": qid, "order": order,
                                                                      "category": "generic"})


def test_summarize_averages_orders_and_counts_flips() -> None:
    judgments = [
        _j("1", "ab", ScorePair(8, 6)), _j("1", "ba", ScorePair(7, 9)),  # ref first: ref 8 model 6; swapped: model 7 ref 9
        _j("2", "ab", ScorePair(5, 9)), _j("2", "ba", ScorePair(9, 4)),  # model wins in both orders
        _j("3", "ab", ParseFailure("??", "no pair of scores found")), _j("3", "ba", ScorePair(6, 6)),
        _j("4", "ab", ParseFailure("", "empty output")), _j("4", "ba", ParseFailure("", "empty output")),
    ]
    out = vicuna.summarize(judgments)
    m = out["metrics"]
    # model: (6+7)/2 + (9+9)/2 + 6 = 6.5 + 9 + 6; reference: (8+9)/2 + (5+4)/2 + 6
    assert m["total_model"] == pytest.approx(21.5) and m["total_reference"] == pytest.approx(19.0)
    assert m["relative_score"] == pytest.approx(100 * 21.5 / 19.0)
    assert m["n_scored"] == 3 and m["n_unscored"] == 1 and out["breakdown"]["unscored"] == ["4"]
    assert m["order_flip_rate"] == pytest.approx(0.0)  # q1: reference wins in both orders; q2: model in both
    flipped = vicuna.summarize([_j("1", "ab", ScorePair(8, 6)), _j("1", "ba", ScorePair(8, 6))])
    assert flipped["metrics"]["order_flip_rate"] == pytest.approx(100.0)  # the first position always won
    assert out["breakdown"]["label"] == "21.5 : 19 = 113%"
