"""Answer extraction and verdicts pinned to the reference code, case by case.

Every case is (model output, gold, prediction the reference extracts, its verdict) with
the reason in a comment, derived by hand from allenai/open-instruct at the Tülu-1-era
commit cd06c6fb0: `eval/gsm/run_eval.py` (one pass of `(\\d),(\\d)` comma removal, last
match of `[-+]?\\d*\\.\\d+|\\d+`, else the whole output) and `eval/bbh/run_eval.py` (strip,
cut at the first blank line, the text between "So the answer is " and the next period,
else the paragraph), both scored with `evaluate`'s exact_match(ignore_case=True,
ignore_punctuation=True): lower-case, delete string.punctuation, compare exactly.
MMLU extracts nothing (it compares the log-likelihoods of " A".." D"), so it has no cases.
"""

from __future__ import annotations

import pytest

from drover.metrics.extract import (bbh_prediction, bbh_reference_correct, gsm_prediction, gsm_reference,
                                    gsm_reference_correct, last_number, lenient_bbh_correct, lenient_bbh_prediction,
                                    numbers_equal, reference_exact_match)

GSM_CASES = [
    ("Some steps. So the answer is 18.", "18", "18", True),  # plain: last number, period not part of it
    ("The values are 1,2,18", "18", "18", True),  # one comma pass: "12,18" -> the last number is 18, not 1218
    ("Total: $1,234.", "1,234", "1234", True),  # thousands comma removed in output and gold alike
    ("It is 1,000,000 dollars", "1,000,000", "1000000", True),  # non-overlapping pass still joins 3-digit groups
    ("So the answer is 12.00", "12", "12.00", False),  # string compare: "1200" != "12" (no value comparison)
    ("It costs .80", "80", ".80", True),  # punctuation removed: ".80" -> "80" equals the gold "80"
    ("The answer is -21.", "21", "21", True),  # the sign belongs only to the decimal alternative: "-21" -> "21"
    ("The answer is -21.", "-21", "21", True),  # the gold's "-" is punctuation and is deleted too
    ("It fell by -2.5 degrees", "2.5", "-2.5", True),  # decimal keeps its sign, then "-2.5" -> "25" == "25"
    ("so 12.5 in all", "125", "12.5", True),  # "12.5" -> "125": decimals and integers conflate
    ("I don't know", "5", "I don't know", False),  # no number: the whole output is the prediction
    ("5 apples and 7 oranges", "5", "7", False),  # always the LAST number
    ("The answer is 5. Next, 6 more", "5", "6", False),  # a number after the answer wins
    ("pi is 3.14159", "3", "3.14159", False),  # "314159" != "3"
    ("+7", "7", "7", True),  # "+" only attaches to decimals: the integer alternative matches "7"
    ("+7.5", "7.5", "+7.5", True),  # "+7.5" -> "75" == "75"
    ("1.5.3", "3", ".3", True),  # findall gives "1.5" then ".3"; ".3" -> "3"
    ("The answer is 1,5", "15", "15", True),  # a comma between any two digits is dropped
    ("A 10% rise", "10", "10", True),  # the percent sign is not part of the number
    ("It is $18.00.", "18", "18.00", False),  # "1800" != "18"
    ("5,00 euros", "500", "500", True),  # "5,00" -> "500" regardless of grouping
    ("He has 2 1/2 pies", "2.5", "2", False),  # a fraction: the last integer "2" ("1/2" is "1" then "2")
    ("1e3", "1000", "3", False),  # no exponent support: the last integer is "3"
    ("", "0", "", False),  # empty output: the prediction is "" and misses
    ("The answer is ٣", "3", "٣", False),  # Python's \d matches Arabic-Indic digits; "٣" != "3"
]


@pytest.mark.parametrize("output,gold,prediction,correct", GSM_CASES)
def test_gsm_reference_extraction(output, gold, prediction, correct):
    reference = gsm_reference("steps\n#### " + gold)
    assert gsm_prediction(output) == prediction
    assert gsm_reference_correct(gsm_prediction(output), reference) is correct


@pytest.mark.parametrize("output,gold,correct", [
    ("So the answer is 12.00", "12", True),  # by value: 12.00 == 12
    ("The answer is -21.", "21", False),  # the sign counts
    ("The values are 1,2,18", "18", True),  # commas only inside thousands groups
    ("Total: $1,234.", "1234", True),
    ("It costs .80", "80", False),  # 0.8 != 80
    ("so 12.5 in all", "125", False),
    ("COVID-19 cases: 19", "19", True),  # a hyphen glued to a word is not a sign
])
def test_gsm_value_matching_is_an_option(output, gold, correct):
    assert numbers_equal(last_number(output), gold) is correct


