"""How much of a win rate is length? (Tülu §5.4 and Appendix H; Tuna §3.4.)

Protocol: Tülu §5.4 / Appendix H and Tuna §3.4 describe these statistics; no code was
released, so the computation is drover's (Pearson r as scipy.stats.pearsonr).

Across systems judged against the same baseline: Pearson r between the win rate and
the average number of unique tokens per output, and between the win rate and the
average output length. Per system, the "dummy evaluator" that simply prefers the
longer (or the more-unique-token) answer: its win rate, and how often it agrees with
the real judge. A judge whose win rates track the dummy's is rewarding length.

Tokens: a simple regex word tokenizer by default (words and punctuation marks, case
kept); pass a model tokenizer's `tokenize` to count model tokens instead.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drover.judges.judge import Judge, JudgeContext, JudgeInputs, JudgeOutput, option
from drover.metrics.winrate import win_rate

Tokenize = Callable[[str], Sequence[str]]
_WORD = re.compile(r"\w+|[^\w\s]")


def word_tokens(text: str) -> list[str]:
    """Words and single punctuation marks.

    >>> word_tokens("It's 5 p.m.!")
    ['It', "'", 's', '5', 'p', '.', 'm', '.', '!']
    """
    return _WORD.findall(text)


def unique_tokens(text: str, tokenize: Tokenize = word_tokens) -> int:
    return len(set(tokenize(text)))


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson's r (NaN with fewer than 2 points or a constant series).

    >>> round(pearson([1, 2, 3], [2, 4, 7]), 4)
    0.9934
    """
    n = len(x)
    if n != len(y):
        raise ValueError("pearson: x and y differ in length")
    if n < 2:
        return float("nan")
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    if sxx == 0 or syy == 0:
        return float("nan")
    return max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))


def dummy_preference(baseline: str, model: str, feature: Callable[[str], float]) -> float:
    """1 = baseline has more of `feature`, 2 = the model has, 1.5 = equal (AlpacaEval encoding)."""
    fb, fm = feature(baseline), feature(model)
    return 2.0 if fm > fb else 1.0 if fb > fm else 1.5


@dataclass
class SystemAnnotations:
    """One system's judged pairs against the common baseline (output_1 = baseline)."""

    name: str
    baseline_outputs: list[str]
    model_outputs: list[str]
    preferences: list[float | None]  # the real judge's, AlpacaEval encoding


def analyze_system(s: SystemAnnotations, tokenize: Tokenize = word_tokens) -> dict[str, Any]:
    judge = win_rate(s.preferences)
    out: dict[str, Any] = {
        "win_rate": judge["win_rate"], "standard_error": judge["standard_error"],
        "avg_length": sum(len(o) for o in s.model_outputs) / max(1, len(s.model_outputs)),
        "avg_unique_tokens": sum(unique_tokens(o, tokenize) for o in s.model_outputs) / max(1, len(s.model_outputs)),
        "n": len(s.model_outputs),
    }
    features: dict[str, Callable[[str], float]] = {"longer": len,
                                                   "more_unique_tokens": lambda t: unique_tokens(t, tokenize)}
    for name, feature in features.items():
        dummy = [dummy_preference(b, m, feature) for b, m in zip(s.baseline_outputs, s.model_outputs)]
        out[f"dummy_{name}_win_rate"] = win_rate(dummy)["win_rate"]
        decided = [(d, p) for d, p in zip(dummy, s.preferences)
                   if p is not None and p == p and d != 1.5 and p not in (0, 1.5)]
        agree = sum((d > 1.5) == (float(p) > 1.5) for d, p in decided)
        out[f"dummy_{name}_agreement"] = 100.0 * agree / len(decided) if decided else float("nan")
    return out


def analyze(systems: list[SystemAnnotations], tokenize: Tokenize = word_tokens) -> dict[str, Any]:
    """Per-system statistics and the across-system correlations."""
    per_system = {s.name: analyze_system(s, tokenize) for s in systems}
    rates = [m["win_rate"] for m in per_system.values()]
    metrics = {
        "pearson_winrate_unique_tokens": pearson(rates, [m["avg_unique_tokens"] for m in per_system.values()]),
        "pearson_winrate_length": pearson(rates, [m["avg_length"] for m in per_system.values()]),
        "pearson_winrate_dummy_longer": pearson(rates, [m["dummy_longer_win_rate"] for m in per_system.values()]),
        "n_systems": float(len(systems)),
    }
    return {"metrics": metrics, "breakdown": {"per_system": per_system}}


# --- The registry entry -------------------------------------------------------------


@dataclass
class BiasSettings:
    annotations: list[str] = field(default_factory=list, metadata=option(
        "alpaca_eval annotations.json files (or drover's RUN/eval/<model>/annotations/<name>.json)",
        nargs="+", required=True))
    limit: int | None = None


def load_annotations(path: str, limit: int | None = None) -> SystemAnnotations:
    """One system's judged pairs from an alpaca_eval annotations list."""
    from drover.errors import InputError
    from drover.judges.files import read_json

    rows = read_json(path)
    if not isinstance(rows, list) or not rows or not isinstance(rows[0], dict) or "output_2" not in rows[0]:
        raise InputError(path, None, None, "expected an alpaca_eval annotations list "
                                           "{output_1, output_2, generator_2, preference}")
    rows = rows[:limit] if limit else rows
    return SystemAnnotations(str(rows[0].get("generator_2") or Path(path).stem), [r["output_1"] for r in rows],
                             [r["output_2"] for r in rows], [r.get("preference") for r in rows])


class BiasJudge(Judge):
    name = "bias"
    task = "judge_bias"
    title = "length / unique-token bias of win rates across systems (no judge calls)"
    example = "drover judge bias --annotations runs/a/eval/*/annotations/alpaca-eval-v2.json"
    primary_metric = "pearson_winrate_unique_tokens"
    uses_llm = False
    Settings = BiasSettings

    def load(self, settings: BiasSettings) -> JudgeInputs:
        systems = [load_annotations(p, settings.limit) for p in settings.annotations]
        return JudgeInputs("bias", "bias", [[s.name, s.baseline_outputs, s.model_outputs, s.preferences]
                                            for s in systems], systems)

    def judge(self, ctx: JudgeContext | None, settings: BiasSettings, inputs: JudgeInputs) -> JudgeOutput:
        systems = inputs.data
        summary = analyze(systems)
        return JudgeOutput(summary["metrics"], summary["breakdown"], sum(len(s.model_outputs) for s in systems),
                           message=f"Length bias across {len(systems)} systems")


JUDGE = BiasJudge()
