"""Online runs killed at awkward moments and resumed with changed settings (review of issue #15):
a refused resume writes nothing, logs keep one line per step, a torn rewards line is redone,
a resume that would change the schedule of the steps already taken is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from online_helpers import write_prompts

from drover.errors import ConfigError

DIGITS = {"kind": "regex", "params": {"pattern": "[0-9]", "mode": "fraction"}}


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory) -> Path:
    return write_prompts(tmp_path_factory.mktemp("prompts") / "prompts.jsonl", 4)


def config(model: Path, prompts: Path, run_dir: Path, **over):
    from drover.train.online.config import online_config

    train = {"model": str(model), "run_dir": str(run_dir), "lr": 1e-2, "progress": False, "save_every": 2,
             **over.pop("train", {})}
    data = {"algorithm": "grpo", "prompts": [str(prompts)], "rewards": [DIGITS], "steps": 4, "prompts_per_step": 2,
            "samples_per_prompt": 2, "max_new_tokens": 4, "train": train, **over}
    return online_config(data, where="test")


def events(run_dir: Path, event: str = "train") -> list[dict]:
    return [r for r in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines()) if r["event"] == event]


def rewards(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "rewards.jsonl").read_text().splitlines()]


def test_refused_resume_writes_nothing_and_names_the_change(tiny_model_dir, prompts_file, tmp_path):
    from drover.train.online.loop import run_online

    run, prompts = tmp_path / "run", tmp_path / "prompts.jsonl"
    prompts.write_bytes(prompts_file.read_bytes())
    run_online(config(tiny_model_dir, prompts, run, train={"stop_after_steps": 2}), echo=False)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    prompts.write_text(prompts.read_text().replace("item 3", "item three"))
    with pytest.raises(ConfigError, match=r"made with other settings \(prompts \(content\) '\w+' -> '\w+'\)"):
        run_online(config(tiny_model_dir, prompts, run), echo=False)
    prompts.write_bytes(prompts_file.read_bytes())
    prompts_file = prompts
    with pytest.raises(ConfigError, match=r"made with other settings \(algorithm_params\.beta None -> 0\.5\)"):
        run_online(config(tiny_model_dir, prompts_file, run, algorithm_params={"beta": 0.5}), echo=False)
    with pytest.raises(ConfigError, match=r"\(rewards\[0\]\.weight 1\.0 -> 2\.0\)"):
        run_online(config(tiny_model_dir, prompts_file, run, rewards=[{**DIGITS, "weight": 2.0}]), echo=False)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before   # config.yaml included


def test_a_step_logged_before_its_checkpoint_is_logged_once(tiny_model_dir, prompts_file, tmp_path):
    """Killed after step 3 was logged, with the last checkpoint at step 2: the resumed run redoes
    step 3; log.jsonl and rewards.jsonl hold every step exactly once, as an uninterrupted run's."""
    from drover.train.online.loop import run_online

    run_online(config(tiny_model_dir, prompts_file, tmp_path / "whole"), echo=False)
    run = tmp_path / "run"
    run_online(config(tiny_model_dir, prompts_file, run, train={"stop_after_steps": 3}), echo=False)
    run_online(config(tiny_model_dir, prompts_file, run), echo=False)
    assert [r["step"] for r in events(run)] == [1, 2, 3, 4]
    assert [r["reward"] for r in events(run)] == [r["reward"] for r in events(tmp_path / "whole")]
    assert rewards(run) == rewards(tmp_path / "whole")


def test_a_torn_rewards_line_is_redone_on_resume(tiny_model_dir, prompts_file, tmp_path):
    """A kill in the middle of appending a step's rewards leaves half a line: the resume drops it
    (its step is redone) instead of failing on it."""
    from drover.train.online.loop import run_online

    run_online(config(tiny_model_dir, prompts_file, tmp_path / "whole"), echo=False)
    run = tmp_path / "run"
    run_online(config(tiny_model_dir, prompts_file, run, train={"stop_after_steps": 2}), echo=False)
    with open(run / "rewards.jsonl", "a") as handle:
        handle.write('{"step": 2, "process": 0, "prompt_id": "p')
    run_online(config(tiny_model_dir, prompts_file, run), echo=False)
    assert rewards(run) == rewards(tmp_path / "whole")


def test_more_steps_under_a_decaying_schedule_is_refused(tiny_model_dir, prompts_file, tmp_path):
    """`steps` sets the length of a linear decay: the steps already taken had other learning rates
    than a longer run gives them, so continuing would mix two schedules."""
    from drover.train.online.loop import run_online

    run = tmp_path / "run"
    run_online(config(tiny_model_dir, prompts_file, run, train={"schedule": "linear", "stop_after_steps": 2}),
               echo=False)
    with pytest.raises(ConfigError, match=r"steps: the plan of 4 -> 8 optimiser steps changes the linear"):
        run_online(config(tiny_model_dir, prompts_file, run, steps=8, train={"schedule": "linear"}), echo=False)
    with pytest.raises(ConfigError, match=r"steps 1 is fewer than the 2 steps already done"):
        run_online(config(tiny_model_dir, prompts_file, run, steps=1, train={"schedule": "linear"}), echo=False)
    assert [r["step"] for r in events(run)] == [1, 2]


