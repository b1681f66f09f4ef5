"""The 1-10 rating judge: prompt fidelity to FastChat's reviewer prompt and a strict parser."""

from __future__ import annotations

import doctest
import json
from importlib import resources

import pytest

import drover.judges.rating as rating
from drover.judges.rating import RatingJob, Scores, build_prompt, parse, rate
from drover.judges.verdicts import ParseFailure
from drover.completions import Choice, Completion


def test_doctests():
    assert doctest.testmod(rating).failed == 0


def test_two_answer_prompt_is_fastchats_reviewer_prompt():
    path = resources.files("drover").joinpath("resources", "data", "vicuna80", "prompt.jsonl")
    general = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    expected = general["prompt_template"].format(question="Why?", answer_1="Because.", answer_2="No idea.",
                                                 prompt=general["defaults"]["prompt"])
    messages = build_prompt("Why?", ["Because.", "No idea."])
    assert messages == [{"role": "system", "content": general["system_prompt"]},
                        {"role": "user", "content": expected}]


def test_single_and_k_answer_prompts_ask_for_the_right_number_of_scores():
    single = build_prompt("Q {with braces}", ["A {0}"])[1]["content"]
    assert "only one value" in single and "Q {with braces}" in single and "A {0}" in single
    three = build_prompt("Q", ["a", "b", "c"])[1]["content"]
    assert "only three values indicating the scores for Assistant 1, 2 and 3" in three
    assert three.count("[The Start of Assistant") == 3
    strict = build_prompt("Q", ["a", "b"], strict=True)[1]["content"]
    assert strict.startswith(build_prompt("Q", ["a", "b"])[1]["content"]) and "IMPORTANT" in strict


@pytest.mark.parametrize("text,n,expected", [
    ("8\nGood answer.", 1, (8.0,)),
    ("  \n8.5\nGood answer.", 1, (8.5,)),
    ("Score: 7\nok", 1, (7.0,)),
    ("**Rating: 9/10**\n\nVery detailed.", 1, (9.0,)),
    ("## Score\n6 out of 10\nMeh.", 1, (6.0,)),
    ("8 7\nAssistant 1 ...", 2, (8.0, 7.0)),
    ("8, 7\n...", 2, (8.0, 7.0)),
    ("(8, 7)\n...", 2, (8.0, 7.0)),
    ("[9, 4, 7]\n...", 3, (9.0, 4.0, 7.0)),
    ("Assistant 1: 8, Assistant 2: 6\nbecause", 2, (8.0, 6.0)),
    ("**Assistant 1**: 3/10\n**Assistant 2**: 10/10\nAssistant 2 is better.", 2, (3.0, 10.0)),
    ("10.\nPerfect.", 1, (10.0,)),
])
def test_parse_accepts_common_shapes(text, n, expected):
    verdict = parse(text, n)
    assert isinstance(verdict, Scores), verdict
    assert verdict.scores == expected


@pytest.mark.parametrize("text,n,reason", [
    ("", 1, "empty output"),
    ("\n \n", 1, "empty output"),
    ("**\n", 1, "empty output"),
    ("The response is helpful and accurate.\nI would give it an 8.", 1, "no scores on the first line"),
    ("I would rate it 8.", 1, "the first line holds words besides the scores"),
    ("8 9 10\n...", 2, "expected 2 scores on the first line, found 3"),
    ("8\n9\n", 2, "expected 2 scores on the first line, found 1"),     # missing second score
    ("8 7\n...", 1, "expected 1 score on the first line, found 2"),      # extra number
    ("0\nterrible", 1, "score 0 is outside 1-10"),
    ("8 12\n...", 2, "score 12 is outside 1-10"),
    ("-3\n", 1, "score -3 is outside 1-10"),
    ("Assistant 1: 8\nAssistant 1: 9\n", 2, "Assistant 1 is scored twice"),    # duplicate label
    ("Assistant 1: 8\nThe second one is worse.", 2, "expected scores for Assistant 1 and 2, found 1"),
    ("Assistant 1: great\nAssistant 2: 7", 2, "could not read the score of Assistant 1"),
])
def test_parse_rejects_malformed_replies_instead_of_guessing(text, n, reason):
    verdict = parse(text, n)
    assert isinstance(verdict, ParseFailure)
    assert verdict.reason == reason
    assert verdict.raw == text


class ScriptedLLM:
    """Answers each request from a script keyed by (question, strict?); records what it saw."""

    def __init__(self, script):
        self.script = script
        self.seen = []

    def run(self, requests, desc=""):
        for request in requests:
            user = request.messages[-1][1]
            strict = "IMPORTANT" in user
            question = user.split("\n")[1]
            self.seen.append((question, strict))
            reply = self.script[(question, strict)]
            if isinstance(reply, Exception):
                yield Completion(choices=[], error=str(reply), key=request.key)
            else:
                yield Completion(choices=[Choice(reply, "stop")], key=request.key)


def test_rate_retries_once_with_stricter_instruction_then_records_failure():
    llm = ScriptedLLM({
        ("q1", False): "7\nfine",
        ("q2", False): "I'd say 7",
        ("q2", True): "6\nfixed",
        ("q3", False): "great answer",
        ("q3", True): "still no number",
        ("q4", False): RuntimeError("HTTP 500"),
    })
    jobs = [RatingJob(f"id{i}", f"q{i}", ["answer"]) for i in range(1, 5)]
    results = list(rate(llm, jobs, chunk=3))
    assert [r.key for r in results] == ["id1", "id2", "id3", "id4"]
    r1, r2, r3, r4 = results
    assert r1.verdict.scores == (7.0,) and not r1.retried
    assert r2.verdict.scores == (6.0,) and r2.retried and r2.raw == ["I'd say 7", "6\nfixed"]
    assert isinstance(r3.verdict, ParseFailure) and r3.retried
    assert r3.verdict.raw == "still no number" and r3.raw == ["great answer", "still no number"]
    assert r4.error == "HTTP 500" and not r4.retried
    # exactly one retry each for the unreadable ones, none for LLM errors
    assert sorted(q for q, strict in llm.seen if strict) == ["q2", "q3"]
