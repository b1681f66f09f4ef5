"""The online recipes end to end, shrunk: rl-gsm (verifiable reward, GRPO) and rlhf
(SFT -> reward model -> PPO -> benchmarks and a judge)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def _run(recipe: str, run_dir, *overrides: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "drover", "run", recipe, f"run_dir={run_dir}", *overrides],
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _rewards(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_rl_gsm_recipe(tmp_path):
    run_dir = tmp_path / "gsm"
    _run("rl-gsm", run_dir, "vars.sft_steps=4", "vars.rl_steps=3", "vars.samples=2", "vars.max_new_tokens=16",
         "vars.bench_limit=2")
    rows = _rewards(run_dir / "train" / "grpo" / "rewards.jsonl")
    assert len(rows) == 3 * 4 * 2 and all(set(r["terms"]) == {"gsm-match", "regex"} for r in rows)
    assert (run_dir / "train" / "grpo" / "model" / "model.safetensors").exists()
    result = next(run_dir.glob("eval/**/gsm_cot.json"))      # per model where results are kept per model
    assert json.loads(result.read_text())["kind"] == "benchmark"
    assert (run_dir / "report.html").exists()


@pytest.mark.slow
def test_rlhf_recipe(tmp_path):
    run_dir = tmp_path / "rlhf"
    _run("rlhf", run_dir, "vars.sft_steps=4", "vars.rm_steps=4", "vars.rl_steps=2", "vars.bench_limit=1",
         "vars.judge_limit=2", "vars.max_new_tokens=12")
    rows = _rewards(run_dir / "train" / "rl" / "rewards.jsonl")
    assert len(rows) == 2 * 4 * 4 and all(set(r["terms"]) == {"reward-model"} for r in rows)
    log = [json.loads(line) for line in (run_dir / "train" / "rl" / "log.jsonl").read_text().splitlines()]
    assert any(r["event"] == "train" and "value_loss" in r for r in log)     # PPO, with its value head
    assert (run_dir / "train" / "rl" / "model" / "model.safetensors").exists()
    assert (run_dir / "report.html").exists()
