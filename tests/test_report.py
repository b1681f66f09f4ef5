"""The report over several runs and models: tables checked against the result files.

Two run directories, three models (base and sft in one run, dpo in another), written
through `drover.results.write_result` with per-example files. Expected numbers are
worked out by hand in the comments (exact binomial intervals are checked against SciPy).
"""

from __future__ import annotations

import csv
import html
import json
import os
import re
from pathlib import Path

import pytest

from drover.cli import main
from drover.identity import digest
from drover.report import tables
from drover.report.collect import collect
from drover.report.uncertainty import bootstrap, clopper_pearson, sign_test
from drover.results import write_result
from drover.runs import RunDir


def _record(kind, name, label, metrics, n, failures=0, **extra):
    return {"kind": kind, "name": name, "model": {"label": label, "spec": f"runs/x/{label}/model",
                                                   "fingerprint": digest(label)},
            "key": digest([kind, name, label]), "metrics": metrics, "settings": {"seed": 1}, "n_examples": n,
            "failures": failures, "usage": {"prompt_tokens": 10, "completion_tokens": 5, "cost": 0.0},
            "provenance": {"recipe": "test", "drover": "0.1.0"}, **extra}


def _binary(ids, correct, **fields):
    return [{"id": i, "prediction": "x", "reference": "y", "correct": bool(c), **fields} for i, c in zip(ids, correct)]


GSM = {"base": [0] * 10, "sft": [1] + [0] * 9, "dpo": [1] * 10}
MMLU0 = {"base": [1, 0, 0, 0, 1, 0, 0, 0], "sft": [1, 1, 0, 0, 1, 1, 0, 0], "dpo": [1, 1, 1, 0, 1, 1, 1, 0]}
MMLU5 = {"base": 25.0, "sft": 50.0, "dpo": 50.0}
TQA = {"base": [0.2, 0.4], "sft": [0.5, 0.7], "dpo": [0.8, 0.8]}
TOXIC = {"base": [1, 0, 1, 0], "sft": [1, 0, 0, 0], "dpo": [0, 0, 0, 0]}
PREFS = {"sft": [2.0, 2.0, 1.0, 1.5], "dpo": [2.0, 2.0, 2.0, 2.0]}


def _benchmarks(root, label):
    ids = [f"g{i}" for i in range(10)]
    write_result(root, _record("benchmark", "gsm_cot", label, {"accuracy": 10.0 * sum(GSM[label])}, 10,
                               primary_metric="accuracy", title="GSM CoT"), _binary(ids, GSM[label]))
    mmlu = _binary([f"m{i}" for i in range(8)], MMLU0[label])
    for i, e in enumerate(mmlu):
        e["subject"] = "algebra" if i < 4 else "anatomy"
    write_result(root, _record("benchmark", "mmlu_0shot", label, {"accuracy": 12.5 * sum(MMLU0[label])}, 8,
                               primary_metric="accuracy", title="MMLU 0-shot"), mmlu)
    write_result(root, _record("benchmark", "mmlu_5shot", label, {"accuracy": MMLU5[label]}, 8,
                               primary_metric="accuracy", title="MMLU 5-shot"), [])
    write_result(root, _record("benchmark", "truthfulqa_mc", label,
                               {"mc1": 0.0, "mc2": 50.0 * sum(TQA[label])}, 2, primary_metric="mc2",
                               title="TruthfulQA MC2"),
                 [{"id": f"t{i}", "mc1": 0.0, "mc2": v} for i, v in enumerate(TQA[label])])
    # No primary_metric / higher_is_better in the record: the registered task declares them.
    write_result(root, _record("benchmark", "toxigen", label, {"toxic": 25.0 * sum(TOXIC[label])}, 4),
                 [{"id": f"x{i}", "group": "g", "toxic": float(v)} for i, v in enumerate(TOXIC[label])])


