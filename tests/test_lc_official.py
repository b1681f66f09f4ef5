"""AlpacaEval 2 length-controlled win rate: the official fit (alpaca_eval
`metrics/glm_winrate.py`: df_gamed rows at weight 0.1, soft labels, L1 logistic regression
without intercept, C by 5-fold GroupKFold CV) against scikit-learn's LogisticRegressionCV
run the way alpaca_eval runs it, and the labels in the result record."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from drover.errors import InputError
from drover.judges.alpaca_eval import Pair, summarize
from drover.metrics.winrate import (_sigmoid, fit_l1_logistic, group_kfold_folds, official_lc_fit,
                                    read_gamed)


def _synthetic(n: int = 150, seed: int = 0):
    """Two gamed baselines (not_gamed = 0) and one model, soft preferences from a known GLM."""
    rng = np.random.default_rng(seed)

    def rows(not_gamed: float, bias: float, length_weight: float):
        tanh_len, difficulty = np.tanh(rng.normal(size=n)), rng.normal(size=n)
        p = _sigmoid(length_weight * tanh_len + 0.8 * difficulty + bias) + rng.normal(scale=0.1, size=n)
        return np.stack([tanh_len, difficulty, np.full(n, not_gamed)], 1), np.clip(p, 0, 1)

    parts = [rows(0.0, -1.0, 1.5), rows(0.0, 1.0, 1.5), rows(1.0, 0.3, 1.0)]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    s = np.concatenate([np.full(2 * n, 0.1), np.ones(n)])
    return x, y, s


def _sklearn_lc_fit(x, y, s):
    """alpaca_eval's fit_LogisticRegressionCV(is_ytrue_proba=True) expressed with sklearn."""
    import sklearn
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import make_scorer
    from sklearn.model_selection import GroupKFold

    n = len(y)
    x2, y2 = np.concatenate([x, x]), np.concatenate([np.ones(n), np.zeros(n)])
    true_prob, true_weight = np.concatenate([y, 1 - y]), np.concatenate([s, s])
    groups = np.concatenate([np.arange(n), np.arange(n)])

    def loss(y_true, y_pred, true_prob, true_sample_weight):
        target = np.where(y_true == 1, true_prob, 1 - true_prob)
        q = np.clip(y_pred, 1e-15, 1 - 1e-15)
        return -np.mean(true_sample_weight * (target * np.log(q) + (1 - target) * np.log(1 - q)))

    with sklearn.config_context(enable_metadata_routing=True), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scorer = make_scorer(loss, response_method="predict_proba", greater_is_better=False)
        scorer = scorer.set_score_request(true_sample_weight=True, true_prob=True)
        model = LogisticRegressionCV(cv=GroupKFold(n_splits=5), scoring=scorer, random_state=123, penalty="l1",
                                     solver="liblinear", fit_intercept=False)
        model.set_fit_request(sample_weight=True)
        model.fit(x2, y2, sample_weight=true_prob * true_weight, groups=groups, true_sample_weight=true_weight,
                  true_prob=true_prob)
    return model.coef_[0]


def test_group_kfold_folds_match_sklearn():
    from sklearn.model_selection import GroupKFold

    n = 23
    groups = np.concatenate([np.arange(n), np.arange(n)])
    ours = group_kfold_folds(n)
    for k, (_, test) in enumerate(GroupKFold(n_splits=5).split(np.zeros((2 * n, 1)), groups=groups)):
        assert sorted(set(groups[test])) == [g for g in range(n) if ours[g] == k]


def test_l1_fit_at_a_fixed_c_matches_liblinear():
    from sklearn.linear_model import LogisticRegression

    x, y, s = _synthetic(80, seed=1)
    for c in (0.05, 1.0, 100.0):  # a small C zeroes weights: the L1 penalty is really applied
        n = len(y)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sklearn >= 1.8 deprecates `penalty` (it is still honoured)
            ref = LogisticRegression(C=c, penalty="l1", solver="liblinear", fit_intercept=False, tol=1e-10,
                                     max_iter=10000).fit(np.concatenate([x, x]), np.concatenate([np.ones(n), np.zeros(n)]),
                                                         sample_weight=np.concatenate([y * s, (1 - y) * s])).coef_[0]
        assert fit_l1_logistic(x, y, s, c) == pytest.approx(ref, abs=1e-4)
    assert np.count_nonzero(fit_l1_logistic(x, y, s, 0.05)) < 3


