"""drover's own extraction options (GSM `match=value`, BBH `match=lenient`, letters); the
reference (default) behaviour is pinned in tests/test_protocol_extraction.py."""

from __future__ import annotations

import doctest

import pytest

import drover.metrics.classification as classification
import drover.metrics.extract as extract
from drover.metrics.classification import argmax, mc1, mc2
from drover.metrics.extract import choice_letter, gsm_reference, last_number, numbers_equal
from drover.metrics.extract import lenient_bbh_correct as bbh_match
from drover.metrics.extract import lenient_bbh_prediction as answer_after_phrase


def test_doctests():
    assert doctest.testmod(extract).failed == 0
    assert doctest.testmod(classification).failed == 0


@pytest.mark.parametrize("output,expected", [
    ("Janet sells 16 - 3 - 4 = 9 duck eggs a day. She makes 9 * 2 = $18 every day.\nThe answer is 18.", "18"),
    ("The total is $1,234,567.", "1234567"),
    ("It drops to -5 degrees, then rises by 3. The answer is -2.", "-2"),
    ("He ran 3.5 miles on day 1-2.", "2"),
    ("So she has .5 of a pie left.", ".5"),
    ("The answer is 42.\n\nQuestion: Tom has 7 apples", "7"),  # the last number, as the paper (no stop cut)
    ("No numbers at all.", None),
    ("Costs rose 12% to 1,050,000.00 dollars", "1050000.00"),
    ("The values are 1,2,18", "18"),  # not a thousands group: three numbers
])
def test_gsm_last_number(output, expected):
    assert last_number(output) == expected


def test_gsm_reference_and_comparison():
    assert gsm_reference("He has 2 + 3 = <<2+3=5>>5 apples.\n#### 5") == "5"
    assert gsm_reference("#### 1,000") == "1000"
    assert numbers_equal("18.0", "18") and numbers_equal("1000", "1,000")
    assert not numbers_equal("18.5", "18") and not numbers_equal(None, "18") and not numbers_equal("abc", "1")


@pytest.mark.parametrize("output,expected", [
    ("Let's think step by step. 2 + 2 = 4. So the answer is 4.", "4"),
    ("First... So the answer is (C).\n\nQ: another question. So the answer is (A).", "(C)"),
    ("The answer is: valid.", "valid"),
    ("So the answer is ] ) }.", "] ) }"),
    ("no phrase here\nsecond line", "no phrase here"),
    ("So The Answer Is No", "No"),
    ("", ""),
])
def test_bbh_answer_after_phrase(output, expected):
    assert answer_after_phrase(output) == expected


def test_bbh_match():
    assert bbh_match("(A)", "(A)") and bbh_match("A", "(A)") and bbh_match("(a) 12/14/1937", "(A)")
    assert not bbh_match("(B)", "(A)") and not bbh_match("", "(A)") and not bbh_match("AB", "(A)")
    assert bbh_match("  True ", "True") and bbh_match("no", "No")
    assert bbh_match("] ) }", "] ) }") and not bbh_match(") }", "] ) }")  # punctuation is kept
    assert bbh_match("-25", "-25") and not bbh_match("25", "-25")


@pytest.mark.parametrize("output,expected", [
    (" B", "B"), (" B. Paris", "B"), ("(C) because", "C"), ("The answer is D.", "D"),
    ("I think the answer is (A), not B", "A"), ("All of the above", None), ("Answer: C", "C"), ("BCD", None),
])
def test_choice_letter(output, expected):
    assert choice_letter(output) == expected


def test_mmlu_argmax_and_truthfulqa_mc():
    # " A".." D" log-likelihoods: the highest wins, the first on ties (numpy.argmax).
    assert argmax([-3.2, -1.1, -1.1, -9.0]) == 1
    assert argmax([-0.5]) == 0
    assert mc1([-1.0, -5.0], [-2.0, -3.0]) == 1.0
    assert mc1([-1.0, -5.0], [-2.0, -3.0], best_index=1) == 0.0
    # MC2 = sum p(true) / sum p(all) with p = exp(logprob).
    import math

    true, false = [math.log(0.2), math.log(0.1)], [math.log(0.3), math.log(0.4)]
    assert mc2(true, false) == pytest.approx(0.3)
    assert mc2([-2000.0], [-2001.0]) == pytest.approx(1 / (1 + math.exp(-1)))  # no underflow
