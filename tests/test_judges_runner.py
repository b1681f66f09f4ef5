"""The common judge loop: records, resume, request errors retried, judge/prompt identity."""

from __future__ import annotations

import json
from pathlib import Path

from drover.judges.mt_bench import parse_rating
from drover.judges.runner import JudgeCall, failures, run_calls
from drover.judges.verdicts import ParseFailure, Rating
from drover.completions import Choice, Completion


class ScriptedLLM:
    def __init__(self, answer):
        self.answer = answer
        self.sent = []

    def run(self, requests, desc="", total=None):
        for r in requests:
            self.sent.append(r.key)
            yield self.answer(r)


def _calls(n: int, prompt_id: str = "p") -> list[JudgeCall]:
    return [JudgeCall(id=f"c{i}", messages=[{"role": "user", "content": f"q{i}"}], prompt_id=prompt_id,
                      parse=lambda c: parse_rating(c.text), decoding={"temperature": 0.0, "max_tokens": 8},
                      meta={"i": i}) for i in range(n)]


def test_records_resume_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "ex.jsonl"

    def first(r):
        i = int(r.key[1:])
        if i == 1:
            return Completion(choices=[], error="HTTP 500 after 6 retries")
        return Completion(choices=[Choice(f"Rating: [[{i}]]" if i != 2 else "no idea")])

    llm = ScriptedLLM(first)
    out = run_calls(llm, _calls(4), "judge-a", path)
    assert [j.id for j in out] == ["c0", "c1", "c2", "c3"]
    assert out[0].verdict == Rating(0.0) and out[3].verdict == Rating(3.0)
    assert out[1].error and out[1].failed
    assert isinstance(out[2].verdict, ParseFailure) and out[2].raw == "no idea"
    assert [f["kind"] for f in failures(out)] == ["request_error", "parse_failure"]
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["id"] for r in lines] == ["c0", "c2", "c3"]  # the request error is not stored: retried next time
    assert lines[0]["decoding"] == {"temperature": 0.0, "max_tokens": 8} and lines[0]["judge"] == "judge-a"
    assert lines[1]["verdict"] == {"type": "parse_failure", "reason": "no [[rating]] found", "raw": "no idea"}

    llm2 = ScriptedLLM(lambda r: Completion(choices=[Choice("Rating: [[9]]")]))
    again = run_calls(llm2, _calls(4), "judge-a", path)
    assert llm2.sent == ["c1"]  # only the failed request is sent again
    assert [j.verdict for j in again] == [Rating(0.0), Rating(9.0), out[2].verdict, Rating(3.0)]
    assert again[0].cached


def test_a_torn_last_line_is_rejudged(tmp_path: Path) -> None:
    path = tmp_path / "ex.jsonl"
    run_calls(ScriptedLLM(lambda r: Completion(choices=[Choice("[[5]]")])), _calls(3), "j", path)
    text = path.read_text()
    path.write_text(text[: len(text) - 20])  # killed mid-write
    llm = ScriptedLLM(lambda r: Completion(choices=[Choice("[[6]]")]))
    out = run_calls(llm, _calls(3), "j", path)
    assert llm.sent == ["c2"] and out[2].verdict == Rating(6.0)


def test_another_judge_or_prompt_is_not_reused(tmp_path: Path) -> None:
    path = tmp_path / "ex.jsonl"
    run_calls(ScriptedLLM(lambda r: Completion(choices=[Choice("[[5]]")])), _calls(2), "judge-a", path)
    llm = ScriptedLLM(lambda r: Completion(choices=[Choice("[[7]]")]))
    assert [j.verdict for j in run_calls(llm, _calls(2), "judge-b", path)] == [Rating(7.0)] * 2
    llm = ScriptedLLM(lambda r: Completion(choices=[Choice("[[8]]")]))
    assert [j.verdict for j in run_calls(llm, _calls(2, "other-prompt"), "judge-b", path)] == [Rating(8.0)] * 2
