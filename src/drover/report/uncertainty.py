"""Uncertainty of a metric from its per-example values, and paired tests between models.

Which interval, where (each table cell says which one it used):

- **exact binomial** (Clopper & Pearson 1934): a metric that is the percentage of 0/1
  per-example outcomes (accuracy, micro-averaged). The interval is the set of p whose
  two one-sided binomial tests at 2.5% do not reject; computed here by bisection on
  the exact binomial CDF, so it needs no SciPy (tests compare with `scipy.stats`).
- **bootstrap** (percentile, B=2000, numpy's default generator seeded 0): every other mean of per-example
  values (ROUGE-L, F1, MC2, pass@k estimates, AlpacaEval preferences), macro
  averages over groups (MMLU subjects, BBH tasks: resampled within each group, the
  stratified bootstrap), and ratios of totals (Vicuna-80's relative score: questions
  resampled, sum of the model's scores over sum of the reference's), recomputing the
  metric on each resample.

A metric whose per-example values do not reproduce the recorded number (e.g. a ratio
of totals) gets no interval rather than a wrong one.

Paired significance: the **two-sided exact sign test** on the examples both models
answered (matched by example id): n+ examples where A scored higher, n- where B did,
ties dropped, p = min(1, 2 * P[Bin(n+ + n-, 1/2) <= min(n+, n-)]). For 0/1 outcomes this
is the exact McNemar test. It assumes nothing about the scale of the scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

LEVEL = 0.95
BOOTSTRAP_SAMPLES = 2000
BOOTSTRAP_SEED = 0
ALPHA = 0.05  # significance level of the marks in the tables


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    method: str  # "exact binomial" | "bootstrap" | "stratified bootstrap"


def _log_choose(n: int) -> "np.ndarray":
    """log C(n, k) for k = 0..n (a cumulative sum of log((n - i) / (i + 1)))."""
    import numpy as np

    i = np.arange(n, dtype=np.float64)
    return np.concatenate([[0.0], np.cumsum(np.log(n - i) - np.log(i + 1))])


def binom_cdf(k: int, n: int, p: float) -> float:
    """P[X <= k] for X ~ Bin(n, p), summed exactly in log space (vectorised: n up to millions)."""
    import numpy as np

    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    ks = np.arange(k + 1, dtype=np.float64)
    log_pmf = _log_choose(n)[: k + 1] + ks * math.log(p) + (n - ks) * math.log1p(-p)
    top = float(log_pmf.max())
    return min(1.0, float(math.exp(top) * np.exp(log_pmf - top).sum()))


def _bisect(f, lo: float = 0.0, hi: float = 1.0, iters: int = 60) -> float:
    """The root of an increasing function f on [lo, hi] (P[X >= k] and -P[X <= k] increase with p)."""
    for _ in range(iters):
        mid = (lo + hi) / 2
        if f(mid) < 0:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def clopper_pearson(successes: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Exact binomial interval for a proportion (fractions in [0, 1]).

    >>> clopper_pearson(0, 10)[0], round(clopper_pearson(0, 10)[1], 4)
    (0.0, 0.3085)
    """
    if n <= 0:
        raise ValueError("an interval needs at least one example")
    tail = (1 - level) / 2
    low = 0.0 if successes == 0 else _bisect(lambda p: (1 - binom_cdf(successes - 1, n, p)) - tail)
    high = 1.0 if successes == n else _bisect(lambda p: tail - binom_cdf(successes, n, p))
    return low, high


def _resampled_means(values: "np.ndarray", rng: "np.random.Generator", samples: int) -> "np.ndarray":
    """`samples` bootstrap means of `values` (resampled in chunks to bound memory)."""
    import numpy as np

    n = len(values)
    out = np.empty(samples)
    chunk = max(1, min(samples, 2_000_000 // max(1, n)))
    for start in range(0, samples, chunk):
        stop = min(samples, start + chunk)
        out[start:stop] = values[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    return out


def bootstrap(values: Sequence[float], groups: Sequence[str] | None = None, level: float = LEVEL,
              samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile bootstrap of the mean, or of the macro mean over `groups` (resampled within groups)."""
    import numpy as np

    if not values:
        raise ValueError("an interval needs at least one example")
    rng = np.random.default_rng(seed)
    if groups is None:
        strata = [np.asarray(values, dtype=np.float64)]
    else:
        by_group: dict[str, list[float]] = {}
        for value, group in zip(values, groups):
            by_group.setdefault(group, []).append(value)
        strata = [np.asarray(by_group[g], dtype=np.float64) for g in sorted(by_group)]
    stats = sum(_resampled_means(s, rng, samples) for s in strata) / len(strata)
    tail = (1 - level) / 2
    return float(np.quantile(stats, tail)), float(np.quantile(stats, 1 - tail))


def bootstrap_ratio(numerators: Sequence[float], denominators: Sequence[float], level: float = LEVEL,
                    samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile bootstrap of sum(numerators) / sum(denominators), resampling items (pairs kept)."""
    import numpy as np

    if not numerators:
        raise ValueError("an interval needs at least one example")
    rng = np.random.default_rng(seed)
    num, den = np.asarray(numerators, dtype=np.float64), np.asarray(denominators, dtype=np.float64)
    idx = rng.integers(0, len(num), size=(samples, len(num)))
    totals = den[idx].sum(axis=1)
    stats = num[idx].sum(axis=1)[totals > 0] / totals[totals > 0]
    if not len(stats):
        return math.nan, math.nan
    tail = (1 - level) / 2
    return float(np.quantile(stats, tail)), float(np.quantile(stats, 1 - tail))


def sign_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, int, int]:
    """Two-sided exact sign test of paired scores: (p, n where a > b, n where b > a).

    >>> sign_test([1, 1, 1, 1, 1, 0], [0, 0, 0, 0, 0, 0])[0]
    0.0625
    """
    plus = sum(1 for x, y in zip(a, b) if x > y)
    minus = sum(1 for x, y in zip(a, b) if y > x)
    n = plus + minus
    if n == 0:
        return 1.0, 0, 0
    return min(1.0, 2 * binom_cdf(min(plus, minus), n, 0.5)), plus, minus


def interval(values: Sequence[float], scale: float, groups: Sequence[str] | None = None) -> Interval:
    """The 95% interval of `scale * mean(values)` (or of the macro mean over groups), by the rule above."""
    binary = all(v in (0.0, 1.0) for v in values)
    if groups is None and binary:
        low, high = clopper_pearson(int(sum(values)), len(values))
        return Interval(scale * low, scale * high, "exact binomial")
    low, high = bootstrap(values, groups)
    return Interval(scale * low, scale * high, "bootstrap" if groups is None else "stratified bootstrap")
