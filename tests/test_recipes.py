"""Recipes: stage skipping, variables, errors, kill-and-resume of `drover run`, and the
quickstart end to end (shrunk) with its report."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from drover.cli import main
from drover.errors import ConfigError
from drover.recipes import RECIPES_DIR, load_recipe

SEEDS = "${drover_data}/alpaca/seed_tasks.jsonl"


def _write_recipe(path: Path, stages: list[dict], **extra) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({"name": "t", "run_dir": str(path.parent / "run"), "stages": stages, **extra}))
    return path


def test_every_shipped_recipe_loads():
    names = sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))
    assert {"quickstart", "gpt4-llm", "tuna"} <= set(names)
    for name in names:
        recipe = load_recipe(name)
        assert recipe.stages, name


def test_stages_run_once_and_rerun_when_args_change(tmp_path, capsys):
    out = tmp_path / "run" / "data" / "seeds.jsonl"
    recipe = _write_recipe(tmp_path / "r.yaml", [
        {"name": "convert", "command": "convert", "args": ["--from", "self-instruct", SEEDS, "${run_dir}/data/seeds.jsonl"]},
    ])
    assert main(["run", str(recipe)]) == 0
    assert sum(1 for _ in out.open()) == 175
    first = out.stat().st_mtime_ns
    assert main(["run", str(recipe)]) == 0
    assert "already done, skipped" in capsys.readouterr().out
    assert out.stat().st_mtime_ns == first
    # A changed command line is a different stage config: it runs again.
    assert main(["run", str(recipe), "stages=" + json.dumps([
        {"name": "convert", "command": "convert",
         "args": ["--from", "self-instruct", "--source", "x", SEEDS, "${run_dir}/data/seeds.jsonl"]}])]) == 0
    assert out.stat().st_mtime_ns != first


def test_failing_stage_is_reported_and_later_stages_do_not_run(tmp_path, capfd):
    recipe = _write_recipe(tmp_path / "r.yaml", [
        {"name": "bad", "command": "convert", "args": ["--from", "alpaca", "${run_dir}/missing.json", "${run_dir}/o.jsonl"]},
        {"name": "after", "command": "report", "args": ["${run_dir}"]},
    ])
    assert main(["run", str(recipe)]) == 2
    err = capfd.readouterr()
    assert "stage 'bad' failed" in err.err and "missing.json: file not found" in err.err
    assert not (tmp_path / "run" / "report.html").exists()


@pytest.mark.parametrize("stages, message", [
    ([{"name": "a", "command": "sfft"}], "unknown command 'sfft'"),
    ([{"name": "a", "command": "report", "args": ["${nope}"]}], r"unknown variable \$\{nope\}"),
    ([{"name": "a", "command": "report", "uses": ["teacher"]}], "unknown service 'teacher'"),
    ([{"name": "a", "command": "report"}, {"name": "a", "command": "report"}], "duplicate stage names"),
])
def test_recipe_errors(tmp_path, stages, message):
    recipe = _write_recipe(tmp_path / "r.yaml", stages)
    with pytest.raises(ConfigError, match=message):
        from drover.recipes import run_recipe

        run_recipe(load_recipe(str(recipe)), echo=lambda *_: None)


def test_unknown_recipe_lists_shipped(capsys):
    assert main(["run", "quickstrat"]) == 2
    assert "quickstart" in capsys.readouterr().err


@pytest.mark.slow
def test_killed_run_resumes_without_redoing_finished_stages(tmp_path, tiny_model_dir):
    """SIGKILL `drover run` (and its stage) mid-generation; the re-run skips the finished
    stage, completes the interrupted one without duplicates, and runs the rest."""
    recipe = _write_recipe(tmp_path / "r.yaml", [
        {"name": "instructions", "command": "convert",
         "args": ["--from", "self-instruct", SEEDS, "${run_dir}/data/instructions.jsonl"]},
        {"name": "answers", "command": "generate", "uses": ["teacher"],
         "args": ["answers", "--input", "${run_dir}/data/instructions.jsonl", "--output", "${run_dir}/data/answers.jsonl",
                  "--run-dir", "${run_dir}", "--teacher", "${services.teacher.url}#tiny", "--max-tokens", "48",
                  "--limit", "60", "teacher_options.concurrency=2",
                  "teacher_options.seed=0"]},  # unseeded, the random teacher may answer nothing
        {"name": "report", "command": "report", "args": ["${run_dir}"], "always": True},
    ], services={"teacher": {"command": "serve", "args": [str(tiny_model_dir), "--port", "${port}",
                                                          "--model-name", "tiny", "--max-batch-size", "2"]}})
    answers = tmp_path / "run" / "data" / "answers.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "drover", "run", str(recipe)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if answers.exists() and sum(1 for _ in answers.open()) >= 5:
            break
        assert proc.poll() is None, "drover run ended before it could be killed"
        time.sleep(0.2)
    else:
        pytest.fail("no answers were written in time")
    service_log = (tmp_path / "run" / "logs" / "service-teacher.log").read_text()
    port = int(re.search(r"127\.0\.0\.1:(\d+)/v1", service_log).group(1))
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and its stage; the service is in its own session
    proc.wait()
    # The service dies with its runner: nothing is left listening on its port.
    import socket

    gone_by = time.monotonic() + 60  # SIGTERM from PR_SET_PDEATHSIG, then a graceful shutdown: slow when loaded
    while time.monotonic() < gone_by:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) != 0:
                break
        time.sleep(0.1)
    else:
        pytest.fail("the teacher service outlived the killed runner")
    partial = sum(1 for _ in answers.open())
    assert 5 <= partial < 60
    assert (tmp_path / "run" / "stages" / "instructions.json").exists()
    assert not (tmp_path / "run" / "stages" / "answers.json").exists()

    done = subprocess.run([sys.executable, "-m", "drover", "run", str(recipe)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "instructions: already done, skipped" in done.stdout
    ids = [json.loads(line)["id"] for line in answers.open() if line.strip()]
    assert len(ids) == 60 and len(set(ids)) == 60
    assert (tmp_path / "run" / "report.html").exists()


@pytest.mark.slow
def test_quickstart_end_to_end_report(tmp_path):
    """The quickstart recipe, shrunk, runs every stage (the preference side too) and its report
    shows every section with figures."""
    run_dir = tmp_path / "qs"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "drover", "run", "quickstart", f"run_dir={run_dir}", "vars.answers_limit=24",
         "vars.bench_limit=1", "vars.judge_limit=3", "vars.epochs=1", "vars.max_tokens=24", "vars.pref_limit=8"],
        env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    page = (run_dir / "report.html").read_text()
    for section in ["config", "data", "training", "summary", "judges", "figures", "samples", "costs", "outputs"]:
        assert f'<section id="{section}">' in page
    # lengths, training (sft, reward, dpo), 2 judge plots
    assert len(re.findall(r'src="data:image/png;base64,', page)) >= 6
    for stage in ("reward", "dpo"):
        assert (run_dir / "train" / stage / "model" / "config.json").exists()
        assert f"Training: qs/train/{stage}" in page
    assert (run_dir / "data" / "comparison.jsonl").stat().st_size > 0
    assert (run_dir / "data" / "policy-vicuna-best-of-4.jsonl").stat().st_size > 0
    for task in ["mmlu_0shot", "gsm_cot", "bbh_cot", "codex_pass1", "truthfulqa_mc"]:
        assert json.loads((run_dir / "eval" / "train-sft-model" / f"{task}.json").read_text())["kind"] == "benchmark"
    assert (run_dir / "train" / "sft" / "model" / "config.json").exists()
    assert "no training logs" not in page and "no benchmark results" not in page


@pytest.mark.parametrize("name", sorted(p.stem for p in RECIPES_DIR.glob("*.yaml")))
def test_every_shipped_recipe_stage_parses(name):
    """Every stage's command line is accepted by its command's parser, and every file it
    names under the shipped recipes/data directories exists (configs nobody validates rot)."""
    import argparse
    import importlib

    from drover.cli import COMMANDS
    from drover.recipes import base_variables, resolve

    recipe = load_recipe(name)
    variables = base_variables(recipe)
    variables.update({f"services.{s}.url": "http://127.0.0.1:1/v1" for s in recipe.services})
    for stage in recipe.stages:
        args = [resolve(a, variables, stage.name) for a in stage.args]
        module = importlib.import_module(COMMANDS[stage.command][0])
        parser = argparse.ArgumentParser(prog=stage.command, exit_on_error=False)
        module.add_arguments(parser)
        try:
            parser.parse_args(args)
        except (argparse.ArgumentError, SystemExit) as exc:
            pytest.fail(f"{name}: stage {stage.name}: {exc}")
        for arg in args:
            for root in (variables["recipes"], variables["drover_data"]):
                if arg.startswith(root) or arg.startswith("@" + root):
                    assert Path(arg.lstrip("@").split("=")[-1]).exists(), f"{name}: {stage.name}: {arg}"
            if "=@" in arg:
                assert Path(arg.split("=@", 1)[1]).exists(), f"{name}: {stage.name}: {arg}"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signals are Linux's")
def test_a_service_whose_runner_died_before_the_signal_was_armed_exits():
    """`_die_with_parent` arms PR_SET_PDEATHSIG in the service's child, then checks the runner is
    still its parent: a child whose runner is already gone (the runner killed between fork and
    prctl) exits at once instead of serving forever as an orphan; under its live runner it runs on."""
    import os

    from drover.recipes import _die_with_parent

    for parent, code in ((os.getpid(), 0), (os.getpid() + 10**6, 1)):
        child = os.fork()
        if child == 0:  # pragma: no cover - the child
            try:
                _die_with_parent(parent)()
            finally:
                os._exit(0)
        _, status = os.waitpid(child, 0)
        assert os.WEXITSTATUS(status) == code


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signals are Linux's")
def test_a_service_starts_where_ctypes_cannot_be_imported(monkeypatch):
    """A Python without _ctypes: the parent-death signal is not armed, and the service starts
    (an ImportError in the preexec_fn was "Exception occurred in preexec_fn", a traceback)."""
    import os
    import subprocess

    from drover.recipes import _die_with_parent

    monkeypatch.setitem(sys.modules, "ctypes", None)  # `import ctypes` raises ImportError
    proc = subprocess.run([sys.executable, "-c", "print('served')"], capture_output=True, text=True,
                          start_new_session=True, preexec_fn=_die_with_parent(os.getpid()))
    assert proc.returncode == 0 and proc.stdout == "served\n"
