"""Length bias: correlations across systems and the dummy longer-answer evaluator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drover.judges.bias import SystemAnnotations, analyze, dummy_preference, pearson

DATA = Path(__file__).parent / "data" / "alpaca_eval"


def test_pearson_matches_numpy() -> None:
    import numpy as np

    x, y = [1.0, 4.0, 2.5, 8.0], [3.0, 1.0, 2.0, 9.5]
    assert pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert pearson([1, 1], [2, 3]) != pearson([1, 1], [2, 3])  # NaN for a constant series


def test_dummy_evaluator() -> None:
    assert dummy_preference("short", "much longer", len) == 2.0
    assert dummy_preference("much longer", "short", len) == 1.0
    assert dummy_preference("same", "same", len) == 1.5


def test_official_annotations_length_explains_the_ranking() -> None:
    systems = []
    for model in ("alpaca-7b", "tulu-2-dpo-70b"):
        rows = json.loads((DATA / model / "alpaca_eval_gpt4" / "annotations.json").read_text())
        systems.append(SystemAnnotations(model, [r["output_1"] for r in rows], [r["output_2"] for r in rows],
                                         [r["preference"] for r in rows]))
    out = analyze(systems)
    per = out["breakdown"]["per_system"]
    assert per["tulu-2-dpo-70b"]["avg_length"] > per["alpaca-7b"]["avg_length"]
    assert per["tulu-2-dpo-70b"]["dummy_longer_win_rate"] > 90  # tulu is almost always the longer answer
    assert per["tulu-2-dpo-70b"]["dummy_longer_agreement"] > 90  # and GPT-4 almost always agrees
    assert out["metrics"]["pearson_winrate_length"] == pytest.approx(1.0)  # two systems: r = +1
    assert per["alpaca-7b"]["win_rate"] == pytest.approx(26.459627329192546)
