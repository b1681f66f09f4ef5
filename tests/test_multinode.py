"""Multi-node training: the shipped multi-node accelerate config launched as two "nodes"
on this machine (two processes, gloo over loopback), the run directory, checkpoint and
reference cache written once, then a resume on one process: refused when the global
batch would change, exact when grad_accum keeps it. Plus the shipped configs and Slurm
template, and the resume-layout rules on their own."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from multinode_helpers import run_two_nodes

from drover.errors import ConfigError
from drover.train.checkpoint import STATE_FILE, check_layout

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_multi_node_configs_and_slurm_template():
    for path in sorted((ROOT / "recipes" / "accelerate").glob("multi-node-*.yaml")):
        config = yaml.safe_load(path.read_text())
        assert config["num_machines"] >= 2 and config["num_processes"] % config["num_machines"] == 0, path
        assert config["main_process_ip"] and config["main_process_port"], path
        assert f"--config_file recipes/accelerate/{path.name}" in path.read_text(), path  # documented launch
    script = ROOT / "recipes" / "slurm" / "train-multi-node.sbatch"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert "--machine_rank" in text and "SLURM_NODEID" in text and "#SBATCH --nodes=2" in text


def _checkpoint(tmp_path: Path, **state) -> Path:
    path = tmp_path / "step-0000001"
    path.mkdir()
    (path / STATE_FILE).write_text(json.dumps({"step": 1, "data_hash": "x", **state}))
    return path


def test_resume_layout_rules(tmp_path):
    ddp = _checkpoint(tmp_path, num_processes=16, micro_batches_per_step=16, steps_per_epoch=10)
    check_layout(ddp, 16, 16, 10, sharded_states=False)  # unchanged
    check_layout(ddp, 8, 16, 10, sharded_states=False)   # half the nodes, grad_accum doubled
    with pytest.raises(ConfigError, match="16 processes x grad_accum 1 = 16 micro-batches per step, now 8 x 1 = 8"
                                          ".*set grad_accum=2"):
        check_layout(ddp, 8, 8, 20, sharded_states=False)
    with pytest.raises(ConfigError, match="divides 16"):
        check_layout(ddp, 6, 12, 14, sharded_states=False)
    with pytest.raises(ConfigError, match="sharded per process; resume with 16 processes"):
        check_layout(ddp, 8, 16, 10, sharded_states=True)
    old = tmp_path / "old"
    old.mkdir()
    (old / STATE_FILE).write_text(json.dumps({"step": 1, "data_hash": "x"}))  # before layouts were recorded
    check_layout(old, 4, 4, 1, sharded_states=True)


@pytest.mark.slow
def test_two_nodes_over_loopback_then_resume_on_one(tiny_model_dir, tmp_path, capsys):
    from safetensors.torch import load_file

    from drover.cli import main
    from drover.records import Message, Ranked, Response, write_jsonl

    data = tmp_path / "pairs.jsonl"
    write_jsonl(data, [Ranked(f"r{i}", [Message("user", f"question {i}?")],
                              [Response(f"a good answer {i}", 1.0), Response(f"bad {i}", 0.0)]) for i in range(8)])
    command = ["tune", "--objective", "dpo", "--model", str(tiny_model_dir), "--data", str(data)]
    settings = ["micro_batch_size=2", "epochs=1", "mixed_precision=no", "lr=1e-3", "progress=false", "max_length=64"]
    run = tmp_path / "run"
    logs = run_two_nodes([*command, "--run-dir", str(run), *settings, "save_every=1", "stop_after_steps=1"],
                         timeout=240)
    state = json.loads((run / "checkpoints" / "step-0000001" / STATE_FILE).read_text())
    assert state["num_processes"] == 2 and state["micro_batches_per_step"] == 2 and state["step"] == 1
    assert sorted(p.name for p in (run / "checkpoints" / "step-0000001").glob("random_states_*")) == \
        ["random_states_0.pkl", "random_states_1.pkl"]  # every rank's RNG, one model copy
    assert len(list((run / "reference").glob("*.pt"))) == 1  # computed by both, written once
    events = [json.loads(x)["event"] for x in (run / "log.jsonl").read_text().splitlines()]
    assert events.count("train") == 1  # logged by the main process only
    assert "drover dpo: 1 steps" in logs[0] and "drover dpo:" not in logs[1]

    # One process now: grad_accum=1 would halve the global batch -> refused, nothing changed.
    capsys.readouterr()
    assert main([*command, "--run-dir", str(run), *settings]) == 2
    assert "set grad_accum=2 to keep the global batch" in capsys.readouterr().err
    # grad_accum=2 keeps it: the resumed run ends where one uninterrupted process ends.
    assert main([*command, "--run-dir", str(run), *settings, "grad_accum=2"]) == 0
    single = tmp_path / "single"
    assert main([*command, "--run-dir", str(single), *settings, "grad_accum=2"]) == 0
    resumed, whole = load_file(run / "model" / "model.safetensors"), load_file(single / "model" / "model.safetensors")
    start = load_file(Path(tiny_model_dir) / "model.safetensors")
    assert max(float((resumed[k] - whole[k]).abs().max()) for k in whole) < 1e-6
    assert max(float((whole[k] - start[k]).abs().max()) for k in start if k in whole) > 1e-4  # it trained
