"""benchmarks/gpu_check.py: importable without CUDA, and its --cpu-smoke dry run runs every section."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks/gpu_check.py"


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_gpu_check_refuses_without_cuda_unless_smoke(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert load_gpu_check().main([]) == 2
    assert "--cpu-smoke" in capsys.readouterr().err


@pytest.mark.slow
def test_gpu_check_cpu_smoke_runs_every_section(tmp_path):
    """In its own process, as a user runs it (its bf16 engine must not share accelerate's state)."""
    import os
    import subprocess

    out = tmp_path / "check.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--cpu-smoke", "--budget", "10", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {r["section"]: r for r in json.loads(out.read_text())["results"]}
    assert set(results) == {"matmul", "sft", "dpo", "logprobs", "decode"}
    assert results["matmul"]["bf16_gflops"] > 0
    for name in ("sft", "dpo"):
        assert results[name]["records"] > 0 and 0 < results[name]["mfu"] < 1
        assert results[name]["attention"] in results[name]["attention_times"]
    assert results["logprobs"]["same_sum"] is True
    assert results["decode"]["drover_tok_per_s_b1"] > 0 and results["decode"]["hf_generate_tok_per_s_b1"] > 0
    printed = proc.stdout
    assert "bf16 matmul peak (measured)" in printed and "| sft |" in printed and "| decode |" in printed
