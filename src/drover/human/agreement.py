"""Inter-annotator agreement, as Tülu (Wang et al. 2023, Appendix G) reports it.

- Acceptance agreement: the fraction of (item, output) judgements on which two raters
  give the same acceptable / not acceptable (Tülu: 0.84).
- Tie-discounted pairwise accuracy (Tülu, after LIMA, Zhou et al. 2023): preferences are
  merged to three ways (A better / tie / B better: "clearly" and "slightly" together);
  two raters score 1 if they agree, 0.5 if exactly one of them said tie, 0 otherwise
  (Tülu: 0.72).
- Cohen's kappa (Cohen 1960): (p_o - p_e) / (1 - p_e) for one pair of raters, with p_e
  from each rater's own label distribution; equal to sklearn's `cohen_kappa_score`.
  With more than two raters, the pooled value is Light's kappa (Light 1971): the mean
  of the pairwise Cohen's kappas.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence


def merged(score: int) -> int:
    """A five-level preference (+2..-2) merged to three ways: +1 A better, 0 tie, -1 B better."""
    return (score > 0) - (score < 0)


def tie_discounted(x: int, y: int) -> float:
    """Tie-discounted agreement of two merged preferences.

    >>> tie_discounted(1, 1), tie_discounted(1, 0), tie_discounted(0, -1), tie_discounted(1, -1), tie_discounted(0, 0)
    (1.0, 0.5, 0.5, 0.0, 1.0)
    """
    if x == y:
        return 1.0
    return 0.5 if 0 in (x, y) else 0.0


def cohen_kappa(pairs: Sequence[tuple[Hashable, Hashable]]) -> float | None:
    """Cohen's kappa of (rater 1 label, rater 2 label) pairs; None when undefined
    (no pairs, or both raters always gave one and the same label: p_e = 1).

    >>> cohen_kappa([(1, 1), (0, 0), (1, 0), (0, 0)])
    0.5
    """
    n = len(pairs)
    if n == 0:
        return None
    first = Counter(x for x, _ in pairs)
    second = Counter(y for _, y in pairs)
    p_o = sum(x == y for x, y in pairs) / n
    p_e = sum(first[c] * second[c] for c in first) / (n * n)
    if p_e == 1.0:
        return None
    return (p_o - p_e) / (1 - p_e)


def mean_or_none(values: Sequence[float]) -> float | None:
    """The mean, or None for no values (an empty set has no agreement; 0 would be a claim)."""
    return sum(values) / len(values) if values else None
