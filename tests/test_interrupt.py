"""Ctrl-C (SIGINT) stops a generation job at once with exit 130, keeping what was answered."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from drover.llm.testing import FakeOpenAIServer


def test_sigint_stops_generation_promptly_and_keeps_answers(tmp_path):
    items = [{"instruction": f"task {i}", "input": "", "output": "x"} for i in range(300)]
    (tmp_path / "in.json").write_text(json.dumps(items))
    out = tmp_path / "out.jsonl"
    with FakeOpenAIServer(delay=0.2) as server:
        proc = subprocess.Popen(
            [sys.executable, "-m", "drover", "generate", "answers", "--input", str(tmp_path / "in.json"),
             "--output", str(out), "--teacher", f"{server.base_url}#fake", "teacher_options.concurrency=2"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            # a shell's background job inherits SIGINT ignored; a terminal's Ctrl-C does not
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.monotonic() + 60
        while not (out.exists() and sum(1 for _ in out.open()) >= 3):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)  # a job that ignored SIGINT would end with 0, not 130
    assert proc.returncode == 130, output[-2000:]
    assert "interrupted; re-run the same command to resume" in output
    ids = [json.loads(line)["id"] for line in out.open() if line.strip()]
    assert 3 <= len(ids) < 300 and len(ids) == len(set(ids))
