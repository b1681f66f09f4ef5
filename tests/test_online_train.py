"""Online training end to end on the tiny model: each algorithm learns a toy verifiable reward,
KL to the reference is logged and bounded, a killed run resumes bit-identically."""

from __future__ import annotations

import doctest
import json
from pathlib import Path

import pytest
from online_helpers import write_prompts

from drover.errors import ConfigError

# digits are rare in the random tiny model's samples (~3% of characters) and easy to learn
DIGITS = {"kind": "regex", "params": {"pattern": "[0-9]", "mode": "fraction"}}
LEARNS = {   # settings under which each algorithm learns the toy reward within 40 steps
    "grpo": {},
    "rloo": {"normalize_advantages": True, "beta": 0.01},
    "ppo": {"kl_coef": 0.01},
    "online-dpo": {},
}


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory) -> Path:
    return write_prompts(tmp_path_factory.mktemp("prompts") / "prompts.jsonl", 8)


def config(model: Path, prompts: Path, run_dir: Path, algo: str, **over):
    from drover.train.online.config import online_config

    data = {"algorithm": algo, "prompts": [str(prompts)], "rewards": [DIGITS], "steps": 40,
            "prompts_per_step": 4, "samples_per_prompt": 8, "max_new_tokens": 6,
            "algorithm_params": LEARNS[algo],
            "train": {"model": str(model), "run_dir": str(run_dir), "lr": 3e-2, "progress": False, "save_every": 0}}
    train = over.pop("train", {})
    data.update(over)
    data["train"].update(train)
    return online_config(data, where="test")


