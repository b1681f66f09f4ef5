"""AlpacaEval win rates: the shipped official annotations must reproduce the shipped leaderboards."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from drover.metrics import winrate
from drover.metrics.winrate import (BASE_FEATURE, DIFF_FEATURE, LEN_FEATURE, length_controlled_win_rate,
                                    predict_lc_win_rate, read_glm_weights, win_rate)

DATA = Path(__file__).parent / "data" / "alpaca_eval"
BOARDS = {
    "alpaca_eval_gpt4": DATA / "leaderboards" / "data_AlpacaEval" / "alpaca_eval_gpt4_leaderboard.csv",
    "weighted_alpaca_eval_gpt4_turbo": DATA / "leaderboards" / "data_AlpacaEval_2"
    / "weighted_alpaca_eval_gpt4_turbo_leaderboard.csv",
}
WEIGHTS = DATA / "metrics" / "weights" / "weighted_alpaca_eval_gpt4_turbo" / "length_controlled_v1" \
    / "baseline_gpt4_1106_preview.csv"
CASES = [("alpaca-7b", "weighted_alpaca_eval_gpt4_turbo"), ("alpaca-7b", "alpaca_eval_gpt4"),
         ("tulu-2-dpo-70b", "alpaca_eval_gpt4"), ("vicuna-7b", "weighted_alpaca_eval_gpt4_turbo")]


def _board(annotator: str, model: str) -> dict[str, str]:
    with open(BOARDS[annotator], newline="") as handle:
        for row in csv.DictReader(handle):
            if row[""] == model:
                return row
    raise AssertionError(f"{model} not on the {annotator} leaderboard")


@pytest.mark.parametrize("model,annotator", CASES)
def test_official_annotations_reproduce_the_leaderboard(model: str, annotator: str) -> None:
    annotations = json.loads((DATA / model / annotator / "annotations.json").read_text())
    got = win_rate([a["preference"] for a in annotations])
    row = _board(annotator, model)
    for key in ("win_rate", "standard_error", "discrete_win_rate"):
        assert got[key] == pytest.approx(float(row[key]), rel=1e-12, abs=1e-12), key
    for key in ("n_wins", "n_wins_base", "n_draws", "n_total"):
        assert got[key] == int(row[key]), key
    outputs = json.loads((DATA / model / "model_outputs.json").read_text())
    assert int(winrate.avg_length([o["output"] for o in outputs])) == int(row["avg_length"])


def test_v1_ties_coded_as_zero_count_half() -> None:
    m = win_rate([0, 2, 1, 1.5])
    assert m["win_rate"] == pytest.approx(50.0)
    assert m["n_draws"] == 2 and m["n_wins"] == 1 and m["n_wins_base"] == 1


def test_standard_error_is_the_ddof1_sem() -> None:
    prefs = [1.0, 2.0, 2.0, 1.25]
    x = np.array(prefs) - 1
    assert win_rate(prefs)["standard_error"] == pytest.approx(100 * x.std(ddof=1) / math.sqrt(len(x)))


def test_missing_and_out_of_range_are_dropped_and_counted() -> None:
    m = win_rate([2.0, None, float("nan"), 3.0, 1.0])
    assert m["n_total"] == 2 and m["n_missing"] == 3 and m["win_rate"] == pytest.approx(50.0)


def test_discrete_rounds_soft_preferences() -> None:
    assert win_rate([1.9, 1.6, 1.2, 1.5])["discrete_win_rate"] == pytest.approx(100 * (1 + 1 + 0 + 0.5) / 4)


def test_lc_equals_win_rate_without_length_differences() -> None:
    rng = np.random.default_rng(0)
    prefs = list(1 + rng.uniform(size=300))
    lengths = [100] * 300
    lc = length_controlled_win_rate(prefs, lengths, lengths)
    assert lc.win_rate == pytest.approx(win_rate(prefs)["win_rate"], abs=0.05)


def test_lc_removes_a_pure_length_effect() -> None:
    # A judge that only likes length: the model wins exactly when it is longer.
    rng = np.random.default_rng(1)
    n = 2000
    base = rng.integers(100, 1000, size=n)
    model = base + rng.normal(300, 400, size=n).astype(int)  # usually longer
    prefs = [2.0 if m > b else 1.0 for m, b in zip(model, base)]
    raw = win_rate(prefs)["win_rate"]
    lc = length_controlled_win_rate(prefs, list(model), list(base))
    assert raw > 70
    assert abs(lc.win_rate - 50) < abs(raw - 50) / 2
    assert lc.weights[LEN_FEATURE] < 0  # baseline-minus-model length: longer model -> negative delta -> win


def test_lc_recovers_known_glm_weights() -> None:
    rng = np.random.default_rng(2)
    n = 20000
    model = rng.integers(50, 2000, size=n)
    base = rng.integers(50, 2000, size=n)
    difficulty = rng.normal(0, 1, size=n)
    delta = (base - model) / np.std(base - model, ddof=1)
    true = {"len": -1.5, "diff": 0.7, "base": -0.4}
    p = 1 / (1 + np.exp(-(true["len"] * np.tanh(delta) + true["diff"] * difficulty + true["base"])))
    prefs = list(1 + p)  # soft labels, as AlpacaEval 2's weighted judge gives
    lc = length_controlled_win_rate(prefs, list(model), list(base), list(difficulty))
    assert lc.weights[LEN_FEATURE] == pytest.approx(true["len"], abs=0.01)
    assert lc.weights[DIFF_FEATURE] == pytest.approx(true["diff"], abs=0.01)
    assert lc.weights[BASE_FEATURE] == pytest.approx(true["base"], abs=0.01)
    expected = 100 * np.mean(1 / (1 + np.exp(-(true["diff"] * difficulty + true["base"]))))
    assert lc.win_rate == pytest.approx(expected, abs=0.2)


def test_official_glm_weights_predict_like_alpaca_eval() -> None:
    weights = read_glm_weights(WEIGHTS)
    assert weights["gpt4_1106_preview"] == {LEN_FEATURE: 0.0, DIFF_FEATURE: 0.0, BASE_FEATURE: 0.0}
    difficulty = np.linspace(-2, 2, 805)
    assert predict_lc_win_rate(weights, "alpaca-7b", "alpaca-7b", difficulty) == pytest.approx(50.0)
    w = weights["alpaca-7b"]
    expected = 100 * np.mean(1 / (1 + np.exp(-(w[BASE_FEATURE] + w[DIFF_FEATURE] * difficulty))))
    assert predict_lc_win_rate(weights, "alpaca-7b", "gpt4_1106_preview", difficulty) == pytest.approx(expected)
    # symmetric: the baseline's LC win rate against the model is the complement
    assert predict_lc_win_rate(weights, "gpt4_1106_preview", "alpaca-7b", np.zeros(805)) == pytest.approx(
        100 - predict_lc_win_rate(weights, "alpaca-7b", "gpt4_1106_preview", np.zeros(805)))


def test_lc_fit_on_official_annotations_is_below_the_raw_win_rate_for_a_long_model() -> None:
    # tulu-2-dpo-70b writes ~4.6x longer answers than text_davinci_003: controlling for length lowers it.
    annotations = json.loads((DATA / "tulu-2-dpo-70b" / "alpaca_eval_gpt4" / "annotations.json").read_text())
    prefs = [a["preference"] for a in annotations]
    lc = length_controlled_win_rate(prefs, [len(a["output_2"]) for a in annotations],
                                    [len(a["output_1"]) for a in annotations])
    assert lc.win_rate < win_rate(prefs)["win_rate"]
    assert lc.n_used == 805 and not lc.uses_difficulty
