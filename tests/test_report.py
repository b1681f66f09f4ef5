"""The report renders every section, embeds its figures and survives missing parts."""

from __future__ import annotations

import base64
import json
import re

from drover.cli import main
from drover.runs import RunDir


def _fake_run(root):
    run = RunDir(root).ensure()
    run.save_config({"name": "demo", "lr": 2e-5})
    run.mark_done("sft", {"a": 1}, {"seconds": 12.5})
    train = RunDir(root / "train" / "sft").ensure()
    for step in range(1, 11):
        train.log("train", step=step, loss=3.0 - 0.1 * step, lr=2e-5 * step / 10, tokens_per_s=1000 + step)
    (root / "eval").mkdir()
    for task, value in [("mmlu", 0.25), ("gsm", 0.05)]:
        (root / "eval" / f"{task}.json").write_text(json.dumps({
            "task": task, "kind": "benchmark", "model": "tiny", "metrics": {"accuracy": value},
            "primary_metric": "accuracy", "n_examples": 10, "examples_file": f"eval/{task}.examples.jsonl",
            "usage": {"prompt_tokens": 100, "completion_tokens": 10, "cost": 0.0}, "time_s": 1.0}))
    (root / "eval" / "judge-vicuna.json").write_text(json.dumps({
        "task": "vicuna", "kind": "judge", "model": "tiny", "judge": "tiny-judge",
        "metrics": {"relative_score": 87.5, "total_model": 70, "total_reference": 80},
        "settings": {"reference": "gpt-3.5"}, "n_examples": 10, "examples_file": "eval/judge-vicuna.examples.jsonl"}))
    (root / "eval" / "judge-alpaca-eval.json").write_text(json.dumps({
        "task": "alpaca-eval", "kind": "judge", "model": "tiny", "judge": "tiny-judge",
        "metrics": {"win_rate": 12.5, "standard_error": 3.1}, "n_examples": 20}))
    (root / "eval" / "broken.json").write_text("{not json")


def test_report_has_every_section_and_images(tmp_path):
    root = tmp_path / "run"
    _fake_run(root)
    assert main(["report", str(root)]) == 0
    page = (root / "report.html").read_text()
    for section in ["config", "data", "training", "benchmarks", "judges", "costs", "outputs"]:
        assert f"<section id='{section}'>" in page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 3  # training curves, relative scores, win rates
    for image in images:
        assert base64.b64decode(image).startswith(b"\x89PNG")
    # Tülu-style table: models x tasks with the average of the primary metrics.
    assert re.search(r"<td>tiny</td><td>0.25</td><td>0.05</td><td>0.15</td>", page)
    assert "eval/mmlu.examples.jsonl" in page
    md = (root / "report.md").read_text()
    assert "| model | mmlu (accuracy) | gsm (accuracy) | average |" in md
    assert (root / "report-files" / "relative-scores.png").exists()


def test_report_of_empty_run(tmp_path):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 0
    assert "no benchmark results" in (tmp_path / "empty" / "report.html").read_text()


def test_report_missing_dir(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "run directory not found" in capsys.readouterr().err