def train_log(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return [r for r in rows if r["event"] == "train"]


@pytest.mark.parametrize("algorithm", sorted(LEARNS))
def test_each_algorithm_raises_the_reward(tiny_model_dir, prompts_file, tmp_path, algorithm):
    from drover.train.online.loop import run_online

    model = run_online(config(tiny_model_dir, prompts_file, tmp_path / "run", algorithm), echo=False)
    log = train_log(tmp_path / "run")
    start = sum(r["reward"] for r in log[:5]) / 5
    end = sum(r["reward"] for r in log[-5:]) / 5
    assert start < 0.1 and end > start + 0.5, (algorithm, [round(r["reward"], 2) for r in log])
    kl = [r["kl"] for r in log]
    assert kl[0] == pytest.approx(0.0, abs=1e-6)            # step 1 samples the reference itself
    assert all(k >= 0 for k in kl) and sum(kl[-5:]) / 5 < 10.0   # below log(vocab) ~ 8.3 + slack
    assert (model / "model.safetensors").is_file() and (model / "tokenizer_config.json").is_file()


def test_rewards_log_has_every_call(tiny_model_dir, prompts_file, tmp_path):
    from drover.train.online.loop import run_online

    cfg = config(tiny_model_dir, prompts_file, tmp_path / "run", "grpo", steps=2, samples_per_prompt=2,
                 rewards=[DIGITS, {"kind": "length", "weight": 0.5, "params": {"target": 5, "falloff": 10}}])
    run_online(cfg, echo=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "rewards.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 4 * 2 and {r["step"] for r in rows} == {0, 1}
    for row in rows:
        assert set(row["terms"]) == {"regex", "length"}
        assert row["reward"] == pytest.approx(row["terms"]["regex"] + 0.5 * row["terms"]["length"])
        assert isinstance(row["response"], str) and row["prompt_id"].startswith("p")
    log = train_log(tmp_path / "run")
    assert {"reward", "kl", "loss", "lr", "response_tokens", "samples_per_s"} <= set(log[-1])


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.mark.parametrize("algorithm", ["ppo", "grpo"])
def test_kill_and_resume_is_bit_identical(tiny_model_dir, prompts_file, tmp_path, algorithm):
    from drover.train import checkpoint
    from drover.train.online.loop import run_online

    over = {"steps": 5, "prompts_per_step": 2, "samples_per_prompt": 4, "train": {"save_every": 2}}
    whole = config(tiny_model_dir, prompts_file, tmp_path / "whole", algorithm, **json.loads(json.dumps(over)))
    run_online(whole, echo=False)
    killed = json.loads(json.dumps(over))
    killed["train"]["stop_after_steps"] = 3        # stops after step 3: the last checkpoint is step 2
    assert run_online(config(tiny_model_dir, prompts_file, tmp_path / "resumed", algorithm, **killed), echo=False) \
        == tmp_path / "resumed" / "checkpoints"
    run_online(config(tiny_model_dir, prompts_file, tmp_path / "resumed", algorithm, **json.loads(json.dumps(over))),
               echo=False)
    a, b = _weights(tmp_path / "whole" / "model" / "model.safetensors"), \
        _weights(tmp_path / "resumed" / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    # the whole training state (value head, optimiser moments) agrees too, and so does every reward logged
    ca = checkpoint.latest(tmp_path / "whole" / "checkpoints")
    cb = checkpoint.latest(tmp_path / "resumed" / "checkpoints")
    sa, sb = _weights(ca / "model.safetensors"), _weights(cb / "model.safetensors")
    assert sa.keys() == sb.keys() and all(sa[k].equal(sb[k]) for k in sa)
    assert any("value_head" in k for k in sa) == (algorithm == "ppo")

    def rewards(run: str) -> list:
        return [json.loads(line) for line in (tmp_path / run / "rewards.jsonl").read_text().splitlines()]

    assert rewards("whole") == rewards("resumed")


def test_resume_with_other_settings_is_refused(tiny_model_dir, prompts_file, tmp_path):
    from drover.train.online.loop import run_online

    first = config(tiny_model_dir, prompts_file, tmp_path / "run", "grpo", steps=3, samples_per_prompt=2,
                   train={"save_every": 1, "stop_after_steps": 1})
    run_online(first, echo=False)
    changed = config(tiny_model_dir, prompts_file, tmp_path / "run", "grpo", steps=3, samples_per_prompt=2,
                     algorithm_params={"beta": 0.5})
    with pytest.raises(ConfigError, match="made with other settings"):
        run_online(changed, echo=False)
    # more steps is not a change of settings: it continues
    run_online(config(tiny_model_dir, prompts_file, tmp_path / "run", "grpo", steps=4, samples_per_prompt=2),
               echo=False)
    assert train_log(tmp_path / "run")[-1]["step"] == 4


def test_config_errors(tiny_model_dir, prompts_file, tmp_path):
    from drover.train.online.loop import run_online

    with pytest.raises(ConfigError, match="unknown online algorithm 'gpro'.*did you mean 'grpo'"):
        run_online(config(tiny_model_dir, prompts_file, tmp_path / "r", "grpo", algorithm="gpro"), echo=False)
    with pytest.raises(ConfigError, match="algorithm_params: unknown key 'bta'"):
        run_online(config(tiny_model_dir, prompts_file, tmp_path / "r", "grpo", algorithm_params={"bta": 1}),
                   echo=False)
    with pytest.raises(ConfigError, match="grpo needs samples_per_prompt >= 2"):
        run_online(config(tiny_model_dir, prompts_file, tmp_path / "r", "grpo", samples_per_prompt=1), echo=False)
    assert not (tmp_path / "r").exists()      # nothing written before the checks pass


def test_cli_help_lists_every_algorithm_and_reward_kind():
    from drover.commands import rl
    from drover.rewards import REWARDS
    from drover.train.online.algorithms import ALGORITHMS

    assert set(rl.ALGORITHM_NAMES) == set(ALGORITHMS.names())
    for name in ALGORITHMS.names():
        author = ALGORITHMS.get(name).paper.split()[0]
        line = next(line for line in rl.__doc__.splitlines() if line.strip().startswith(name + " "))
        assert author in line, (name, line)
    for kind in REWARDS.names():
        assert kind in rl.__doc__


def test_cli_bad_input_is_one_line_exit_2(tiny_model_dir, prompts_file, tmp_path, capsys):
    from drover.cli import main

    code = main(["rl", "--model", str(tiny_model_dir), "--prompts", str(prompts_file), "--reward", "regexx",
                 "--run-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "unknown reward 'regexx'" in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "messages": [{"role": "user", "content": "hi"}]}\n{"id": "b", "messages": 3}\n')
    code = main(["rl", "--model", str(tiny_model_dir), "--prompts", str(bad), "--reward", "gsm-match",
                 "--run-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "bad.jsonl:2" in err
    # a verifiable reward needs a gold answer in every prompt record: checked before training
    code = main(["rl", "--model", str(tiny_model_dir), "--prompts", str(prompts_file), "--reward", "gsm-match",
                 "--run-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and f"{prompts_file}:1: record 'p0': reward 'gsm-match': no gold answer" in err
    assert not (tmp_path / "r").exists()


def test_cli_runs_a_short_job(tiny_model_dir, prompts_file, tmp_path, capsys):
    from drover.cli import main

    code = main(["rl", "--algorithm", "rloo", "--model", str(tiny_model_dir), "--prompts", str(prompts_file),
                 "--reward", "regex:pattern=[0-9],mode=fraction@2", "--run-dir", str(tmp_path / "r"),
                 "steps=2", "prompts_per_step=2", "samples_per_prompt=2", "max_new_tokens=4", "train.progress=false"])
    assert code == 0
    assert "drover rl rloo: 2 steps, 8 samples" in capsys.readouterr().err
    saved = (tmp_path / "r" / "config.yaml").read_text()
    assert "weight: 2.0" in saved and "lr: 1.0e-06" in saved     # the online defaults under train:


def test_doctests():
    import drover.commands.rl
    import drover.rewards.verifiable

    for module in (drover.rewards.verifiable, drover.commands.rl):
        assert doctest.testmod(module).failed == 0


@pytest.mark.parametrize("algorithm", ["grpo", "ppo", "online-dpo", "rloo"])
def test_micro_batch_size_does_not_change_the_update(tiny_model_dir, prompts_file, tmp_path, algorithm):
    """The loss is divided by the units of the whole batch: 4 micro-batches of 1 prompt and 1 of
    4 give the same loss and gradient (norm before clipping), up to float summation order."""
    from drover.train.online.loop import run_online

    logs = []
    for size in (1, 4):
        run_dir = tmp_path / f"mb{size}"
        run_online(config(tiny_model_dir, prompts_file, run_dir, algorithm, steps=1, prompts_per_step=4,
                          samples_per_prompt=2, train={"micro_batch_size": size, "lr": 1e-3}), echo=False)
        logs.append(train_log(run_dir)[-1])
    a, b = logs
    assert a["units"] == b["units"]
    for key in ("loss", "grad_norm", "reward", "kl"):
        assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-7), key
