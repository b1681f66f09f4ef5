"""Kill a generation job with SIGKILL mid-run, re-run it: every item is answered exactly
once in the output, and no request answered before the kill is sent again."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from drover.llm.testing import FakeOpenAIServer

pytestmark = pytest.mark.slow

N = 150
CONCURRENCY = 4

JOB = """
import sys
from drover.llm import LLM, LLMConfig, Request
from drover.records import JsonlAppender

url, cache, out, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
config = LLMConfig.from_spec(url + "#fake", concurrency={concurrency}, backoff_base=0.01)
with JsonlAppender(out) as appender, LLM(config, cache, progress=False) as llm:
    todo = (Request.chat([{{"role": "user", "content": f"q{{i}}"}}], key=f"id{{i}}")
            for i in range(n) if f"id{{i}}" not in appender.done_ids)
    for completion in llm.run(todo, desc="answers"):
        appender.write({{"id": completion.key, "messages": [
            {{"role": "user", "content": "q" + completion.key[2:]}},
            {{"role": "assistant", "content": completion.text}}]}})
""".format(concurrency=CONCURRENCY)


def _complete_lines(path) -> list[dict]:
    if not path.exists():
        return []
    data = path.read_bytes()
    return [json.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines() if line.strip()]


def _cached_texts(cache) -> set[str]:
    """The answers the job has committed to its LLM cache so far (read beside the writer: WAL)."""
    with contextlib.closing(sqlite3.connect(f"file:{cache}?mode=ro", uri=True, timeout=30)) as db:
        rows = db.execute("SELECT response FROM entries").fetchall()
    return {choice["text"] for (response,) in rows for choice in json.loads(response)["choices"]}


def test_sigkill_and_resume(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(JOB)
    out, cache = tmp_path / "answers.jsonl", tmp_path / "llm-cache.sqlite"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # q10 answers late, so the answers to q11.. arrive (and are cached) before they can be
    # written in order: the kill then catches answers that only the cache holds.
    with FakeOpenAIServer(delay=0.03, slow={"q10": 30.0}) as server:
        args = [sys.executable, str(script), server.base_url, str(cache), str(out), str(N)]
        job = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while len(server.answered) < 40:
            assert job.poll() is None, job.stderr.read().decode()
            assert time.monotonic() < deadline, "the job made no progress"
            time.sleep(0.02)
        answered_by_server = set(server.answered)
        # the kill must come after the client committed what it received (not after a fixed pause)
        while not {f"answer: {c}" for c in answered_by_server} <= _cached_texts(cache):
            assert job.poll() is None, job.stderr.read().decode()
            assert time.monotonic() < deadline + 60, "the job never committed the answers it received"
            time.sleep(0.02)
        job.send_signal(signal.SIGKILL)
        job.wait()
        written = {rec["id"] for rec in _complete_lines(out)}
        assert written == {f"id{i}" for i in range(10)}  # killed mid-run, output held back at q10
        assert len(answered_by_server) >= 40

        server.slow.clear()
        rerun = subprocess.run(args, env=env, capture_output=True, timeout=120)
        assert rerun.returncode == 0, rerun.stderr.decode()

        records = _complete_lines(out)
        ids = [rec["id"] for rec in records]
        assert sorted(ids) == sorted(f"id{i}" for i in range(N))  # every item exactly once
        assert all(rec["messages"][1]["content"] == "answer: " + rec["messages"][0]["content"] for rec in records)
        for content in answered_by_server:
            assert server.count(content) == 1, f"{content} was answered before the kill and sent again"
        # Only requests in flight at the kill (q10 among them) can be sent twice.
        assert len(server.requests) <= N + CONCURRENCY