def test_force_starts_fresh_and_is_not_a_setting(tiny_model_dir, prompts_file, tmp_path):
    from drover.train.online.loop import run_online

    run = tmp_path / "run"
    run_online(config(tiny_model_dir, prompts_file, run, train={"stop_after_steps": 2}), echo=False)
    run_online(config(tiny_model_dir, prompts_file, run, algorithm_params={"beta": 0.5},
                      train={"force": True, "stop_after_steps": 2}), echo=False)
    assert [r["step"] for r in events(run)] == [1, 2] and {r["step"] for r in rewards(run)} == {0, 1}
    # the forced run's checkpoint resumes without force
    run_online(config(tiny_model_dir, prompts_file, run, algorithm_params={"beta": 0.5}), echo=False)
    assert [r["step"] for r in events(run)] == [1, 2, 3, 4]


def test_a_policy_retrained_at_the_same_path_is_not_resumed(tiny_model_dir, prompts_file, tmp_path, capsys):
    """A recipe's SFT stage re-run writes another model at the same path: resuming the old online
    run would keep a policy trained from the first model against the second as reference (and a
    finished run would hand back the old policy as if new). The resume refuses, naming it; the
    recipe passes `--force` (rl's FRESH_FLAG) to a stale stage, which starts fresh."""
    import shutil

    from drover.cli import main
    from drover.models import build_tiny
    from drover.recipes import fresh_flag
    from drover.train.online.loop import run_online

    model = tmp_path / "sft-model"
    shutil.copytree(tiny_model_dir, model)
    run = tmp_path / "run"
    run_online(config(model, prompts_file, run, train={"stop_after_steps": 2}), echo=False)
    shutil.rmtree(model)
    build_tiny(model, seed=1)
    with pytest.raises(ConfigError, match=r"train\.model \(content\) 'sha256:[0-9a-f.]+' -> 'sha256:"):
        run_online(config(model, prompts_file, run), echo=False)
    assert fresh_flag("rl") == "--force"
    args = ["rl", "--model", str(model), "--prompts", str(prompts_file), "--reward", "regex:pattern=[0-9]",
            "--run-dir", str(run), "steps=2", "prompts_per_step=2", "samples_per_prompt=2", "max_new_tokens=4",
            "train.progress=false", "--force"]
    assert main(args) == 0
    assert [r["step"] for r in events(run)] == [1, 2]


def test_a_run_killed_writing_its_model_resumes_without_rewriting_its_checkpoint(tiny_model_dir, prompts_file,
                                                                                 tmp_path):
    import shutil

    from drover.train import checkpoint
    from drover.train.online.loop import run_online

    run = tmp_path / "run"
    run_online(config(tiny_model_dir, prompts_file, run, steps=2), echo=False)
    want = (run / "model" / "model.safetensors").read_bytes()
    shutil.rmtree(run / "model")                     # killed while save_final wrote it
    last = checkpoint.latest(run / "checkpoints")
    marker = last / "untouched"
    marker.write_text("")
    run_online(config(tiny_model_dir, prompts_file, run, steps=2), echo=False)
    assert marker.exists() and checkpoint.latest(run / "checkpoints") == last
    assert (run / "model" / "model.safetensors").read_bytes() == want
    assert [r["step"] for r in events(run)] == [1, 2]


def test_a_reward_model_retrained_at_the_same_path_is_not_resumed(tiny_model_dir, prompts_file, tmp_path):
    """`reward-model:path=DIR` named the model by path only: a reward model retrained into DIR
    resumed the run against other rewards than its first steps had."""
    import shutil

    import torch
    from transformers import AutoModelForSequenceClassification

    from drover.train.online.loop import run_online

    rm = tmp_path / "rm"

    def save_reward_model(seed: int) -> None:
        torch.manual_seed(seed)
        shutil.rmtree(rm, ignore_errors=True)
        shutil.copytree(tiny_model_dir, rm)
        model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
        model.save_pretrained(rm)

    save_reward_model(0)
    rewards = [{"kind": "reward-model", "params": {"path": str(rm)}}]
    run = tmp_path / "run"
    run_online(config(tiny_model_dir, prompts_file, run, rewards=rewards, train={"stop_after_steps": 2}), echo=False)
    save_reward_model(1)
    with pytest.raises(ConfigError, match=rf"\(rewards: {rm} \(content\) 'sha256:"):
        run_online(config(tiny_model_dir, prompts_file, run, rewards=rewards), echo=False)
