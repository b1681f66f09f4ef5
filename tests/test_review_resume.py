"""Adversarial checks of resume (review of issue #12): what a re-run keeps of a killed run."""

from __future__ import annotations

import json

from test_train_engine import _one_thread, codealpaca_jsonl, train_config  # noqa: F401 (autouse fixture)


def _train_steps(run_dir):
    events = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return [e["step"] for e in events if e["event"] == "train"]


def test_a_run_killed_before_its_first_checkpoint_leaves_no_steps_in_the_log(tiny_model_dir, tmp_path):
    # Killed after 3 steps with the first checkpoint due at step 5: nothing to resume from, so the
    # re-run starts at step 1; the 3 steps logged by the killed run must not stay beside the new ones.
    from drover.train.runner import run_training

    data = codealpaca_jsonl(tmp_path / "d.jsonl", 8)
    run_dir = tmp_path / "run"
    common = {"micro_batch_size": 2, "save_every": 5, "epochs": 2}  # 8 steps
    run_training(train_config(tiny_model_dir, [data], run_dir, stop_after_steps=3, **common), echo=False)
    assert not list(run_dir.glob("checkpoints/*"))  # nothing to resume from
    run_training(train_config(tiny_model_dir, [data], run_dir, **common), echo=False)
    assert _train_steps(run_dir) == [1, 2, 3, 4, 5, 6, 7, 8]
