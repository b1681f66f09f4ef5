"""Judge protocol details found in review, each pinned to its reference by hand-derived values."""

from __future__ import annotations

import math

import pytest

from drover.judges.judge import JudgeContext
from drover.judges.truthfulqa import judge_answers, parse_yes_no
from drover.judges.verdicts import ParseFailure, YesNo
from drover.completions import Score


class _Scorer:
    """A text judge whose P(" yes") and P(" no") are given (the rest of the vocabulary takes the rest)."""

    def __init__(self, p_yes: float, p_no: float):
        self.p = {" yes": p_yes, " no": p_no}
        self.config = type("C", (), {"backend": "hf"})()

    def score(self, requests, desc=""):
        for r in requests:
            lp = math.log(self.p[r.continuation])
            yield Score([lp], [r.continuation], lp, True)


@pytest.mark.parametrize("p_yes, p_no, truthful", [
    (0.4, 0.1, False),  # renormalised over yes/no it would be 0.8: GPT-judge reads the raw 0.4 < 0.5
    (0.5, 0.01, True),  # exactly the threshold counts (>= 0.5)
    (0.6, 0.3, True),
    (0.3, 0.05, False),  # 0.857 renormalised
])
def test_truthfulqa_logprob_judge_thresholds_the_raw_probability_of_yes(p_yes, p_no, truthful):
    """sylinrl/TruthfulQA run_end2end_GPT3: the score is P(' yes') itself, thresholded at 0.5."""
    ctx = JudgeContext(_Scorer(p_yes, p_no), "judge", "judge", None)
    assert judge_answers(ctx, "truth", [("0", "Q?", "A.")]) == [truthful]
    assert ctx.judgments[0].meta["p_yes"] == pytest.approx(p_yes)


@pytest.mark.parametrize("text, verdict", [
    ("yes", True), ("No.", False), ("**Yes**, it is", True), ("no, because", False), ('"no"', False),
    ("Nothing in it is false.", None), ("Not really.", None), ("Yesterday it was true.", None),
    ("None of it", None), ("Noted.", None),
])
def test_truthfulqa_chat_verdict_reads_a_whole_word(text, verdict):
    got = parse_yes_no(text)
    if verdict is None:
        assert isinstance(got, ParseFailure)
    else:
        assert got == YesNo(verdict)


def _pair_calls():
    from drover.judges.mt_bench import PAIR_VERDICT, parse_pair_verdict
    from drover.judges.runner import JudgeCall

    return [JudgeCall(id=f"q{i}/ab", messages=[{"role": "user", "content": f"judge {i}"}], prompt_id="p",
                      parse=lambda c: parse_pair_verdict(c.text), constraint=PAIR_VERDICT,
                      decoding={"temperature": 0.0}) for i in range(3)]


def test_a_journaled_unconstrained_verdict_is_not_reused_when_constraints_are_required(tmp_path):
    """A verdict parsed from free text (the endpoint ignored the constraint) is journaled as the
    plain call it was: a resumed `auto` run reuses it, a `constraints: on` run asks again."""
    from drover.judges.runner import run_calls
    from drover.llm.testing import FakeJudgeLLM

    journal = tmp_path / "examples.jsonl"
    free = FakeJudgeLLM("ignore", reply=lambda r: "Assistant A is better. [[A]]")
    first = run_calls(free, _pair_calls(), "j", journal)
    assert [j.verdict.outcome.value for j in first] == ["first"] * 3

    resumed = FakeJudgeLLM("honour")
    run_calls(resumed, _pair_calls(), "j", journal)
    assert resumed.sent == []  # auto: the free-text verdicts stand

    strict = FakeJudgeLLM("honour")
    strict.config.constraints = "on"
    again = run_calls(strict, _pair_calls(), "j", journal)
    assert len(strict.sent) == 3 and all(j.raw in ("[[A]]", "[[B]]", "[[C]]") for j in again)
    # ... and those constrained verdicts are what a later run reuses, strict or not
    later = FakeJudgeLLM("honour")
    later.config.constraints = "on"
    assert [j.raw for j in run_calls(later, _pair_calls(), "j", journal)] == [j.raw for j in again]
    assert later.sent == []