def test_official_fit_agrees_with_alpaca_evals_sklearn_pipeline():
    x, y, s = _synthetic()
    ours, _ = official_lc_fit(x, y, s)
    ref = _sklearn_lc_fit(x, y, s)
    assert ours == pytest.approx(ref, abs=2e-3)  # liblinear stops at tol=1e-4
    model = x[-150:].copy()
    model[:, 0] = 0.0
    assert 100 * _sigmoid(model @ ours).mean() == pytest.approx(100 * _sigmoid(model @ ref).mean(), abs=0.01)


def _pairs(n: int):
    rng = np.random.default_rng(3)
    lengths = rng.integers(50, 400, size=(n, 2))
    return [Pair(i, f"q{i}", "set", "b" * int(a), "m" * int(b)) for i, (a, b) in enumerate(lengths)]


def _write_gamed(path, n: int):
    rng = np.random.default_rng(4)
    lines = ["model,index,preference,std_delta_len,instruction_difficulty,not_gamed_baseline"]
    difficulty = rng.normal(size=n)
    for model in ("gamed_long", "gamed_short"):
        for i in range(n):
            lines.append(f"{model},{i},{rng.uniform():.6f},{rng.normal():.6f},{difficulty[i]:.6f},False")
    path.write_text("\n".join(lines) + "\n")


def test_lc_metric_is_labelled_and_v2_only(tmp_path):
    pairs = _pairs(40)
    prefs = [1.0 + (i % 3) / 2 for i in range(40)]
    v1 = summarize(pairs, prefs, version="v1")
    assert not any(k.startswith("lc_") or "length_controlled" in k for k in v1["metrics"])
    estimate = summarize(pairs, prefs, version="v2")
    assert "lc_win_rate_estimate" in estimate["metrics"] and "lc_win_rate" not in estimate["metrics"]
    assert estimate["breakdown"]["length_controlled"]["method"].startswith("estimate")
    _write_gamed(tmp_path / "df_gamed.csv", 40)
    gamed = read_gamed(tmp_path / "df_gamed.csv")
    official = summarize(pairs, prefs, version="v2", gamed=gamed)
    assert "lc_win_rate" in official["metrics"] and "lc_win_rate_estimate" not in official["metrics"]
    assert 0 < official["metrics"]["lc_win_rate"] < 100
    assert official["breakdown"]["length_controlled"]["method"].startswith("official")


def test_gamed_file_errors_name_file_line_and_field(tmp_path):
    bad = tmp_path / "df_gamed.csv"
    bad.write_text("model,index,preference\nx,0,0.5\n")
    with pytest.raises(InputError, match="std_delta_len"):
        read_gamed(bad)
    bad.write_text("model,index,preference,std_delta_len,instruction_difficulty,not_gamed_baseline\n"
                   "x,0,half,0.1,0.2,False\n")
    with pytest.raises(InputError, match=r"df_gamed.csv:2.*preference"):
        read_gamed(bad)


def test_cli_refuses_gamed_baselines_for_alpaca_eval_1(tmp_path, capsys):
    from drover.cli import main

    _write_gamed(tmp_path / "df_gamed.csv", 5)
    outputs = tmp_path / "model_outputs.json"
    outputs.write_text('[{"instruction": "What color is the sky", "output": "Blue.", "generator": "m"}]')
    code = main(["judge", "alpaca-eval", "--version", "v1", "--judge", "openai:gpt-4", "--model-outputs",
                 str(outputs), "--gamed-baselines", str(tmp_path / "df_gamed.csv"), "--run-dir", str(tmp_path / "r")])
    assert code == 2 and "AlpacaEval 2 only" in capsys.readouterr().err
