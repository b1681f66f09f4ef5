"""Judge parsers on realistic malformed outputs, plus the parsers' doctests."""

from __future__ import annotations

import doctest
import importlib

import pytest

from drover.judges.alpaca_eval import parse_logprobs, parse_ranking
from drover.judges.llmbar import parse_choice, parse_cot
from drover.judges.mt_bench import parse_pair_verdict, parse_rating
from drover.judges.verdicts import (Choice, Outcome, ParseFailure, Preference, Rating, ScorePair, Text,
                                    verdict_from_dict)
from drover.judges.vicuna import parse_scores
from drover.completions import Choice as LLMChoice
from drover.completions import Completion, TokenLogprob

MODULES = ["drover.judges.vicuna", "drover.judges.alpaca_eval", "drover.judges.mt_bench", "drover.judges.llmbar",
           "drover.judges.bias", "drover.metrics.winrate", "drover.judges.listwise_eval", "drover.judges.truthfulqa",
           "drover.llm.testing"]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("text,expected", [
    ("9 8\nAssistant 1 gave ...", (9, 8)),
    ("9,8\n...", (9, 8)),
    ("  8.5 9  \n...", (8.5, 9)),
    ("Scores: Assistant 1: 7\nAssistant 2: 9", (7, 9)),
    ("Assistant 1 receives a score of 6 ... Assistant 2 receives a score of 8.", (6, 8)),
    ("Therefore, I would give Assistant 1 a score of 4 and Assistant 2 a score of 9.", (4, 9)),
    ("...\nThe output tuple is (3, 10).", (3, 10)),
])
def test_vicuna_scores(text: str, expected: tuple[float, float]) -> None:
    assert parse_scores(text) == ScorePair(*map(float, expected))


@pytest.mark.parametrize("text", [
    "", "   \n", "Assistant 2 is clearly better.", "Score: 8", "15 20\nout of range",
    "I cannot compare these answers.",
])
def test_vicuna_failures_keep_the_raw_text(text: str) -> None:
    got = parse_scores(text)
    assert isinstance(got, ParseFailure) and got.raw == text and got.reason


@pytest.mark.parametrize("text,expected", [
    ("Rating: [[7]]", 7.0), ("[[10]] is my rating", 10.0), ("Rating: [[6.5]]", 6.5),
    ("The rating is [3] because ...", 3.0),
])
def test_mt_bench_rating(text: str, expected: float) -> None:
    assert parse_rating(text) == Rating(expected)


@pytest.mark.parametrize("text", ["Rating: 7/10", "Rating: [[seven]]", "", "[[11]]", "Rating: [[-1]]"])
def test_mt_bench_rating_failures(text: str) -> None:
    assert isinstance(parse_rating(text), ParseFailure)


def test_mt_bench_pair_verdicts() -> None:
    assert parse_pair_verdict("...so my verdict is [[A]]") == Choice(Outcome.FIRST)
    assert parse_pair_verdict("[[C]]") == Choice(Outcome.TIE)
    for bad in ("A is better", "[A]", "[[D]]", ""):
        assert isinstance(parse_pair_verdict(bad), ParseFailure)


@pytest.mark.parametrize("text,expected", [
    ("[{'model': 'model_1', 'rank': 1}, {'model': 'model_2', 'rank': 2}]", 1.0),
    ('[{"model": "model_2", "rank": 1}, {"model": "model_1", "rank": 2}]', 2.0),
    ("Here is the ranking:\n[\n    {'model': 'model_1', 'rank': 2},\n    {'model': 'model_2', 'rank': 1}\n]", 2.0),
])
def test_alpaca_eval_ranking(text: str, expected: float) -> None:
    assert parse_ranking(text) == Preference(expected)


@pytest.mark.parametrize("text", [
    "model_2 is better",
    "[{'model': 'model_1', 'rank': 1}, {'model': 'model_2', 'rank'",  # cut at max_tokens
    "[{'model': 'model_2', 'rank': 1}]",  # model_1 missing
    "[{'model': 'model_1', 'rank': 0}, {'model': 'model_2', 'rank': 1}]",
    "",
])
def test_alpaca_eval_ranking_failures(text: str) -> None:
    assert isinstance(parse_ranking(text), ParseFailure)


def _lp_completion(token: str, top: dict[str, float] | None) -> Completion:
    logprobs = None if top is None else [TokenLogprob(token, top.get(token, -0.1), top)]
    return Completion(choices=[LLMChoice(token, "length", logprobs)])


def test_alpaca_eval_logprobs() -> None:
    got = parse_logprobs(_lp_completion("m", {"m": -0.1, "M": -2.4, "The": -5.0}))
    import math
    p_m = math.exp(-0.1) / (math.exp(-0.1) + math.exp(-2.4))
    assert got.value == pytest.approx(2 - p_m)
    only_big = parse_logprobs(_lp_completion("M", {"M": -0.01, "Based": -6.0}))
    assert only_big == Preference(2.0)
    assert parse_logprobs(_lp_completion("m", {"m": -0.2}), is_binarize=True) == Preference(1.0)
    assert isinstance(parse_logprobs(_lp_completion("The", {"The": -0.1, "Based": -1.2})), ParseFailure)
    assert "no log-probs" in parse_logprobs(_lp_completion("m", None)).reason
    assert isinstance(parse_logprobs(Completion(choices=[])), ParseFailure)


@pytest.mark.parametrize("text,expected", [
    ("Output (a)", Outcome.FIRST), ("Output (b)", Outcome.SECOND), ("\nOutput (b) is better", Outcome.SECOND),
    ("Output (b)\nOutput (a)", Outcome.SECOND),
])
def test_llmbar_choice(text: str, expected: Outcome) -> None:
    assert parse_choice(text) == Choice(expected)


@pytest.mark.parametrize("text", ["Both outputs are good.", "I prefer (a).", "The better one is Output (a)", ""])
def test_llmbar_choice_failures(text: str) -> None:
    assert isinstance(parse_choice(text), ParseFailure)


def test_llmbar_cot_takes_the_final_claim() -> None:
    text = "Output (b) is better. Wait: Output (a) follows the length limit. Therefore, Output (a) is better."
    assert parse_cot(text) == Choice(Outcome.FIRST)
    assert isinstance(parse_cot("Therefore, both are fine."), ParseFailure)


def test_verdicts_round_trip_and_swap() -> None:
    for verdict in (Choice(Outcome.TIE), ScorePair(3, 7.5), Rating(9), Preference(1.25), Text("q?"),
                    ParseFailure("raw", "why")):
        assert verdict_from_dict(verdict.to_dict()) == verdict
    assert Preference(1.25).swapped() == Preference(1.75)
    assert Choice(Outcome.FIRST).swapped() == Choice(Outcome.SECOND)
    assert Outcome.TIE.swapped() == Outcome.TIE and Outcome.TIE.preference() == 1.5
    assert ScorePair(4, 4).outcome == Outcome.TIE
    with pytest.raises(ValueError):
        Preference(0.0)  # AlpacaEval 1's "0 = tie" never becomes a verdict