def _judge(root, label, prefs):
    examples = [{"id": str(i), "meta": {"index": i}, "preference": p, "output": "word " * (3 + i),
                 "instruction": f"question {i}", "raw": f"Output ({'b' if p == 2 else 'a'})",
                 "verdict": {"type": "preference", "value": p}} for i, p in enumerate(prefs)]
    win = 100 * sum(p - 1 for p in prefs) / len(prefs)
    write_result(root, _record("judge", "alpaca_eval_v2", label, {"win_rate": win, "standard_error": 1.0,
                                                                  "lc_win_rate_estimate": win - 1}, len(prefs),
                               primary_metric="win_rate", settings={"reference": "gpt4_turbo"}), examples)


def _failed_judge(root, label):
    examples = [{"id": str(i), "meta": {"index": i}, "preference": None, "raw": "gibberish",
                 "verdict": {"type": "parse_failure", "reason": "no preference found", "raw": "gibberish"}}
                for i in range(4)]
    write_result(root, _record("judge", "alpaca_eval_v2", label, {"win_rate": None, "standard_error": None}, 4,
                               failures=4, primary_metric="win_rate", settings={"reference": "gpt4_turbo"},
                               breakdown={"failures": [{"id": "0", "reason": "no preference found"}]}), examples)


VICUNA = {"sft": [6, 8, 4, 8], "dpo": [8, 9, 8, 9]}  # the model's score per question; the reference gets 8


def _vicuna(root, label, tmp_path):
    """As the judges write them: positional score pairs in both orders ("ab" = reference first), no
    `preference` or `output` field; the answers file named in the settings."""
    answers = tmp_path / f"{label}-vicuna.jsonl"
    answers.write_text("".join(json.dumps({"id": f"vicuna_{q}", "messages": [
        {"role": "user", "content": f"question {q}?"}, {"role": "assistant", "content": f"{label} answer {q} " * q}]})
        + "\n" for q in range(1, 5)))
    examples = []
    for q, score in enumerate(VICUNA[label], 1):
        for order, pair in (("ab", (8, score)), ("ba", (score, 8))):
            examples.append({"id": f"{q}/{order}", "raw": f"{pair[0]} {pair[1]}\nrationale {q}{order}",
                             "verdict": {"type": "score_pair", "first": pair[0], "second": pair[1]},
                             "meta": {"question_id": str(q), "order": order}, "error": None})
    total = sum(VICUNA[label])
    write_result(root, _record("judge", "vicuna", label, {"relative_score": 100 * total / 32, "total_model": total,
                                                          "total_reference": 32}, 4, primary_metric="relative_score",
                               task="vicuna80", settings={"reference": "gpt35", "model_outputs": str(answers)}),
                 examples)


