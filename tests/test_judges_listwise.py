"""Tuna's contextual-ranking judge: prompt text and a robust `rank: [...]` parser."""

from __future__ import annotations

import doctest

import pytest

import drover.judges.listwise as listwise
from drover.judges.listwise import Ranking, build_prompt, parse
from drover.judges.verdicts import ParseFailure


def test_doctests():
    assert doctest.testmod(listwise).failed == 0


def test_prompt_matches_tunas_layout_for_four_responses():
    system, user = build_prompt("INSTR {x}", ["a", "b", "c", "d"])
    assert system == {"role": "system", "content": "You are a professional and experienced data annotator."}
    text = user["content"]
    # Tuna: instruct + "\n\n" + "\n".join(f"###Response {j}:\n{r}\n") + "\n\nWe would like ..."
    body = "\n".join(f"###Response {j}:\n{r}\n" for j, r in enumerate("abcd"))
    assert text.startswith("INSTR {x}\n\n" + body + "\n\nWe would like you to rate Response 0/1/2/3 in reply")
    assert "generate one high quality '###Response 4'" in text
    assert "compare Response 4 with Response 0/1/2/3/4" in text
    assert "'rank: [i, j, k, l, m]'" in text and text.endswith("or even 'rank: [i]'.\n")


def test_prompt_generalises_to_n():
    text = build_prompt("x", ["a", "b"])[1]["content"]
    assert "rate Response 0/1 in" in text and "'###Response 2'" in text and "'rank: [i, j, k]'" in text


REAL = """The instruction is open-ended.

###Response 4:
Drink water, sleep well and exercise.

Third, Response 1 and Response 3 are duplicates, so I keep Response 1.

Response 0: [4 + 3 + 4 = 11]
Response 1: 13
Response 2: 6/15
Response 4: 15

rank: [4, 1, 0, 2]"""


def test_parse_a_realistic_reply():
    verdict = parse(REAL, 4)
    assert isinstance(verdict, Ranking)
    assert verdict.order == (4, 1, 0, 2)
    assert verdict.ranked_responses == (1, 0, 2)
    assert verdict.dropped == (3,)
    assert verdict.scores == {0: 11.0, 1: 13.0, 2: 6.0, 4: 15.0}
    assert verdict.reference == "Drink water, sleep well and exercise."


@pytest.mark.parametrize("text,order", [
    ("rank: [2, 0, 1, 3, 4]", (2, 0, 1, 3, 4)),
    ("Ranking: [3,2,1,0]", (3, 2, 1, 0)),
    ("**Rank:** [1, 0]", (1, 0)),
    ("RANK: [Response 2, Response 0]", (2, 0)),
    ("rank: 2 > 0 > 1", (2, 0, 1)),
    ("rank: [2, 0, 1, 3, 4]\nNote: Response 3 and 4 scored 12 and 15.", (2, 0, 1, 3, 4)),   # stray numbers after
    ("Format: 'rank: [i, j, k, l, m]'\n...\nrank: [0, 1]", (0, 1)),                      # template echoed first
    ("rank: [1, 0]\nOn reflection, the final rank: [0, 1]", (0, 1)),                     # last one wins
    ("rank:\n[3, 1, 2]", (3, 1, 2)),
    ("`rank: [4, 2, 3]`.", (4, 2, 3)),
])
def test_parse_accepts(text, order):
    verdict = parse(text, 4)
    assert isinstance(verdict, Ranking), verdict
    assert verdict.order == order


@pytest.mark.parametrize("text,reason", [
    ("", "empty output"),
    ("Response 0: 12\nResponse 1: 9", "no rank: [...] list found"),                 # missing rank line
    ("rank: []", "no rank: [...] list found"),
    ("rank: [2, 5, 1]", "index 5 out of range 0-4"),                                  # out of range
    ("rank: [2, 1, 1, 0]", "index 1 ranked twice"),                                   # duplicate
    ("rank: [best, worst]", "no rank: [...] list found"),                        # letters only: a template echo
    ("rank: [2, 1a, 0]", "rank list: unreadable item '1a'"),
])
def test_parse_rejects(text, reason):
    verdict = parse(text, 4)
    assert isinstance(verdict, ParseFailure)
    assert verdict.reason == reason
    assert verdict.raw == text


def test_reference_code_would_have_kept_stray_numbers():
    """Tuna's parser takes every integer after 'rank:'; ours stops at the list."""
    import re

    text = "rank: [2, 0, 1, 3, 4] (Response 4 is the reference)"
    naive = [int(n) for n in re.findall(r"\d+", text.lower().split("rank:")[1])]
    assert naive == [2, 0, 1, 3, 4, 4]
    assert parse(text, 4).order == (2, 0, 1, 3, 4)
