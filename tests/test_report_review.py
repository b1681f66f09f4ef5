"""Adversarial checks of the report's numbers (review of issues #12 and #16).

Each test writes result files by hand through `drover.results.write_result` and works the
expected number out in its comments.
"""

from __future__ import annotations

from pathlib import Path

from drover.identity import digest
from drover.report import figures, tables
from drover.report.collect import collect
from drover.report.scores import MetricValues
from drover.results import write_result
from drover.runs import RunDir


def _record(kind, name, label, metrics, n, **extra):
    return {"kind": kind, "name": name, "model": {"label": label, "spec": label, "fingerprint": digest(label)},
            "key": digest([kind, name, label]), "metrics": metrics, "settings": {}, "n_examples": n,
            "failures": 0, **extra}


def _accuracy(root, label, task, correct):
    ids = [f"e{i}" for i in range(len(correct))]
    write_result(root, _record("benchmark", task, label, {"accuracy": 100.0 * sum(correct) / len(correct)},
                               len(correct), primary_metric="accuracy"),
                 [{"id": i, "correct": bool(c)} for i, c in zip(ids, correct)])


def _results(roots):
    return [r for run in collect(roots) for r in run.results]


def _row(table, prefix):
    return next(r for r in table.rows if r[0].startswith(prefix))


def test_two_runs_with_one_label_and_one_folder_name_stay_two_rows(tmp_path: Path):
    # runs/a/quickstart and runs/b/quickstart, both with a "base" model: 100% and 0%.
    a, b = tmp_path / "a" / "quickstart", tmp_path / "b" / "quickstart"
    _accuracy(a, "base", "gsm_cot", [1] * 8)
    _accuracy(b, "base", "gsm_cot", [0] * 8)
    results = _results([a, b])
    assert sorted(r.row for r in results) == ["base (a/quickstart)", "base (b/quickstart)"]
    table = tables.summary_table(results, None)
    assert len(table.rows) == 2
    assert _row(table, "base (a/quickstart)")[1].startswith("100.0")
    assert _row(table, "base (b/quickstart)")[1].startswith("0.0 [0.0, 36.9] (-100.0*)")


def test_training_figures_of_two_runs_named_alike_are_two_files(tmp_path: Path):
    a, b = tmp_path / "a" / "quickstart", tmp_path / "b" / "quickstart"
    for root, loss in ((a, 1.0), (b, 2.0)):
        log = RunDir(root / "train" / "sft").ensure()
        for step in (1, 2):
            log.log("train", step=step, loss=loss / step)
    names = [f.name for f in figures.training(collect([a, b]))]
    assert len(names) == 2 and len(set(names)) == 2, names


def test_average_compares_the_same_settings_for_every_model(tmp_path: Path):
    # base: MMLU 0-shot 100, 5-shot 0; sft: 0-shot 100 only. Averaging base over both settings (50)
    # against sft over one (100) compares two task sets; over the common setting both are 100.
    root = tmp_path / "run"
    _accuracy(root, "base", "mmlu_0shot", [1] * 8)
    _accuracy(root, "base", "mmlu_5shot", [0] * 8)
    _accuracy(root, "sft", "mmlu_0shot", [1] * 8)
    table = tables.summary_table(_results([root]), "base")
    assert _row(table, "base")[-1] == "100.0"
    assert _row(table, "sft")[-1] == "100.0"
    assert "left out (not run for every model): mmlu_5shot" in table.notes[-1]


def test_sign_test_pairs_questions_not_the_last_judgment_under_an_id():
    # Two judgments per question (both orders). A wins both orders of q0..q5; B of none. Keeping only
    # the last judgment per id is what a dict of (id, value) pairs did: here the last is a tie for
    # every question, which hid six clear wins (p = 2 / 2**6 = 0.03125 < 0.05).
    ids = [f"q{i}" for i in range(6) for _ in range(2)]
    a = MetricValues(ids, [1.0, 0.5] * 6, 1.0)
    b = MetricValues(ids, [0.0, 0.5] * 6, 1.0)
    p, plus, minus, common = tables.paired(a, b)
    assert (plus, minus, common) == (6, 0, 6)
    assert abs(p - 0.03125) < 1e-12


def test_a_delta_of_a_metric_below_one_keeps_its_digits(tmp_path: Path):
    # A ratio metric (scale 1, no per-example values): 0.80 -> 0.83 is +0.030, not "+0.0".
    root = tmp_path / "run"
    for label, value in (("base", 0.80), ("sft", 0.83)):
        write_result(root, _record("benchmark", "ratio_task", label, {"ratio": value}, 4, primary_metric="ratio"), [])
    table = tables.summary_table(_results([root]), "base")
    assert _row(table, "sft")[1] == "0.830 (+0.030)"
    assert tables.delta(-2.25, True) == "-2.2" and tables.delta(0.0) == "+0.0"


