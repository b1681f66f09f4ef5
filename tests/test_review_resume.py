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


def test_a_deleted_output_of_a_first_run_reruns_its_stage(tmp_path, capsys):
    # The first run creates data/instructions.jsonl (prep's output, answers' input). Deleted, prep
    # must run again ("missing"), not be skipped as done while answers fails on the absent file.
    from test_identity_recipes import _alpaca, _recipe

    from drover.cli import main
    from drover.llm.testing import FakeOpenAIServer

    _alpaca(tmp_path, ["one", "two", "three"])
    with FakeOpenAIServer() as server:
        recipe = _recipe(tmp_path, server.base_url)
        assert main(["run", str(recipe)]) == 0
        marker = json.loads((tmp_path / "run" / "stages" / "prep.json").read_text())
        assert [p for p in marker["outputs"] if p.endswith("instructions.jsonl")]
        (tmp_path / "run" / "data" / "instructions.jsonl").unlink()
        capsys.readouterr()
        assert main(["run", str(recipe), "--list"]) == 0
        assert "missing  prep" in capsys.readouterr().out
        asked = len(server.requests)
        assert main(["run", str(recipe)]) == 0
        assert (tmp_path / "run" / "data" / "instructions.jsonl").is_file()
        assert len(server.requests) == asked  # same instructions again: the answers came from the cache


def test_two_endpoints_under_one_served_name_never_replace_each_others_results(tmp_path, capsys):
    # Both servers serve "llama": the label is the served name, so the second eval used to
    # overwrite the first one's RUN/eval/llama/gsm_cot.json. Now it refuses (exit 2, one line,
    # nothing changed) and --name keeps both; the same endpoint re-evaluated still replaces its own.
    from drover.cli import main
    from drover.llm.testing import FakeOpenAIServer

    run = tmp_path / "run"
    common = ["--tasks", "gsm_cot", "--limit", "2", "--run-dir", str(run)]
    with FakeOpenAIServer() as a, FakeOpenAIServer() as b:
        assert main(["eval", "--model", f"{a.base_url}#llama", *common]) == 0
        first = (run / "eval" / "llama" / "gsm_cot.json").read_bytes()
        capsys.readouterr()
        assert main(["eval", "--model", f"{b.base_url}#llama", *common]) == 2
        err = capsys.readouterr().err.strip()
        assert "another model" in err and "--name" in err and "\n" not in err
        assert (run / "eval" / "llama" / "gsm_cot.json").read_bytes() == first
        assert main(["eval", "--model", f"{b.base_url}#llama", "--name", "llama-b", *common]) == 0
        assert (run / "eval" / "llama-b" / "gsm_cot.json").is_file()
        # the same endpoint under other settings: its own result, replaced
        assert main(["eval", "--model", f"{a.base_url}#llama", "--tasks", "gsm_cot", "--limit", "1",
                     "--run-dir", str(run)]) == 0
        assert (run / "eval" / "llama" / "gsm_cot.json").read_bytes() != first


def test_a_deleted_result_makes_its_eval_stage_missing(tmp_path, capsys):
    # Results live below the run directory, which is never a path argument: the eval command
    # reports them (runs.report_stage outputs), so deleting one re-runs its stage.
    import yaml

    from drover.cli import main
    from drover.llm.testing import FakeOpenAIServer

    with FakeOpenAIServer() as server:
        stages = [{"name": "bench", "command": "eval", "args": [
            "--model", f"{server.base_url}#fake", "--tasks", "gsm_cot", "--limit", "2", "--run-dir", "${run_dir}"]}]
        recipe = tmp_path / "r.yaml"
        recipe.write_text(yaml.safe_dump({"name": "t", "run_dir": str(tmp_path / "run"), "stages": stages}))
        assert main(["run", str(recipe)]) == 0
        result = tmp_path / "run" / "eval" / "fake" / "gsm_cot.json"
        marker = json.loads((tmp_path / "run" / "stages" / "bench.json").read_text())
        assert str(result) in marker["outputs"]
        result.unlink()
        capsys.readouterr()
        assert main(["run", str(recipe), "--list"]) == 0
        assert "missing  bench" in capsys.readouterr().out
        assert main(["run", str(recipe)]) == 0
        assert result.is_file()
