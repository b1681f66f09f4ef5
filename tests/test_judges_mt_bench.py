"""MT-bench: prompt selection (reference-guided categories, turns) and FastChat's pairwise rule."""

from __future__ import annotations

from drover.judges import mt_bench
from drover.judges.runner import Judgment
from drover.judges.verdicts import Choice, Outcome, ParseFailure, Rating


def _answers() -> dict[str, list[str]]:
    return {str(q["question_id"]): [f"first-{q['question_id']}", f"second-{q['question_id']}"]
            for q in mt_bench.load_questions()}


def test_single_grading_uses_references_for_math_reasoning_coding() -> None:
    calls = mt_bench.build_single_calls(_answers())
    assert len(calls) == 160
    by_id = {c.id: c for c in calls}
    math_t2 = by_id["111/t2"]
    assert math_t2.prompt_id == "mt_bench/single-math-v1-multi-turn"
    refs = mt_bench.load_references()["111"]
    text = math_t2.messages[1]["content"]
    assert refs[0] in text and refs[1] in text and "second-111" in text
    assert by_id["81/t1"].prompt_id == "mt_bench/single-v1" and "Reference" not in by_id["81/t1"].messages[1]["content"]
    assert by_id["81/t1"].decoding == {"temperature": 0.0, "max_tokens": 2048}
    assert sum(c.prompt_id.startswith("mt_bench/single-math") for c in calls) == 60


def test_pairwise_orders_show_the_answers_swapped() -> None:
    a = _answers()
    b = {k: [v[0].replace("first", "B1"), v[1].replace("second", "B2")] for k, v in a.items()}
    calls = {c.id: c for c in mt_bench.build_pairwise_calls(a, b)}
    ab, ba = calls["90/t1/ab"].messages[1]["content"], calls["90/t1/ba"].messages[1]["content"]
    assert ab.index("first-90") < ab.index("B1-90") and ba.index("B1-90") < ba.index("first-90")
    assert calls["125/t2/ab"].prompt_id == "mt_bench/pair-math-v1-multi-turn"


def _j(qid: str, turn: int, order: str, verdict) -> Judgment:
    return Judgment(f"{qid}/t{turn}/{order}", "p", "j", {}, "", verdict,
                    {"question_id": qid, "turn": turn, "order": order, "category": "writing"})


def test_pairwise_inconsistent_orders_are_ties() -> None:
    A, B, C = Choice(Outcome.FIRST), Choice(Outcome.SECOND), Choice(Outcome.TIE)
    judgments = [
        _j("81", 1, "ab", A), _j("81", 1, "ba", B),  # A wins in both orders
        _j("82", 1, "ab", A), _j("82", 1, "ba", A),  # position bias: inconsistent -> tie
        _j("83", 1, "ab", B), _j("83", 1, "ba", A),  # B wins in both orders
        _j("84", 1, "ab", C), _j("84", 1, "ba", C),
        _j("85", 1, "ab", A), _j("85", 1, "ba", ParseFailure("x", "no [[A]], [[B]] or [[C]] found")),
    ]
    m = mt_bench.summarize_pairwise(judgments)["metrics"]
    assert (m["wins"], m["losses"], m["ties"], m["inconsistent"], m["n_failed"]) == (1, 1, 2, 1, 1)
    assert m["win_rate"] == 50.0


def test_single_summary_per_turn() -> None:
    js = [Judgment("81/t1", "p", "j", {}, "", Rating(8), {"question_id": "81", "turn": 1, "category": "writing"}),
          Judgment("81/t2", "p", "j", {}, "", Rating(6), {"question_id": "81", "turn": 2, "category": "writing"}),
          Judgment("111/t1", "p", "j", {}, "", ParseFailure("", "no [[rating]] found"),
                   {"question_id": "111", "turn": 1, "category": "math"})]
    out = mt_bench.summarize_single(js)
    assert out["metrics"]["score"] == 7.0 and out["metrics"]["score_turn2"] == 6.0
    assert out["metrics"]["n_failed"] == 1 and out["breakdown"]["per_category"] == {"writing": 7.0}