def _alpaca_eval(root, label, name, judge, prefs):
    examples = [{"id": str(i), "meta": {"index": i}, "preference": p} for i, p in enumerate(prefs)]
    write_result(root, _record("judge", name, label, {"win_rate": 100 * sum(p - 1 for p in prefs) / len(prefs)},
                               len(prefs), task="alpaca_eval_v2", primary_metric="win_rate", judge=judge), examples)


def test_one_model_judged_by_two_judges_keeps_both_results(tmp_path: Path):
    # sft judged on AlpacaEval by two judges (--name ae-a, --name ae-b): 100% and 25%. Keyed by
    # (model, protocol), one of the two numbers used to vanish from the judge table.
    root = tmp_path / "run"
    _alpaca_eval(root, "sft", "ae-a", "judge-a", [2.0, 2.0, 2.0, 2.0])
    _alpaca_eval(root, "sft", "ae-b", "judge-b", [2.0, 1.0, 1.0, 1.0])
    results = _results([root])
    (table,) = tables.judge_tables(results, None)
    assert [r[0] for r in table.rows] == ["sft (ae-a) (baseline)", "sft (ae-b)"]
    assert _row(table, "sft (ae-a)")[1].startswith("100.0")
    assert _row(table, "sft (ae-b)")[1].startswith("25.0")
    assert len(tables.pairwise_tables(results)) == 1


def test_mt_bench_pairwise_judgments_are_read_in_the_models_frame_and_resampled_by_question(tmp_path: Path):
    # MT-bench pairwise: order "ab" shows model A (the evaluated model) first, unlike Vicuna-80's "ab"
    # (reference first). The judge now records meta.switched. Model A wins q0 and q1 in both orders
    # and q2 in neither (B wins): win rate 2/3. Read with Vicuna's rule it came out inverted (1/3).
    from drover.judges.mt_bench import build_pairwise_calls

    call = next(c for c in build_pairwise_calls({"81": ["a", "a"]}, {"81": ["b", "b"]}) if c.meta["order"] == "ab")
    assert call.meta["switched"] is True
    examples = []
    for q, model_wins in ((0, True), (1, True), (2, False)):
        for order in ("ab", "ba"):
            first_won = model_wins == (order == "ab")
            examples.append({"id": f"{q}/t1/{order}", "meta": {"question_id": str(q), "turn": 1, "order": order,
                                                               "switched": order == "ab"},
                             "verdict": {"type": "choice", "outcome": "first" if first_won else "second"}})
    root = tmp_path / "run"
    write_result(root, _record("judge", "mt-bench-pair-vs-b", "a", {"win_rate": 100 * 2 / 3}, 3,
                               task="mt_bench_pairwise", primary_metric="win_rate"), examples)
    (result,) = _results([root])
    values = result.values("win_rate")
    assert values is not None and values.scale == 100
    assert sorted(values.ids) == ["0", "1", "2"]  # three questions, not six judgments
    assert sorted(values.values) == [0.0, 1.0, 1.0]


def test_uneven_orders_are_still_resampled_by_question(tmp_path: Path):
    # AlpacaEval-style preferences, both orders per question, but q1's second order failed to parse:
    # q0: wins both (1, 1), q1: one loss (0), q2: a win and a loss (1, 0). The metric is the mean over
    # the 5 judgments that parsed = 3/5 = 60%; the per-question means (1, 0, 0.5) average 50%, so they
    # do not reproduce it. The judgments used to be resampled as 5 independent values; now the three
    # questions are, as a ratio of totals (2 + 0 + 1) / (2 + 1 + 2).
    prefs = {("0", "ab"): 2.0, ("0", "ba"): 2.0, ("1", "ab"): 1.0, ("1", "ba"): None,
             ("2", "ab"): 2.0, ("2", "ba"): 1.0}
    examples = [{"id": f"{q}/{o}", "meta": {"index": q}, "preference": p} for (q, o), p in prefs.items()]
    root = tmp_path / "run"
    write_result(root, _record("judge", "ae", "sft", {"win_rate": 60.0}, 3, task="alpaca_eval_v2",
                               primary_metric="win_rate"), examples)
    (result,) = _results([root])
    values = result.values("win_rate")
    assert values is not None and values.scale == 100
    assert values.ids == ["0", "1", "2"] and values.values == [2.0, 0.0, 1.0] and values.denominators == [2.0, 1.0, 2.0]
    assert values.by_id() == {"0": 1.0, "1": 0.0, "2": 0.5}
    interval = values.interval()
    assert interval.method == "bootstrap (ratio of totals)" and interval.low <= 60.0 <= interval.high