def make_runs(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "runA", tmp_path / "runB"
    for root, labels in ((a, ["base", "sft"]), (b, ["dpo"])):
        RunDir(root).ensure()
        for label in labels:
            _benchmarks(root, label)
    _judge(a, "sft", PREFS["sft"])
    _judge(b, "dpo", PREFS["dpo"])
    _failed_judge(a, "base")
    _vicuna(a, "sft", tmp_path)
    # Unnatural Instructions for sft only: ROUGE-L per example with its ground-truth length bucket.
    rouge = [("0-2", 0.5), ("0-2", 0.7), ("3-5", 0.4), (">10", 0.1)]
    write_result(a, _record("benchmark", "unnatural", "sft", {"rougeL": 100 * sum(v for _, v in rouge) / 4}, 4,
                            primary_metric="rougeL", title="Unnatural"),
                 [{"id": f"u{i}", "bucket": b, "rougeL": v} for i, (b, v) in enumerate(rouge)])
    _vicuna(b, "dpo", tmp_path)
    train = RunDir(a / "train" / "dpo").ensure()
    for step in range(1, 6):
        train.log("train", step=step, loss=1.0 / step, lr=1e-3, reward_accuracy=0.5 + step / 20,
                  reward_margin=0.1 * step)
    train.log("eval", step=5, loss=0.3, reward_accuracy=0.8)
    (a / "config.yaml").write_text("name: demo\nrun_dir: runs/x\nvars: {out: '${run_dir}/train'}\nstages:\n"
                                   "  - {name: sft, command: sft, args: [--run-dir, '${out}/sft']}\n")
    return a, b


def _row(table, label):
    return next(r for r in table.rows if r[0].split(" (baseline)")[0] == label)


def test_intervals_and_sign_test_by_hand():
    # 0 of 10: upper bound solves 0.5^... (1-p)^10 = 0.025 -> p = 1 - 0.025^(1/10) = 0.30850
    assert clopper_pearson(0, 10) == (0.0, pytest.approx(1 - 0.025 ** 0.1, abs=1e-9))
    assert clopper_pearson(10, 10) == (pytest.approx(0.025 ** 0.1, abs=1e-9), 1.0)
    stats = pytest.importorskip("scipy.stats")
    for k, n in [(1, 10), (27, 114), (5, 7)]:
        ref = stats.binomtest(k, n).proportion_ci(0.95, "exact")
        assert clopper_pearson(k, n) == (pytest.approx(ref.low, abs=1e-9), pytest.approx(ref.high, abs=1e-9))
    # 10 wins, 0 losses: p = 2 * 0.5^10; ties are dropped.
    assert sign_test([1] * 10 + [0], [0] * 10 + [0]) == (pytest.approx(2 * 0.5 ** 10), 10, 0)
    assert sign_test([1, 0], [0, 1])[0] == 1.0
    assert bootstrap([0.3, 0.3, 0.3]) == (pytest.approx(0.3), pytest.approx(0.3))
    assert bootstrap([0.0, 1.0, 0.5]) == bootstrap([0.0, 1.0, 0.5])  # fixed seed
    # Stratified: one group constant, the other varying -> the macro mean moves by half as much.
    low, high = bootstrap([1.0, 1.0, 0.0, 1.0], groups=["a", "a", "b", "b"])
    assert 0.5 <= low <= high <= 1.0


def test_tables_against_result_files(tmp_path):
    a, b = make_runs(tmp_path)
    runs = collect([a, b])
    results = [r for run in runs for r in run.results]
    table = tables.summary_table(results, "base")
    # Tülu Table 8 order (MMLU, GSM, ToxiGen, TruthfulQA), lower-is-better marked.
    assert table.header == ["model", "MMLU 0-shot (accuracy)", "MMLU 5-shot (accuracy)", "GSM CoT (accuracy)",
                            "ToxiGen (toxic) ↓", "TruthfulQA MC2 (mc2)", "Unnatural (rougeL)", "average"]
    assert [r[0] for r in table.rows] == ["base (baseline)", "sft", "dpo"]
    base, sft, dpo = _row(table, "base"), _row(table, "sft"), _row(table, "dpo")
    # GSM: 0/10 -> [0, 30.8]; 1/10 -> Clopper-Pearson [0.25, 44.5]; 10/10 -> [69.2, 100].
    assert base[3] == "0.0 [0.0, 30.8]"
    assert sft[3] == "10.0 [0.3, 44.5] (+10.0)"          # 1 win, 0 losses: p = 1, no mark
    assert dpo[3] == "100.0 [69.2, 100.0] (+100.0*)"     # 10:0, p = 0.002
    # MMLU 0-shot 2/8 = 25.0, exact interval [3.2, 65.1]; dpo 6/8 vs base 2/8: 4:0 -> p = 0.125, no mark.
    assert base[1] == "25.0 [3.2, 65.1]"
    assert dpo[1].startswith("75.0 [34.9, 96.8] (+50.0)")
    assert base[2] == "25.0" and sft[2] == "50.0 (+25.0)"  # no examples file: no interval, still a delta
    # ToxiGen: lower is better, shown, not averaged.
    assert base[4].startswith("50.0 [") and dpo[4].startswith("0.0 [")
    # TruthfulQA MC2: mean of per-example mc2 x 100, bootstrap interval within the range of the values.
    assert sft[5].startswith("60.0 [50.0, 70.0] (+30.0)")
    # Average per benchmark (MMLU settings first): base (25 + 0 + 30) / 3; a per-task mean would give 20.0.
    assert [base[7], sft[7], dpo[7]] == ["18.3", "40.0", "80.8"]
    assert sft[6].startswith("42.5 [") and base[6] == "–"
    assert any("not averaged: toxigen" in n for n in table.notes)
    assert any("left out (not run for every model): unnatural" in n for n in table.notes)
    assert any("exact binomial" in n and "bootstrap" in n for n in table.notes)


def test_judge_table_failed_and_significance(tmp_path):
    a, b = make_runs(tmp_path)
    results = [r for run in collect([a, b]) for r in run.results]
    judge, vicuna = tables.judge_tables(results, "sft")
    rows = {r[0].split(" (baseline)")[0]: r[1] for r in judge.rows}
    assert rows["base"].startswith("failed: 4 failed item(s)") and "no preference found" in rows["base"]
    # sft: mean(pref - 1) = (1 + 1 + 0 + .5) / 4 = 62.5; dpo 100: vs sft 2 wins (indexes 2, 3), 0 losses, p = 0.5.
    assert rows["sft"].startswith("62.5 [")
    assert rows["dpo"] == "100.0 [39.8, 100.0] (+37.5)"  # 4 of 4 won outright: exact binomial
    # Vicuna-80: 26 / 32 = 81.25 and 34 / 32 = 106.25, interval by bootstrap over questions (ratio of totals);
    # dpo's share is higher on all 4 questions: p = 2 * 0.5^4 = 0.125.
    rows = {r[0].split(" (baseline)")[0]: r[1] for r in vicuna.rows}
    assert rows["sft"].startswith("81.2 [") and rows["dpo"].startswith("106.2 [") and rows["dpo"].endswith("(+25.0)")
    low, high = map(float, re.search(r"\[(.*), (.*)\]", rows["sft"]).groups())
    assert 50.0 <= low < 81.25 < high <= 100.0
    assert any("ratio of totals" in n for n in vicuna.notes)
    pairwise = {t.title: t for t in tables.pairwise_tables(results)}
    assert _row(pairwise["vicuna80 (relative_score): paired sign test"], "dpo")[1] == "p=0.125 (4:0 of 4)"
    gsm = pairwise["gsm_cot (accuracy): paired sign test"]
    assert _row(gsm, "dpo")[1] == "p=0.00195 (10:0 of 10)*"


def test_failed_judge_is_drawn_as_failed(tmp_path, monkeypatch):
    from drover.report import figures, plots

    a, b = make_runs(tmp_path)
    results = [r for run in collect([a, b]) for r in run.results]
    drawn = []
    monkeypatch.setattr(plots, "bars_with_intervals", lambda rows, *args, **kw: drawn.append(rows) or b"PNG")
    figures.judge_bars(results)
    rows = next(rows for rows in drawn if any(label.startswith("base") for label, *_ in rows))
    values = {label: value for label, value, _, _ in rows}
    assert values["base — alpaca_eval_v2"] is None        # failed: no bar, never 0
    assert values["dpo — alpaca_eval_v2"] == 100.0
    assert [label for label, *_ in rows][0].startswith("dpo")  # ranked, best first


def _links(md: str) -> list[str]:
    return re.findall(r"\]\(([^)]+)\)", md)


def test_report_command_over_two_runs(tmp_path, capsys):
    a, b = make_runs(tmp_path)
    out = tmp_path / "report"
    assert main(["report", str(a), str(b), "--baseline", "base", "--out", str(out), "--leaderboard"]) == 0
    page = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    for section in ["summary", "details", "judges", "figures", "samples", "training", "provenance", "config"]:
        assert f'<section id="{section}">' in page
    # Every relative link and image resolves, in both outputs.
    hrefs = re.findall(r'(?:href|src)="([^"#][^"]*)"', page)
    for link in [h for h in hrefs if not h.startswith("data:")] + _links(md):
        assert (out / html.unescape(link)).exists(), link
    assert len(_links(md)) > 10
    # Training curves of every logged series (reward accuracy and margins included).
    assert (out / "report-files" / "training-runA-train-dpo.png").exists()
    assert "train/dpo" in md
    # The recipe configuration is shown resolved.
    assert "${" not in page and "${" not in md and "drover sft --run-dir runs/x/train/sft" in page
    # Provenance per result, fingerprints in short form; all metrics, under their recorded names.
    assert "recipe=test" in page and digest("dpo").removeprefix("sha256:")[:12] in page
    assert "lc_win_rate_estimate=" in md
    # Sample viewer: both models' answers to a Vicuna question (from the answers file the judge read),
    # the verdict and the judge's rationale.
    assert "sft answer 2" in page and "dpo answer 2" in page and "rationale 2ab" in page
    assert "reference preferred" in page and "model preferred" in page
    assert (out / "report-files" / "unique-tokens-vs-win-rate.png").exists()
    assert (out / "report-files" / "judge-relative-score-gpt35.png").exists()
    assert (out / "report-files" / "length-buckets-unnatural.png").exists()
    # Leaderboard: the summary table as CSV and Markdown.
    rows = list(csv.reader((out / "leaderboard.csv").open()))
    assert rows[0][0] == "model" and rows[0][-1] == "average"
    dpo = dict(zip(rows[0], next(r for r in rows if r[0] == "dpo")))
    assert float(dpo["gsm_cot:accuracy"]) == 100.0 and float(dpo["average"]) == pytest.approx((62.5 + 100 + 80) / 3)
    assert float(dpo["gsm_cot:accuracy:low"]) == pytest.approx(100 * 0.025 ** 0.1)
    assert float(dpo["gsm_cot:p_vs_baseline"]) == pytest.approx(2 * 0.5 ** 10)
    assert dpo["mmlu_5shot:accuracy:low"] == ""  # no per-example values, no interval
    assert "| dpo |" in (out / "leaderboard.md").read_text()
    assert json.loads((out / "report.json").read_text())["rows"]


def test_markdown_escapes_html_names(tmp_path):
    root = tmp_path / "run"
    write_result(root, _record("benchmark", "gsm_cot", "<script>alert(1)</script>", {"accuracy": 0.0}, 1,
                               primary_metric="accuracy"), _binary(["a"], [0]))
    assert main(["report", str(root)]) == 0
    md = (root / "report.md").read_text()
    page = (root / "report.html").read_text()
    assert "<script>" not in md and "&lt;script&gt;alert(1)&lt;/script&gt;" in md
    assert "<script>" not in page


def test_corrupt_result_names_the_file(tmp_path, capsys):
    a, _ = make_runs(tmp_path)
    bad = a / "eval" / "sft" / "gsm_cot.json"
    bad.write_text("{not json")
    assert main(["report", str(a)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_unknown_baseline(tmp_path, capsys):
    a, _ = make_runs(tmp_path)
    assert main(["report", str(a), "--baseline", "nobody"]) == 2
    assert "--baseline 'nobody': no such model" in capsys.readouterr().err


def test_runs_written_before_per_model_results(tmp_path):
    root = tmp_path / "old"
    (root / "eval").mkdir(parents=True)
    (root / "eval" / "gsm_cot.json").write_text(json.dumps({
        "task": "gsm_cot", "kind": "benchmark", "model": f"hf:{root}/train/sft/model",
        "metrics": {"accuracy": 50.0, **{f"m{i}": float(i) for i in range(8)}}, "primary_metric": "accuracy",
        "n_examples": 2, "examples_file": "eval/gsm_cot.examples.jsonl"}))
    (root / "eval" / "gsm_cot.examples.jsonl").write_text('{"id": "1", "correct": true}\n{"id": "2", "correct": false}\n')
    (root / "eval" / "judge-v.json").write_text(json.dumps({
        "task": "vicuna80", "kind": "judge", "name": "v", "model": "m", "metrics": {"relative_score": float("nan")},
        "primary_metric": "relative_score", "n_examples": 2, "examples_file": "judge-v.examples.jsonl",
        "breakdown": {"failures": [{"id": "1/ab", "reason": "no pair of scores found"}]}}).replace("NaN", "NaN"))
    (root / "eval" / "judge-v.examples.jsonl").write_text('{"id": "1/ab", "error": "boom"}\n')
    (root / "eval" / "judge-v.annotations.json").write_text("[]")
    assert main(["report", str(root)]) == 0
    md = (root / "report.md").read_text()
    assert "| train/sft/model (baseline) | 50.0 [1.3, 98.7] |" in md  # label from the spec, relative to the run
    assert "m7=7.0" in md                                              # all metrics, not the first six
    assert "failed: 1 failed item(s)" in md
    for link in _links(md):
        assert (root / link).exists(), link


def test_report_of_empty_run(tmp_path):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 0
    assert "no benchmark results" in (tmp_path / "empty" / "report.html").read_text()


def test_report_missing_dir(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "run directory not found" in capsys.readouterr().err


CHROMIUM = Path(os.environ.get("DROVER_TEST_CHROMIUM", "/usr/bin/chromium"))


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (.ci/run installs it)")
def test_report_in_a_browser(tmp_path):
    """Headless Chromium loads the report: no console error, every image decoded, every link resolves;
    the screenshot is kept in the run directory (the CI artifact)."""
    from drover.report.browser import check_page

    a, b = make_runs(tmp_path)
    answers = a / "data" / "answers.jsonl"
    answers.parent.mkdir(parents=True, exist_ok=True)
    answers.write_text("".join(json.dumps({"id": str(i), "messages": [
        {"role": "user", "content": f"Write {i} words."}, {"role": "assistant", "content": "word " * i}]}) + "\n"
        for i in range(1, 9)))
    assert main(["stats", str(answers), "--out", str(a / "stats"), "--no-verb-noun"]) == 0  # as the quickstart does
    assert main(["report", str(a), str(b)]) == 0
    check = check_page(a / "report.html", a / "report-screenshot.png", str(CHROMIUM))
    assert check.console_errors == [] and check.broken_images == [] and check.broken_links == []
    assert check.images >= 6 and check.links >= 20  # judges, buckets, length bias, training, data lengths
    assert (a / "report-screenshot.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (.ci/run installs it)")
def test_browser_check_catches_broken_pages(tmp_path):
    from drover.report.browser import check_page

    page = tmp_path / "bad.html"
    page.write_text('<!doctype html><html><head><link rel="icon" href="data:,"></head><body>'
                    '<img alt="gone" src="missing.png"><a href="nowhere.jsonl">x</a>'
                    '<a href="https://example.com/">off-machine</a><script>undefinedCall()</script></body></html>')
    check = check_page(page, None, str(CHROMIUM))
    assert check.broken_images == ["gone"]
    assert [link.rsplit("/", 1)[-1] for link in check.broken_links] == ["nowhere.jsonl", ""]
    assert any("undefinedCall" in e for e in check.console_errors)


def test_corrupt_examples_and_old_layout_results_name_the_file(tmp_path, capsys):
    a, _ = make_runs(tmp_path)
    examples = a / "eval" / "sft" / "gsm_cot.examples.jsonl"
    lines = examples.read_text().splitlines()
    examples.write_text("\n".join(lines[:3] + ["{torn"] + lines[3:]) + "\n")
    assert main(["report", str(a)]) == 2
    err = capsys.readouterr().err
    assert f"{examples}:4" in err and "Traceback" not in err
    old = tmp_path / "old"
    (old / "eval").mkdir(parents=True)
    (old / "eval" / "mmlu_0shot.json").write_bytes(b"\xff\xfe binary")
    assert main(["report", str(old)]) == 2
    assert str(old / "eval" / "mmlu_0shot.json") in capsys.readouterr().err
