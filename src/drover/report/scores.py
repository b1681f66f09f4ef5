"""Which per-example values back a recorded metric (for intervals and paired tests).

The report never trusts a per-example field blindly: a candidate array is used only if
it reproduces the recorded number, as `scale * mean` (scale 1 or 100) or as the macro
mean over a grouping field (MMLU subjects, BBH tasks, TydiQA languages). Fields read,
in this order (the contract with the writers of `RUN/eval/<model>/<name>.examples.jsonl`):

benchmark examples
    `id` (pairs two models' examples), then the metric's own name as a field
    (e.g. `rougeL`, `mc2`, `f1`), else `score`, else `correct` (bool; or an int count
    of passed samples with `n` samples, turned into the unbiased pass@k estimate of
    that problem when the metric is `pass@k`). Grouping fields: `task`, `subject`,
    `lang`, `category`, `group`.
judge and human examples (one per judgment)
    `preference` in [1, 2] in alpaca_eval's frame (2 = the evaluated model won, 1.5 a
    tie, null = failed); without it, a positional `verdict` ({"type": "preference",
    "value"}, {"type": "choice", "outcome"} or {"type": "score_pair", "first", "second"})
    with `meta.switched` (true when the model's answer was shown first; Vicuna-80's
    `meta.order` "ab" = reference first, "ba" = model first) is mapped to that frame. `error` or a
    `parse_failure` verdict = failed. Pairing id: `meta.index`, `meta.question_id`, else `id`.
    Several judgments under one pairing id (both orders, two turns) are one unit: the bootstrap
    resamples questions, as per-question means where they reproduce the metric, else (an
    order failed, so questions hold unequal counts and the metric is the mean over
    judgments) as a ratio of per-question totals to per-question counts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from drover.report.uncertainty import Interval, bootstrap_ratio, interval

GROUP_FIELDS = ("task", "subject", "lang", "category", "group")
_PASS_AT = re.compile(r"^pass@(\d+)$")
# drover reports percentages (as the Tülu tables do); 100 is tried first so that a 0 score
# (ambiguous) gets a percentage interval.
SCALES = (100.0, 1.0)
_OUTCOME_PREFERENCE = {"first": 1.0, "second": 2.0, "tie": 1.5}


@dataclass
class MetricValues:
    """Per-example values whose (scaled, possibly macro) mean is the recorded metric."""

    ids: list[str]
    values: list[float]
    scale: float
    groups: list[str] | None = None
    denominators: list[float] | None = None  # a ratio of totals: sum(values) / sum(denominators)
    _interval: Interval | None = field(default=None, repr=False, compare=False)

    def interval(self) -> Interval:
        """The 95% interval of the metric (computed once: a bootstrap is not free)."""
        if self._interval is None:
            if self.denominators is not None:
                low, high = bootstrap_ratio(self.values, self.denominators)
                self._interval = Interval(self.scale * low, self.scale * high, "bootstrap (ratio of totals)")
            else:
                self._interval = interval(self.values, self.scale, self.groups)
        return self._interval

    def by_id(self) -> dict[str, float]:
        """Per-example values for paired tests (a ratio's per-example share value / denominator).

        Several values under one id (a question judged in both orders, or per turn) are one
        paired unit: their mean, never just the last one read."""
        if self.denominators is not None:
            return {i: v / d if d else 0.0 for i, v, d in zip(self.ids, self.values, self.denominators)}
        sums: dict[str, list[float]] = {}
        for i, v in zip(self.ids, self.values):
            sums.setdefault(i, []).append(v)
        return {i: sum(vs) / len(vs) for i, vs in sums.items()}


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6 * max(1.0, abs(a), abs(b))


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def _pass_at_k(n: int, c: int, k: int) -> float:
    """Chen et al. (2021) unbiased estimator for one problem: 1 - C(n-c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def _benchmark_candidates(examples: list[dict[str, Any]], metric: str) -> list[list[float | None]]:
    out = []
    for name in (metric, "score"):
        out.append([_number(e.get(name)) for e in examples])
    match = _PASS_AT.match(metric)
    if match and all(isinstance(e.get("n"), int) and isinstance(e.get("correct"), int) for e in examples):
        k = int(match.group(1))
        out.append([_pass_at_k(e["n"], e["correct"], k) if e["n"] >= k else None for e in examples])
    else:
        out.append([_number(e.get("correct")) for e in examples])
    return out


def judge_preference(example: dict[str, Any]) -> float | None:
    """The judgment as a preference in the model's frame (2 = model won), None when it failed."""
    if example.get("error"):
        return None
    if "preference" in example:
        return _number(example.get("preference"))
    verdict = example.get("verdict") or {}
    meta = example.get("meta") or {}
    switched = meta.get("switched")
    if switched is None and meta.get("order") in ("ab", "ba"):  # Vicuna-80: "ab" shows the reference first
        switched = meta["order"] == "ba"
    if verdict.get("type") == "preference":
        value = _number(verdict.get("value"))
    elif verdict.get("type") == "choice":
        value = _OUTCOME_PREFERENCE.get(str(verdict.get("outcome")))
    elif verdict.get("type") == "score_pair":
        first, second = _number(verdict.get("first")), _number(verdict.get("second"))
        if first is None or second is None:
            return None
        value = 1.0 if first > second else 2.0 if second > first else 1.5
    else:
        return None
    if value is None or not isinstance(switched, bool):
        return None
    return 3.0 - value if switched else value


def _score_totals(examples: Sequence[dict[str, Any]], target: float) -> MetricValues | None:
    """Vicuna-80 style: per question, the model's and the reference's scores averaged over the orders
    that parsed (`score_pair` verdicts, `meta.order` "ab" = reference first); the metric is the
    ratio of their totals (drover.judges.vicuna.summarize)."""
    model: dict[str, float] = {}
    reference: dict[str, float] = {}
    count: dict[str, int] = {}
    for e in examples:
        verdict = e.get("verdict") or {}
        order = (e.get("meta") or {}).get("order")
        if e.get("error") or verdict.get("type") != "score_pair" or order not in ("ab", "ba"):
            continue
        first, second = _number(verdict.get("first")), _number(verdict.get("second"))
        if first is None or second is None:
            continue
        ref, mod = (first, second) if order == "ab" else (second, first)
        key = pair_id(e, "judge")
        model[key] = model.get(key, 0.0) + mod
        reference[key] = reference.get(key, 0.0) + ref
        count[key] = count.get(key, 0) + 1
    model = {k: v / count[k] for k, v in model.items()}
    reference = {k: v / count[k] for k, v in reference.items()}
    total = sum(reference.values())
    if not model or not total:
        return None
    for scale in SCALES:
        if _close(scale * sum(model.values()) / total, target):
            ids = list(model)
            return MetricValues(ids, [model[i] for i in ids], scale, denominators=[reference[i] for i in ids])
    return None


def pair_id(example: dict[str, Any], kind: str) -> str:
    if kind != "benchmark":
        meta = example.get("meta") or {}
        for key in ("index", "question_id"):
            if key in meta:
                return str(meta[key])
    return str(example.get("id"))


def _match(ids: list[str], values: list[float], groups_of: dict[str, list[str]], target: float) -> MetricValues | None:
    mean = sum(values) / len(values)
    for scale in SCALES:
        if _close(scale * mean, target):
            return MetricValues(ids, values, scale)
    for groups in groups_of.values():
        by_group: dict[str, list[float]] = {}
        for value, group in zip(values, groups):
            by_group.setdefault(group, []).append(value)
        if len(by_group) < 2:
            continue
        macro = sum(sum(v) / len(v) for v in by_group.values()) / len(by_group)
        for scale in SCALES:
            if _close(scale * macro, target):
                return MetricValues(ids, values, scale, groups)
    return None


def metric_values(record: dict[str, Any], examples: Sequence[dict[str, Any]], metric: str) -> MetricValues | None:
    """The per-example values reproducing `record.metrics[metric]`, or None when none do."""
    target = _number((record.get("metrics") or {}).get(metric))
    if target is None or not examples:
        return None
    kind = record.get("kind", "benchmark")
    if kind != "benchmark":  # a judge's or human raters' judgments
        ratio = _score_totals(examples, target)
        if ratio is not None:
            return ratio
        prefs = [(pair_id(e, kind), judge_preference(e)) for e in examples]
        kept = [(i, p - 1.0) for i, p in prefs if p is not None]
        if not kept:
            return None
        by_question: dict[str, list[float]] = {}
        for i, v in kept:
            by_question.setdefault(i, []).append(v)
        if len(by_question) < len(kept):  # both orders / turns of one question: resample questions, not judgments
            found = _match(list(by_question), [sum(v) / len(v) for v in by_question.values()], {}, target)
            if found is not None:
                return found
            # Uneven judgments per question (an order failed to parse): the metric is the mean
            # over judgments = a ratio of per-question totals, still resampled by question.
            sums, counts = [sum(v) for v in by_question.values()], [float(len(v)) for v in by_question.values()]
            for scale in SCALES:
                if _close(scale * sum(sums) / sum(counts), target):
                    return MetricValues(list(by_question), sums, scale, denominators=counts)
        return _match([i for i, _ in kept], [v for _, v in kept], {}, target)
    examples = list(examples)
    groups_of = {f: [str(e[f]) for e in examples] for f in GROUP_FIELDS if all(f in e for e in examples)}
    ids = [pair_id(e, kind) for e in examples]
    for candidate in _benchmark_candidates(examples, metric):
        if any(v is None for v in candidate):
            continue
        found = _match(ids, [float(v) for v in candidate], groups_of, target)  # type: ignore[arg-type]
        if found is not None:
            return found
    return None
