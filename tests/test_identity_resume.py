"""Issue #12 examples about resuming: changed SFT settings refuse (nothing written) or start
fresh on --force; log.jsonl keeps one line per step; generation refuses another --max-tokens
but continues a larger --limit; base and tuned results coexist and a retrained model is
re-evaluated."""

from __future__ import annotations

import json
import shutil

import pytest
from test_train_engine import _one_thread, codealpaca_jsonl, train_config  # noqa: F401 (autouse fixture)

from drover.cli import main
from drover.errors import ConfigError


def _snapshot(root):
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*") if p.is_file()}


def _train_steps(run_dir):
    events = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return [e["step"] for e in events if e["event"] == "train"]


def test_changed_sft_settings_refuse_without_writing_and_force_starts_fresh(tiny_model_dir, tmp_path):
    from drover.train.runner import run_training

    data = codealpaca_jsonl(tmp_path / "d.jsonl", 8)
    run_dir = tmp_path / "run"
    common = {"micro_batch_size": 2, "save_every": 1, "epochs": 2}
    run_training(train_config(tiny_model_dir, [data], run_dir, stop_after_steps=3, **common), echo=False)
    before = _snapshot(run_dir)
    for change in ({"lr": 5e-4}, {"max_steps": 5}, {"seed": 3}, {"epochs": 3}):
        with pytest.raises(ConfigError) as err:
            run_training(train_config(tiny_model_dir, [data], run_dir, **{**common, **change}), echo=False)
        message = str(err.value)
        assert next(iter(change)) in message or "plan" in message
        assert "--force" in message and "\n" not in message
        assert _snapshot(run_dir) == before  # config.yaml, log.jsonl, checkpoints: untouched
    other = codealpaca_jsonl(tmp_path / "other.jsonl", 8, start=8)
    with pytest.raises(ConfigError, match="training data"):
        run_training(train_config(tiny_model_dir, [other], run_dir, **common), echo=False)
    assert _snapshot(run_dir) == before
    # --force: a fresh run under the new settings, nothing of the old one kept
    run_training(train_config(tiny_model_dir, [data], run_dir, force=True, **{**common, "lr": 5e-4}), echo=False)
    assert _train_steps(run_dir) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert "lr: 0.0005" in (run_dir / "config.yaml").read_text()
    assert (run_dir / "model" / "provenance.json").is_file() and (run_dir / "model" / "drover-fingerprint.json").is_file()


def test_log_has_one_line_per_step_after_three_resumes(tiny_model_dir, tmp_path):
    from drover.train.runner import run_training

    data = codealpaca_jsonl(tmp_path / "d.jsonl", 8)
    run_dir = tmp_path / "run"
    common = {"micro_batch_size": 2, "save_every": 2, "epochs": 2}  # 8 steps, checkpoints every 2
    for stop in (3, 5, 7):  # killed after 3 (checkpoint 2), after 5 (4), after 7 (6)
        run_training(train_config(tiny_model_dir, [data], run_dir, stop_after_steps=stop, **common), echo=False)
    run_training(train_config(tiny_model_dir, [data], run_dir, **common), echo=False)
    assert _train_steps(run_dir) == [1, 2, 3, 4, 5, 6, 7, 8]


def test_more_epochs_continue_only_when_the_schedule_allows(tiny_model_dir, tmp_path):
    from drover.train.runner import run_training

    data = codealpaca_jsonl(tmp_path / "d.jsonl", 8)
    run_dir = tmp_path / "run"
    constant = {"micro_batch_size": 4, "save_every": 1, "schedule": "constant", "warmup_ratio": 0.0}
    run_training(train_config(tiny_model_dir, [data], run_dir, epochs=1, **constant), echo=False)
    run_training(train_config(tiny_model_dir, [data], run_dir, epochs=2, **constant), echo=False)  # appended
    assert _train_steps(run_dir) == [1, 2, 3, 4]
    linear = {**constant, "schedule": "linear"}
    run_training(train_config(tiny_model_dir, [data], tmp_path / "linear", epochs=1, **linear), echo=False)
    with pytest.raises(ConfigError, match="linear learning-rate schedule of the 2 steps already done"):
        run_training(train_config(tiny_model_dir, [data], tmp_path / "linear", epochs=2, **linear), echo=False)


# --- generation ------------------------------------------------------------------------------
def test_generate_with_another_max_tokens_is_not_already_done(tmp_path, capsys):
    from drover.llm.testing import FakeOpenAIServer

    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "messages": [{"role": "user", "content": f"q{i}"}]}) + "\n"
                            for i in range(4)))
    out = tmp_path / "run" / "data" / "answers.jsonl"
    with FakeOpenAIServer() as server:
        base = ["generate", "answers", "--input", str(data), "--output", str(out),
                "--teacher", f"{server.base_url}#fake", "--max-tokens", "16"]
        assert main([*base, "--limit", "2"]) == 0
        assert len(out.read_text().splitlines()) == 2
        assert main([*base, "--limit", "4"]) == 0  # a larger limit continues
        assert len(out.read_text().splitlines()) == 4 and len(server.requests) == 4
        before = out.read_bytes()
        capsys.readouterr()
        changed = [a if a != "16" else "32" for a in base]
        assert main(changed) == 2
        err = capsys.readouterr().err
        assert "max_tokens" in err and "--force" in err and err.count("\n") == 1
        assert out.read_bytes() == before
        assert main([*changed, "--force"]) == 0
        assert len(out.read_text().splitlines()) == 4 and len(server.requests) == 8


