"""Every generation stage end to end against the real `drover serve` with the tiny model.

The tiny model writes gibberish: what is tested is the machinery (requests, parsing,
filters, failure records, files, summaries, resuming), not the text.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

# The served model samples with a seed (drawn from (seed, prompt), + k for its k-th sample), so what the
# tiny random model says (rarely, nothing at all) is the same on every run.
SEEDED = {"seed": 0}

PROMPTS = [
    {"id": "p1", "instruction": "Give three tips for staying healthy.", "input": "", "output": "Eat well."},
    {"id": "p2", "instruction": "Translate the sentence into French.", "input": "Good morning.", "output": "Bonjour."},
    {"id": "p3", "instruction": "Name the largest planet.", "input": "", "output": "Jupiter."},
]


@pytest.fixture(scope="module")
def url(tiny_model_dir):
    from drover.infer.server import serve_in_thread

    with serve_in_thread(str(tiny_model_dir)) as base:
        yield f"{base}#tiny"


@pytest.fixture
def prompts(tmp_path) -> Path:
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps(PROMPTS), encoding="utf-8")
    return path


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _summary(path: Path) -> dict:
    return json.loads(path.with_name(path.name.replace(".jsonl", ".summary.json")).read_text())


def test_answers_then_translate_then_answers_in_chinese(url, prompts, tmp_path):
    from drover.generate.answers import AnswersConfig, run_answers
    from drover.generate.translate import TranslateConfig, run_translate

    data = tmp_path / "run" / "data"
    en = data / "answers_en.jsonl"
    run_answers(AnswersConfig(input=str(prompts), output=str(en), teacher=url, max_tokens=8, teacher_options=SEEDED))
    rows = _rows(en)
    assert [r["id"] for r in rows] == ["p1", "p2", "p3"]
    for row in rows:
        assert row["messages"][-1]["role"] == "assistant" and row["messages"][-1]["content"]
        assert row["meta"]["finish_reason"] in ("stop", "length")
        assert row["meta"]["truncated"] == (row["meta"]["finish_reason"] == "length")
    assert rows[1]["messages"][0]["content"] == "Translate the sentence into French.\n\nGood morning."
    assert (tmp_path / "run" / "llm-cache.sqlite").exists()  # RUN/data/x.jsonl -> RUN/llm-cache.sqlite
    # a re-run is a no-op: everything done, no LLM call
    again = run_answers(AnswersConfig(input=str(prompts), output=str(en), teacher=url, max_tokens=8,
                                      teacher_options=SEEDED))
    assert again["counts"]["already done"] == 3 and again["llm"]["teacher"]["misses"] == 0

    zh = data / "prompts_zh.jsonl"
    summary = run_translate(TranslateConfig(input=str(prompts), output=str(zh), to="Chinese", translator=url,
                                            max_tokens=8))
    assert summary["llm"]["translator"]["misses"] == 4  # 3 instructions + 1 non-empty input
    rows_zh = _rows(zh)
    assert [r["id"] for r in rows_zh] == ["p1", "p2", "p3"]
    assert rows_zh[1]["meta"]["original"] == {"instruction": PROMPTS[1]["instruction"], "input": "Good morning."}
    assert rows_zh[0]["meta"]["input"] == "" and rows_zh[0]["meta"]["language"] == "Chinese"

    answers_zh = data / "answers_zh.jsonl"
    run_answers(AnswersConfig(input=str(zh), output=str(answers_zh), teacher=url, max_tokens=8,
                              teacher_options=SEEDED))
    assert [r["id"] for r in _rows(answers_zh)] == ["p1", "p2", "p3"]


def test_self_instruct_both_modes(url, tmp_path):
    from drover.generate.self_instruct import SelfInstructConfig, run_self_instruct

    out = tmp_path / "alpaca.jsonl"
    summary = run_self_instruct(SelfInstructConfig(output=str(out), teacher=url, mode="alpaca", num_instructions=5,
                                                   max_requests=2, request_batch_size=2, max_tokens=16))
    counts = summary["counts"]
    assert counts["requests"] == 2
    rejected = _rows(tmp_path / "alpaca.rejected.jsonl")
    assert counts.get("kept", 0) + len(rejected) == counts["generated"] >= 2
    assert all(r["reason"] for r in rejected)

    out2 = tmp_path / "si.jsonl"
    summary = run_self_instruct(SelfInstructConfig(output=str(out2), teacher=url, mode="self-instruct",
                                                   prompt_style="text", num_instructions=2, max_requests=2,
                                                   request_batch_size=2, max_tokens=16))
    assert summary["counts"]["requests"] == 2
    assert out2.with_name("si.summary.json").exists()


def test_feedback_with_files_and_a_sampled_source(url, prompts, tmp_path):
    from drover.generate.feedback import FeedbackConfig, run_feedback

    answers = tmp_path / "given.jsonl"
    answers.write_text("".join(json.dumps({"id": p["id"], "messages": [
        {"role": "user", "content": p["instruction"]}, {"role": "assistant", "content": p["output"]}]}) + "\n"
        for p in PROMPTS))
    out = tmp_path / "data" / "feedback.jsonl"
    summary = run_feedback(FeedbackConfig(input=str(prompts), output=str(out), judge=url, max_tokens=6, limit=2,
                                          responses=[f"reference={answers}"], sample=[f"tiny={url}"],
                                          sample_max_tokens=8))
    failures = _rows(out.with_name("feedback.failures.jsonl")) if out.with_name("feedback.failures.jsonl").exists() else []
    ranked = _rows(out) if out.exists() else []
    assert sorted([r["id"] for r in ranked] + [f["id"] for f in failures if f["id"] not in {r["id"] for r in ranked}]) \
        == ["p1", "p2"]
    for failure in failures:
        for item in failure["failures"]:
            assert item["raw"] and item["retried"]  # one stricter retry, raw judge text kept
    for row in ranked:
        scores = [r["score"] for r in row["responses"]]
        assert scores == sorted(scores, reverse=True) and all(1 <= s <= 10 for s in scores)
    assert summary["llm"]["judge"]["misses"] >= 4  # 2 sources x 2 prompts (+ retries)


def test_rank_probabilistic_with_teacher_logprobs_and_with_a_scorer(url, prompts, tmp_path):
    from drover.generate.rank_probabilistic import RankProbabilisticConfig, run_rank_probabilistic

    out = tmp_path / "p.jsonl"
    run_rank_probabilistic(RankProbabilisticConfig(input=str(prompts), output=str(out), teacher=url, max_tokens=8,
                                                   teacher_options=SEEDED))
    for row, prompt in zip(_rows(out), PROMPTS):
        assert row["reference"] == prompt["output"]
        scores = [r["score"] for r in row["responses"]]
        assert len(scores) >= 2 and scores == sorted(scores, reverse=True)
        for resp, lp in zip(row["responses"], row["meta"]["logprobs"]):
            assert resp["score"] == pytest.approx(lp["total"] / lp["tokens"] ** 1.3)

    given = tmp_path / "given.jsonl"
    given.write_text("".join(json.dumps({"id": p["id"], "messages": [{"role": "user", "content": p["instruction"]}],
                                         "responses": [{"content": p["output"]}, {"content": "I do not know."}]}) + "\n"
                             for p in PROMPTS))
    out2 = tmp_path / "p2.jsonl"
    run_rank_probabilistic(RankProbabilisticConfig(input=str(prompts), output=str(out2), scorer=url,
                                                   responses=[str(given)]))
    rows = _rows(out2)
    assert len(rows) == 3
    assert all({r["content"] for r in row["responses"]} == {p["output"], "I do not know."}
               for row, p in zip(rows, PROMPTS))


def test_rank_contextual_records_unreadable_rankings(url, prompts, tmp_path):
    from drover.generate.rank_contextual import RankContextualConfig, run_rank_contextual

    out = tmp_path / "c.jsonl"
    summary = run_rank_contextual(RankContextualConfig(input=str(prompts), output=str(out), policy=url, judge=url,
                                                       limit=2, max_tokens=8, judge_max_tokens=12,
                                                       policy_options=SEEDED, judge_options=SEEDED))
    failures = _rows(tmp_path / "c.failures.jsonl")
    done = {r["id"] for r in (_rows(out) if out.exists() else [])}
    assert done | {f["id"] for f in failures} == {"p1", "p2"}
    for failure in failures:
        assert failure["raw"] and len(failure["responses"]) == 4
    assert summary["llm"]["policy"]["misses"] >= 8


def test_answers_resume_after_sigkill(url, tmp_path):
    """Kill `drover generate answers` mid-run; re-running finishes without duplicates."""
    prompts = tmp_path / "many.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"q{i}", "instruction": f"Write sentence number {i} about cats."})
                               + "\n" for i in range(16)))
    out = tmp_path / "run" / "data" / "answers.jsonl"
    cmd = [sys.executable, "-m", "drover", "generate", "answers", "--input", str(prompts), "--output", str(out),
           "--teacher", url, "max_tokens=16", "teacher_options.concurrency=1", "teacher_options.seed=0"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if out.exists() and len(out.read_text().splitlines()) >= 2:
            break
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert killed, "the run finished before it could be killed"
    partial = len(out.read_text().splitlines())
    assert 2 <= partial < 16
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    ids = [r["id"] for r in _rows(out)]
    assert sorted(ids) == sorted(f"q{i}" for i in range(16)) and len(ids) == len(set(ids))
    summary = _summary(out)
    assert summary["counts"]["already done"] >= partial
    assert summary["llm"]["teacher"]["misses"] <= 16 - partial