BBH_COT_CASES = [
    ("Let's think step by step. X is first. So the answer is (B).", "(B)", "(B)", True),  # the canonical form
    ("So the answer is (B) or (C).", "(B)", "(B) or (C)", False),  # "b or c" != "b": no prefix matching
    ("So the answer is B.", "(B)", "B", True),  # parentheses are punctuation: "b" == "b"
    ("the answer is (B).", "(B)", "the answer is (B).", False),  # cue is case-sensitive: whole paragraph kept
    ("So the answer is (B)", "(B)", "So the answer is (B)", False),  # no period after the answer: no match
    ("So the answer is 3.5.", "3.5", "3", False),  # stops at the first period, inside the number
    ("So the answer is 24.", "24", "24", True),
    ("So the answer is -25.", "-25", "-25", True),  # "-" deleted on both sides
    ("So the answer is 25.", "-25", "25", True),  # ... so a dropped minus still matches
    ("So the answer is True.", "True", "True", True),
    ("So the answer is valid.", "invalid", "valid", False),
    ("So the answer is ] ) }.", "] ) }", "] ) }", True),  # Dyck: both become two spaces
    ("So the answer is ) }.", "] ) }", ") }", False),  # one space vs two
    ("So the answer is } ) ].", "] ) }", "} ) ]", True),  # brackets are deleted: any 3 closers match
    ("Reasoning first.\n\nSo the answer is (A).", "(A)", "Reasoning first.", False),  # only the first paragraph
    ("So the answer is (A).\n\nQ: next. So the answer is (B).", "(A)", "(A)", True),  # the first cue wins
    ("So the answer is (A) because it is (B).", "(A)", "(A) because it is (B)", False),  # up to the next period
    ("So the answer is yes.", "Yes", "yes", True),  # case ignored
    ("So the answer is: (C).", "(C)", "So the answer is: (C).", False),  # "is:" is not "is ": no match at all
    ("So the answer is (C)\nmore text.", "(C)", "So the answer is (C)\nmore text.", False),  # '.' stops at newline
    ("So the answer is apple banana cherry.", "apple banana cherry", "apple banana cherry", True),
    ("", "(A)", "", False),  # empty output
    ("So the answer is (a).", "(A)", "(a)", True),
    ("  So the answer is No.  \n\n", "No", "No", True),  # surrounding whitespace stripped first
]


@pytest.mark.parametrize("output,target,prediction,correct", BBH_COT_CASES)
def test_bbh_cot_reference_extraction(output, target, prediction, correct):
    assert bbh_prediction(output) == prediction
    assert bbh_reference_correct(prediction, target) is correct


BBH_DIRECT_CASES = [
    (" (B).", "(B)", "(B).", True),  # no cue: the paragraph; "(B)." -> "b"
    (" (B)\n\nQ: next question", "(B)", "(B)", True),  # cut at the blank line
    (" So the answer is True.", "True", "True", True),  # the cue is read in direct runs too
    (" True", "True", "True", True),
    (" False.", "True", "False.", False),
    (" B", "(B)", "B", True),  # bare letter equals "(B)" once punctuation is gone
    (" (B) 12/14/1937", "(B)", "(B) 12/14/1937", False),  # "b 12141937" != "b"
    (" (B) or (C)", "(B)", "(B) or (C)", False),
    (" valid", "invalid", "valid", False),
    (" invalid.", "invalid", "invalid.", True),  # final period is punctuation
    (" 24\nmore", "24", "24\nmore", False),  # single newlines are not cut
    ("\n\n(B)", "(B)", "(B)", True),  # stripped before the blank-line cut
    (" ] ) }", "] ) }", "] ) }", True),
    (" ]) }", "] ) }", "]) }", False),  # " " vs "  "
    (" Yes, because it is.", "Yes", "Yes, because it is.", False),  # "yes because it is" != "yes"
    (" -25", "-25", "-25", True),
    (" 25", "-25", "25", True),  # the minus is punctuation
    (" The answer is (A).", "(A)", "The answer is (A).", False),  # "The answer is", not "So the answer is"
    (" A.", "(A)", "A.", True),
    (" no", "No", "no", True),
    (" No\nYes", "No", "No\nYes", False),  # "no\nyes" != "no"
    (" apple banana", "apple banana", "apple banana", True),
    ("", "True", "", False),
]


@pytest.mark.parametrize("output,target,prediction,correct", BBH_DIRECT_CASES)
def test_bbh_direct_reference_extraction(output, target, prediction, correct):
    assert bbh_prediction(output) == prediction
    assert bbh_reference_correct(prediction, target) is correct


@pytest.mark.parametrize("output,target,correct", [
    ("So the answer is (B) or (C).", "(B)", True),  # lenient: "(B) text" counts for an option
    ("So the answer is 3.5.", "3.5", True),  # to the end of the line, final period dropped
    ("the answer is (B).", "(B)", True),  # any case
    ("So the answer is ) }.", "] ) }", False),  # punctuation kept
    ("So the answer is 25.", "-25", False),  # the sign counts
])
def test_bbh_lenient_matching_is_an_option(output, target, correct):
    assert lenient_bbh_correct(lenient_bbh_prediction(output), target) is correct


def test_reference_exact_match_keeps_whitespace_and_drops_punctuation():
    assert reference_exact_match("Hello, World!", "hello world")
    assert not reference_exact_match("hello  world", "hello world")
    assert not reference_exact_match(" a", "a")
