"""Issue #12 examples about recipes: a changed upstream artifact re-runs exactly the stages
that read it; a stage whose items failed is "failed", `drover run` exits non-zero with the
count, and a re-run retries exactly the failed items."""

from __future__ import annotations

import json
from pathlib import Path

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
        asked = len(server.requests)
        assert main(["run", str(recipe)]) == 0
        assert len(server.requests) == asked + 1  # only the failed item was asked again
        assert len(_answers(tmp_path)) == 3
        assert json.loads((tmp_path / "run" / "stages" / "answers.json").read_text())["status"] == "done"
