"""Win rates against a reference model, exactly as AlpacaEval computes them.

Reference implementation: tatsu-lab/alpaca_eval `metrics/helpers.py`
(`AbsoluteScoringRule.describe_head2head` for the win rate, `ZeroOneScoringRule` for
the discrete one) and `metrics/glm_winrate.py` (length-controlled win rate).

Preferences use AlpacaEval's encoding, seen from the model: 1 = the baseline
(output_1) wins, 2 = the model (output_2) wins, 1.5 = tie; AlpacaEval 1 files code a
tie as 0, which is read as 1.5. `None`/NaN (a failed annotation) and values outside
[1, 2] are dropped from the means (and counted in `n_missing`), as alpaca_eval does.

- win_rate = 100 * mean(preference - 1)
- standard_error = 100 * sample standard deviation (ddof=1) / sqrt(n): alpaca_eval
  calls `pandas.Series.sem()`, whose default is ddof=1.
- discrete_win_rate: each preference rounded to 1 or 2 (an exact 1.5 stays a half
  win), then the same mean.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from drover.errors import InputError


def _clean(preferences: Sequence[float | None]) -> tuple[np.ndarray, int, int]:
    """(valid preferences with 0 -> 1.5, n_draws, n_missing)."""
    values = np.array([np.nan if p is None else float(p) for p in preferences], dtype=float)
    values[values == 0.0] = 1.5
    n_draws = int(np.sum(values == 1.5))
    valid = (values >= 1.0) & (values <= 2.0)  # NaN compares False
    return values[valid], n_draws, int(len(values) - valid.sum())


def _sem(x: np.ndarray) -> float:
    return float(np.std(x, ddof=1) / math.sqrt(len(x))) if len(x) > 1 else float("nan")


def standard_error(values: Sequence[float]) -> float:
    """Standard error of a mean, as alpaca_eval's `Series.sem()` (ddof=1; NaN below 2 values).

    >>> round(standard_error([0.0, 1.0, 1.0, 0.0]), 4)
    0.2887
    """
    return _sem(np.asarray(values, dtype=float))


def win_rate(preferences: Sequence[float | None]) -> dict[str, float]:
    """AlpacaEval head-to-head metrics of a list of preferences (see module doc).

    >>> m = win_rate([2, 1, 0, 2])
    >>> m["win_rate"], m["n_wins"], m["n_wins_base"], m["n_draws"], m["n_total"]
    (62.5, 2, 1, 1, 4)
    >>> round(win_rate([1.9, 1.2])["discrete_win_rate"], 1)
    50.0
    """
    valid, n_draws, n_missing = _clean(preferences)
    shifted = valid - 1.0
    discrete = np.where(valid == 1.5, 0.5, np.round(valid) - 1.0)
    n = len(shifted)
    return {
        "win_rate": float(shifted.mean() * 100) if n else float("nan"),
        "standard_error": _sem(shifted) * 100,
        "discrete_win_rate": float(discrete.mean() * 100) if n else float("nan"),
        "n_wins": int(np.sum(shifted > 0.5)),
        "n_wins_base": int(np.sum(shifted < 0.5)),
        "n_draws": n_draws,
        "n_total": n,
        "n_missing": n_missing,
    }


def avg_length(outputs: Sequence[str]) -> float:
    """Mean length in characters of the model's outputs (the leaderboard's `avg_length`)."""
    return float(np.mean([len(o) for o in outputs])) if outputs else float("nan")


# --- Length-controlled win rate (AlpacaEval 2) ---------------------------------------
#
# alpaca_eval's GLM `length_controlled_v1`, per instruction i, model m, baseline b:
#   logit P(m beats b) = w_len * tanh(std_delta_len_i) + w_diff * difficulty_i + w_base
# with std_delta_len = (len(b) - len(m)) / std over instructions of that difference,
# preferences as soft labels in [0, 1]. The LC win rate is the mean prediction with the
# length term switched off: 100 * mean_i sigmoid(w_diff * difficulty_i + w_base).
#
# What the official numbers additionally need (not shipped; supply them to match):
# - `instruction_difficulty` (805 floats, tatsu-lab/alpaca_eval HF dataset,
#   instruction_difficulty.csv): without it the difficulty term is left out, and the
#   result is an LC estimate, not the leaderboard number.
# - the official fit is L1-regularised logistic regression (liblinear, C by 5-fold CV)
#   and regularised towards two "gamed" baselines (df_gamed.csv, weight 0.2); ours is a
#   maximum-likelihood fit with a small L2 penalty (1e-4) on the given annotations only.
# Given official per-model weights (tests/data/.../baseline_gpt4_1106_preview.csv) and
# the difficulty vector, `predict_lc_win_rate` reproduces alpaca_eval's `predict_winrate`.

LEN_FEATURE = "np.tanh(std_delta_len)"
DIFF_FEATURE = "instruction_difficulty"
BASE_FEATURE = "not_gamed_baseline.astype(float)"


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -x))


@dataclass
class LengthControlled:
    win_rate: float  # the LC win rate, in percent
    weights: dict[str, float]  # keyed like alpaca_eval's weights CSV
    uses_difficulty: bool
    n_used: int

    def to_dict(self) -> dict[str, Any]:
        return {"length_controlled_winrate": self.win_rate, "glm_weights": self.weights,
                "uses_instruction_difficulty": self.uses_difficulty, "n_used": self.n_used}


def _fit_logistic_soft(x: np.ndarray, y: np.ndarray, l2: float = 1e-4, iters: int = 100) -> np.ndarray:
    """Newton's method for logistic regression with soft labels y in [0, 1], no intercept.

    A small L2 penalty keeps the weights finite when binary preferences are perfectly
    separated by length (alpaca_eval uses an L1 penalty chosen by cross-validation).
    """
    w = np.zeros(x.shape[1])
    n = len(y)
    for _ in range(iters):
        p = _sigmoid(x @ w)
        grad = x.T @ (p - y) / n + l2 * w
        hess = (x * (p * (1 - p))[:, None]).T @ x / n + l2 * np.eye(x.shape[1])
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-12:
            break
    return w


def length_controlled_win_rate(preferences: Sequence[float | None], model_lengths: Sequence[int],
                               baseline_lengths: Sequence[int],
                               difficulty: Sequence[float] | None = None) -> LengthControlled:
    """Fit the AlpacaEval-2 GLM on these annotations and predict at zero length difference.

    `preferences` as in `win_rate` (model's view); lengths in characters, aligned with
    the preferences; `difficulty` the per-instruction difficulty, aligned too, or None.
    """
    pref = np.array([np.nan if p is None else float(p) for p in preferences], dtype=float)
    pref[pref == 0.0] = 1.5
    delta = np.asarray(baseline_lengths, dtype=float) - np.asarray(model_lengths, dtype=float)
    std = float(np.std(delta, ddof=1)) if len(delta) > 1 else 0.0
    std_delta = delta / std if std > 0 else np.zeros_like(delta)
    columns = [np.tanh(std_delta)]
    if difficulty is not None:
        columns.append(np.asarray(difficulty, dtype=float))
    columns.append(np.ones_like(delta))
    x = np.stack(columns, axis=1)
    keep = (pref >= 1.0) & (pref <= 2.0)
    if keep.sum() < 2:
        nan_weights = {LEN_FEATURE: float("nan"), DIFF_FEATURE: float("nan"), BASE_FEATURE: float("nan")}
        return LengthControlled(float("nan"), nan_weights, difficulty is not None, int(keep.sum()))
    y = pref[keep] - 1.0
    w = _fit_logistic_soft(x[keep], y)
    x_test = x.copy()
    x_test[:, 0] = 0.0  # no length difference
    lc = float(_sigmoid(x_test @ w).mean() * 100)
    weights = {LEN_FEATURE: float(w[0]), DIFF_FEATURE: float(w[1]) if difficulty is not None else 0.0,
               BASE_FEATURE: float(w[-1])}
    return LengthControlled(lc, weights, difficulty is not None, int(keep.sum()))


def read_glm_weights(path: str | Path) -> dict[str, dict[str, float]]:
    """alpaca_eval's weights CSV -> {model: {feature: weight}} (later rows win, as there)."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, None, None, "file not found")
    out: dict[str, dict[str, float]] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        for line, row in enumerate(reader, start=2):
            try:
                out[row[0]] = {name: float(v) for name, v in zip(header[1:], row[1:])}
            except ValueError as exc:
                raise InputError(path, line, None, f"not a number: {exc}") from None
    return out


def predict_lc_win_rate(weights: dict[str, dict[str, float]], model: str, baseline: str,
                        difficulty: Sequence[float]) -> float:
    """alpaca_eval's `predict_winrate`: LC win rate (percent) of `model` vs `baseline`."""
    for name in (model, baseline):
        if name not in weights:
            raise KeyError(f"no GLM weights for {name!r}")
    dw = {k: weights[model][k] - weights[baseline][k] for k in weights[model]}
    logits = dw[BASE_FEATURE] + dw[DIFF_FEATURE] * np.asarray(difficulty, dtype=float)
    return float(_sigmoid(logits).mean() * 100)


def read_difficulty(path: str | Path) -> dict[int, float]:
    """alpaca_eval's instruction_difficulty.csv (index, instruction_difficulty) -> {index: value}."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, None, None, "file not found")
    out: dict[int, float] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader)
        for line, row in enumerate(reader, start=2):
            try:
                out[int(row[0])] = float(row[-1])
            except (ValueError, IndexError):
                raise InputError(path, line, None, "expected `index,instruction_difficulty`") from None
    return out


# --- The official LC fit (when the user supplies alpaca_eval's df_gamed.csv) ----------
#
# alpaca_eval `metrics/glm_winrate.py` (get_length_controlled_winrate, _get_featurized_data,
# fit_LogisticRegressionCV): the model's rows (not_gamed_baseline = 1) are fitted together
# with the annotations of two "gamed" baselines from df_gamed.csv (not_gamed_baseline = 0,
# sample weight 0.2 / 2), soft labels, no intercept, an L1 penalty whose C is picked among
# numpy.logspace(-4, 4, 10) by 5-fold GroupKFold cross-validation on the weighted log loss,
# then refitted on everything (sklearn LogisticRegressionCV, liblinear). The instruction
# difficulty is df_gamed's first row per instruction, looked up by row label as there.

GAMED_COLUMNS = ("index", "preference", "std_delta_len", "instruction_difficulty", "not_gamed_baseline")
GAMED_WEIGHT = 0.2 / 2  # regularize_to_baseline_lambda over the two gamed baselines
CS = tuple(float(c) for c in np.logspace(-4, 4, 10))
N_SPLITS = 5


@dataclass
class GamedAnnotations:
    """df_gamed.csv: per row, the instruction `index`, soft `preference` in [0, 1], features."""

    index: np.ndarray
    preference: np.ndarray
    std_delta_len: np.ndarray
    difficulty: np.ndarray
    not_gamed: np.ndarray
    path: str = "df_gamed.csv"

    def difficulty_by_label(self) -> dict[int, float]:
        """pandas `drop_duplicates("index")["instruction_difficulty"]`: row label -> value."""
        seen: set[int] = set()
        out: dict[int, float] = {}
        for row, idx in enumerate(self.index):
            if int(idx) not in seen:
                seen.add(int(idx))
                out[row] = float(self.difficulty[row])
        return out


def read_gamed(path: str | Path) -> GamedAnnotations:
    """alpaca_eval's df_gamed.csv (tatsu-lab/alpaca_eval dataset on the HF hub), by path."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, None, None, "file not found")
    columns: dict[str, list[float]] = {c: [] for c in GAMED_COLUMNS}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in GAMED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(path, 1, missing[0], f"missing column (expected alpaca_eval's df_gamed.csv: "
                                                  f"{', '.join(GAMED_COLUMNS)})")
        for line, row in enumerate(reader, start=2):
            for name in GAMED_COLUMNS:
                raw = row[name]
                try:
                    value = {"True": 1.0, "False": 0.0}[raw] if name == "not_gamed_baseline" else float(raw)
                except (KeyError, ValueError):
                    raise InputError(path, line, name, f"expected a number (or True/False), got {raw!r}") from None
                columns[name].append(value)
    arrays = {k: np.asarray(v, dtype=float) for k, v in columns.items()}
    return GamedAnnotations(arrays["index"].astype(int), arrays["preference"], arrays["std_delta_len"],
                            arrays["instruction_difficulty"], arrays["not_gamed_baseline"], str(path))


def _soft_logloss_sum(x: np.ndarray, y: np.ndarray, s: np.ndarray, w: np.ndarray) -> float:
    z = x @ w
    return float(np.sum(s * (np.logaddexp(0.0, z) - y * z)))


def fit_l1_logistic(x: np.ndarray, y: np.ndarray, s: np.ndarray, c: float, iters: int = 500,
                    tol: float = 1e-10) -> np.ndarray:
    """argmin_w ||w||_1 + c * sum_i s_i * logloss(y_i, sigmoid(x_i . w)), soft labels y in [0, 1].

    The problem liblinear solves for sklearn's LogisticRegression(penalty="l1",
    fit_intercept=False) on rows duplicated with labels 1 / 0 and weights s*y / s*(1-y).
    Cyclic coordinate descent: a Newton step per coordinate, soft-thresholded, halved
    until the objective does not increase. x: (n, d).
    """
    w = np.zeros(x.shape[1])
    objective = lambda v: c * _soft_logloss_sum(x, y, s, v) + float(np.abs(v).sum())  # noqa: E731
    current = objective(w)
    for _ in range(iters):
        start = current
        for j in range(x.shape[1]):
            p = _sigmoid(x @ w)
            g = c * float(np.sum(s * (p - y) * x[:, j]))
            h = c * float(np.sum(s * p * (1 - p) * x[:, j] ** 2)) + 1e-12
            u = w[j] - g / h
            target = np.sign(u) * max(abs(u) - 1.0 / h, 0.0)
            step = target - w[j]
            while True:
                trial = w.copy()
                trial[j] = w[j] + step
                value = objective(trial)
                if value <= current + 1e-15 or abs(step) < 1e-14:
                    break
                step /= 2
            if value <= current:
                w, current = trial, value
        if start - current <= tol * max(1.0, abs(start)):
            break
    return w


def group_kfold_folds(n: int, n_splits: int = N_SPLITS) -> np.ndarray:
    """sklearn GroupKFold's fold of each of n equal-sized groups (rows here): the groups go,
    last first, to the currently lightest fold, i.e. fold (n - 1 - g) mod n_splits."""
    return (n - 1 - np.arange(n)) % n_splits


def official_lc_fit(x: np.ndarray, y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, float]:
    """LogisticRegressionCV(Cs=10, cv=GroupKFold(5), penalty="l1", scoring=weighted soft log
    loss), refit with the best C: (weights, C)."""
    folds = group_kfold_folds(len(y))
    scores = np.zeros(len(CS))
    for k in range(N_SPLITS):
        train, test = folds != k, folds == k
        for i, c in enumerate(CS):
            w = fit_l1_logistic(x[train], y[train], s[train], c)
            q = np.clip(_sigmoid(x[test] @ w), 1e-15, 1 - 1e-15)
            scores[i] += float(np.mean(s[test] * (y[test] * np.log(q) + (1 - y[test]) * np.log(1 - q))))
    best = CS[int(np.argmax(scores))]
    return fit_l1_logistic(x, y, s, best), best


def official_length_controlled_win_rate(preferences: Sequence[float | None], model_lengths: Sequence[int],
                                        baseline_lengths: Sequence[int], indices: Sequence[int],
                                        gamed: GamedAnnotations) -> LengthControlled:
    """AlpacaEval 2's LC win rate computed as alpaca_eval does, given its df_gamed.csv.

    `indices` are the instructions' positions in the 805-instruction set (alpaca_eval's
    `index`), aligned with the preferences and lengths (characters).
    """
    pref = np.array([np.nan if p is None else float(p) for p in preferences], dtype=float)
    pref[pref == 0.0] = 1.5
    pref = pref - 1.0
    delta = np.asarray(baseline_lengths, dtype=float) - np.asarray(model_lengths, dtype=float)
    std = float(np.std(delta, ddof=1)) if len(delta) > 1 else 0.0
    std_delta = delta / std if std > 0 else np.zeros_like(delta)
    by_label = gamed.difficulty_by_label()
    missing = [i for i in indices if int(i) not in by_label]
    if missing:
        raise InputError(gamed.path, None, "instruction_difficulty", f"no difficulty for index {missing[0]}")
    difficulty = np.array([by_label[int(i)] for i in indices])
    model_x = np.stack([np.tanh(std_delta), difficulty, np.ones_like(delta)], axis=1)
    gamed_x = np.stack([np.tanh(gamed.std_delta_len), gamed.difficulty, gamed.not_gamed], axis=1)
    x = np.concatenate([gamed_x, model_x])
    y = np.concatenate([gamed.preference, pref])
    s = np.concatenate([np.where(gamed.not_gamed > 0, 1.0, GAMED_WEIGHT), np.ones(len(pref))])
    keep = ~np.isnan(y)
    if int((~np.isnan(pref)).sum()) < 2:
        nan_weights = {LEN_FEATURE: float("nan"), DIFF_FEATURE: float("nan"), BASE_FEATURE: float("nan")}
        return LengthControlled(float("nan"), nan_weights, True, int((~np.isnan(pref)).sum()))
    w, _ = official_lc_fit(x[keep], y[keep], s[keep])
    test = model_x.copy()
    test[:, 0] = 0.0
    lc = float(_sigmoid(test @ w).mean() * 100)
    weights = {LEN_FEATURE: float(w[0]), DIFF_FEATURE: float(w[1]), BASE_FEATURE: float(w[2])}
    return LengthControlled(lc, weights, True, int((~np.isnan(pref)).sum()))