# --- benchmarks per model ----------------------------------------------------------------------
def _retrain(model_dir):
    import torch
    from safetensors.torch import load_file, save_file

    path = model_dir / "model.safetensors"
    weights = load_file(str(path))
    for name in list(weights)[:4]:
        weights[name] = weights[name] * 0.5 + 0.01 * torch.randn_like(weights[name])
    save_file(weights, str(path), metadata={"format": "pt"})


def test_base_and_tuned_results_coexist_and_retraining_reruns(tiny_model_dir, tmp_path, capsys):
    from drover.report.collect import collect
    from drover.results import iter_results

    run = tmp_path / "run"
    base, tuned = run / "models" / "base", run / "train" / "sft" / "model"
    shutil.copytree(tiny_model_dir, base)
    shutil.copytree(tiny_model_dir, tuned)
    _retrain(tuned)
    common = ["--run-dir", str(run), "--limit", "1", "--chat-format", "none"]
    assert main(["eval", "--model", str(tuned), "--tasks", "truthfulqa_mc", *common]) == 0
    assert main(["eval", "--model", str(base), "--tasks", "mmlu_0shot,truthfulqa_mc", *common]) == 0
    results = iter_results(run, kind="benchmark")
    assert sorted((r["model"]["label"], r["task"]) for r in results) == [
        ("models/base", "mmlu_0shot"), ("models/base", "truthfulqa_mc"), ("train/sft/model", "truthfulqa_mc")]
    tuned_result = next(r for r in results if r["model"]["label"] == "train/sft/model")
    assert tuned_result["provenance"]["versions"]["torch"] and tuned_result["provenance"]["inputs"]["model"]
    assert {r.row for r in collect([run])[0].results if r.kind == "benchmark"} == {"models/base", "train/sft/model"}
    # the same command again: nothing re-runs
    capsys.readouterr()
    assert main(["eval", "--model", str(tuned), "--tasks", "truthfulqa_mc", *common]) == 0
    assert "done already" in capsys.readouterr().out
    # retrained in place: the same label re-runs and its numbers are the new model's
    _retrain(tuned)
    assert main(["eval", "--model", str(tuned), "--tasks", "truthfulqa_mc", *common]) == 0
    assert "eval truthfulqa_mc: running" in capsys.readouterr().out
    again = next(r for r in iter_results(run) if r["model"]["label"] == "train/sft/model")
    assert again["key"] != tuned_result["key"] and again["model"]["fingerprint"] != tuned_result["model"]["fingerprint"]


def test_rerank_under_other_settings_refuses_and_force_starts_fresh(tiny_model_dir, tmp_path, capsys):
    from drover.records import Message, Ranked, Response, read_ranked, write_jsonl

    src = [Ranked(f"q{j}", [Message("user", f"question {j}?")],
                  [Response(f"reply {j} number {i} " + "word " * i) for i in range(4)]) for j in range(3)]
    write_jsonl(tmp_path / "in.jsonl", src)
    base = ["rerank", "--input", str(tmp_path / "in.jsonl"), "--reward-model", str(tiny_model_dir),
            "--run-dir", str(tmp_path / "run"), "--select", "rso", "--rso-k", "2"]
    ranked = tmp_path / "run" / "data" / "ranked.jsonl"
    assert main([*base, "--limit", "2"]) == 0
    assert main([*base, "--limit", "3"]) == 0  # a larger limit continues
    assert len(list(read_ranked(ranked))) == 3
    before = ranked.read_bytes()
    capsys.readouterr()
    assert main([*base, "--rso-beta", "2.0"]) == 2
    err = capsys.readouterr().err
    assert "rso_beta" in err and "--force" in err
    assert ranked.read_bytes() == before
    assert main([*base, "--rso-beta", "2.0", "--force"]) == 0
    assert len(list(read_ranked(ranked))) == 3


def test_a_run_resumed_at_its_last_step_says_so_instead_of_a_nan_loss(tiny_model_dir, tmp_path, capsys):
    from drover.train.runner import run_training

    data = codealpaca_jsonl(tmp_path / "d.jsonl", 4)
    run_dir = tmp_path / "run"
    config = {"micro_batch_size": 2, "save_every": 1, "epochs": 1}
    run_training(train_config(tiny_model_dir, [data], run_dir, **config), echo=True)
    first = capsys.readouterr().err
    assert "final loss" in first and "nan" not in first
    run_training(train_config(tiny_model_dir, [data], run_dir, **config), echo=True)
    again = capsys.readouterr().err
    assert "no step left to train" in again and "nan" not in again
    summaries = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()
                 if json.loads(line)["event"] == "summary"]
    assert isinstance(summaries[0]["loss"], float) and summaries[-1]["loss"] is None
