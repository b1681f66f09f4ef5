"""Issue #12 examples about recipes: a changed upstream artifact re-runs exactly the stages
that read it; a stage whose items failed is "failed", `drover run` exits non-zero with the
count, and a re-run retries exactly the failed items."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from drover.cli import main
from drover.llm.testing import FakeOpenAIServer


def _recipe(tmp_path: Path, url: str) -> Path:
    stages = [
        {"name": "prep", "command": "convert", "args": ["--from", "alpaca", str(tmp_path / "alpaca.json"),
                                                        "${run_dir}/data/instructions.jsonl"]},
        {"name": "answers", "command": "generate",
         "args": ["answers", "--input", "${run_dir}/data/instructions.jsonl", "--output",
                  "${run_dir}/data/answers.jsonl", "--run-dir", "${run_dir}", "--teacher", f"{url}#fake",
                  "--max-tokens", "8", "--prompt", "chat"]},
    ]
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "run_dir": str(tmp_path / "run"), "stages": stages}))
    return path


def _alpaca(tmp_path: Path, words: list[str]) -> None:
    rows = [{"instruction": f"say {w}", "input": "", "output": w} for w in words]
    (tmp_path / "alpaca.json").write_text(json.dumps(rows))


def _answers(tmp_path: Path) -> dict[str, str]:
    lines = (tmp_path / "run" / "data" / "answers.jsonl").read_text().splitlines()
    return {r["id"]: r["messages"][-1]["content"] for r in map(json.loads, lines)}


def test_changed_upstream_output_reruns_downstream_and_unchanged_skips(tmp_path, capsys):
    _alpaca(tmp_path, ["one", "two", "three"])
    with FakeOpenAIServer() as server:
        recipe = _recipe(tmp_path, server.base_url)
        assert main(["run", str(recipe)]) == 0
        first = _answers(tmp_path)
        assert len(first) == 3 and len(server.requests) == 3
        capsys.readouterr()
        assert main(["run", str(recipe)]) == 0  # nothing changed: both skipped
        assert capsys.readouterr().out.count("already done, skipped") == 2
        _alpaca(tmp_path, ["one", "two", "four"])  # the upstream input changed in place
        assert main(["run", str(recipe), "--list"]) == 0
        assert "stale    prep" in capsys.readouterr().out
        assert main(["run", str(recipe)]) == 0
        out = capsys.readouterr().out
        assert "already done" not in out and "--force" in out  # downstream starts fresh
        answers = _answers(tmp_path)
        assert len(answers) == 3 and "say four" in " ".join(answers.values())
        assert "say three" not in " ".join(answers.values())
        marker = json.loads((tmp_path / "run" / "stages" / "answers.json").read_text())
        assert marker["status"] == "done" and any(p.endswith("instructions.jsonl") for p in marker["inputs"])


def test_failed_items_leave_the_stage_failed_and_a_rerun_retries_exactly_them(tmp_path, capsys):
    _alpaca(tmp_path, ["one", "two", "three"])
    with FakeOpenAIServer() as server:
        recipe = _recipe(tmp_path, server.base_url)
        server.script("400")  # the first request fails (a client error: not retried)
        assert main(["run", str(recipe)]) == 1
        out = capsys.readouterr().out
        assert "1 item(s) failed" in out
        marker = json.loads((tmp_path / "run" / "stages" / "answers.json").read_text())
        assert marker["status"] == "failed" and marker["failed"] == 1
        assert len(_answers(tmp_path)) == 2
        assert main(["run", str(recipe), "--list"]) == 0
        assert "failed   answers" in capsys.readouterr().out
        asked = len(server.requests)
        assert main(["run", str(recipe)]) == 0
        assert len(server.requests) == asked + 1  # only the failed item was asked again
        assert len(_answers(tmp_path)) == 3
        assert json.loads((tmp_path / "run" / "stages" / "answers.json").read_text())["status"] == "done"


@pytest.mark.slow
def test_retraining_in_a_recipe_reruns_the_benchmarks_and_the_report_shows_the_new_numbers(tmp_path, tiny_model_dir):
    """The issue's first example: `vars.epochs=5` after a finished run re-trains into the same
    policy_dir; the benchmark stage must re-run (not "already done") on the new weights."""
    from test_train_engine import codealpaca_jsonl

    codealpaca_jsonl(tmp_path / "d.jsonl", 8)
    stages = [
        {"name": "sft", "command": "sft",
         "args": ["--model", str(tiny_model_dir), "--data", str(tmp_path / "d.jsonl"), "--run-dir", "${run_dir}/sft",
                  "--no-progress", "epochs=${epochs}", "lr=1e-2", "max_length=96", "micro_batch_size=4",
                  "mixed_precision=no"]},
        {"name": "benchmarks", "command": "eval",
         "args": ["--model", "${run_dir}/sft/model", "--tasks", "truthfulqa_mc", "--limit", "2", "--run-dir",
                  "${run_dir}", "--chat-format", "none"]},
        {"name": "report", "command": "report", "always": True, "args": ["${run_dir}"]},
    ]
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"name": "t", "run_dir": str(tmp_path / "run"), "vars": {"epochs": 1},
                                      "stages": stages}))
    result = tmp_path / "run" / "eval" / "sft-model" / "truthfulqa_mc.json"
    assert main(["run", str(recipe)]) == 0
    first = json.loads(result.read_text())
    assert main(["run", str(recipe), "vars.epochs=3"]) == 0
    second = json.loads(result.read_text())
    assert second["model"]["fingerprint"] != first["model"]["fingerprint"]
    assert second["key"] != first["key"]
    assert (second["metrics"], second["provenance"]["inputs"]) != (first["metrics"], first["provenance"]["inputs"])
    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    report = json.loads((tmp_path / "run" / "report.json").read_text(), parse_constant=refuse)  # strict parser
    for path in (tmp_path / "run").rglob("*.json"):
        json.loads(path.read_text(), parse_constant=refuse)
    shown = [r for r in report["results"] if r["name"] == "truthfulqa_mc"]  # report.json as the report writes it
    assert [b["metrics"] for b in shown] == [second["metrics"]]
    steps = [json.loads(x)["step"] for x in (tmp_path / "run" / "sft" / "log.jsonl").read_text().splitlines()
             if json.loads(x)["event"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]  # retrained from scratch (--force), one line per step


def test_a_service_is_identified_by_the_content_of_every_path_it_names(tmp_path):
    """`PATH`, `key=PATH`, `key=[A,B]` and `--flag=PATH` all count: editing the chat template a
    service reads through `--chat-template=FILE` changes its identity (and so its cache key)."""
    from drover.recipes import Service, path_args, service_identity

    model, template, run = tmp_path / "model", tmp_path / "chat.jinja", tmp_path / "runs" / "r"
    model.mkdir()
    (model / "config.json").write_text("{}")
    template.write_text("{{ messages }}")
    run.mkdir(parents=True)
    args = [str(model), f"--chat-template={template}", "--port", "${port}", f"data=[{model},{template}]"]
    assert path_args(args, run) == [str(model), str(template)]
    service = Service("serve", args)
    first = service_identity("s", service, {}, run)
    assert service_identity("s", service, {}, run) == first
    template.write_text("{{ messages | tojson }}")
    assert service_identity("s", service, {}, run) != first
