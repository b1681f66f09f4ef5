"""The papers' figures, computed from drover's own result files (drawn by `plots`).

- judge bars (GPT-4-LLM Figure 4, ranked; AlpacaEval win rates): one bar per model and
  judge result, best first, 95% interval whiskers where per-judgment values exist, a
  fully failed result drawn as "failed", never as 0;
- ROUGE-L by ground-truth length bucket (GPT-4-LLM Figure 6): benchmark examples that
  carry a `bucket` field and the primary metric per example (Unnatural Instructions);
- unique tokens vs win rate across models (Tülu §5, the length/diversity bias of
  judge-based evaluation): mean unique words per output against the win rate;
- length vs preference: per model, judgments binned by output length (quartiles),
  the mean preference of each bin as a win rate;
- training curves: every series each training stage logged.
The verb-noun chart (GPT-4-LLM Figure 1) comes from `drover stats` (spaCy) with the data statistics.

Judge examples give the model's answer as `output` (or `meta.output`); figures that need
it are skipped, and say so, when no judge example has one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from drover.report import plots
from drover.report.collect import Result, RunContents, run_names
from drover.report.scores import judge_preference
from drover.report.tables import failed, value_of
from drover.stats import word_tokens

# Where a judge metric's "no difference" line is drawn.
REFERENCE_LINE = {"relative_score": 100.0, "win_rate": 50.0}


@dataclass
class Figure:
    name: str       # file name under report-files/
    title: str
    caption: str
    png: bytes


def model_output(example: dict) -> str | None:
    out = example.get("output")
    if out is None:
        out = (example.get("meta") or {}).get("output")
    return out if isinstance(out, str) else None


def judge_bars(results: list[Result]) -> list[Figure]:
    """One figure per (metric, reference): the ranked groups of GPT-4-LLM Figure 4 (vs ChatGPT, vs GPT-4)."""
    out = []
    judges = [r for r in results if r.judged]
    reference_of = {id(r): str((r.record.get("settings") or {}).get("reference") or "") for r in judges}
    for metric, reference in dict.fromkeys((r.primary, reference_of[id(r)]) for r in judges):
        rows = []
        for r in [r for r in judges if r.primary == metric and reference_of[id(r)] == reference]:
            value = None if failed(r) else value_of(r, metric)
            values = r.values(metric) if value is not None else None
            ci = values.interval() if values is not None else None
            rows.append((f"{r.row} — {r.task}", value, ci.low if ci else None, ci.high if ci else None))
        rows.sort(key=lambda row: (row[1] is None, -(row[1] or 0.0)))
        against = f" vs {reference}" if reference else ""
        png = plots.bars_with_intervals(rows, f"{metric}{against} (95% interval where per-judgment values exist)",
                                        REFERENCE_LINE.get(metric))
        name = re.sub(r"[^A-Za-z0-9]+", "-", f"judge-{metric}-{reference}".strip("-")).strip("-")
        out.append(Figure(f"{name}.png", f"Judges: {metric}{against}",
                          "models ranked by the judge's score against the reference, best-of-n rows included "
                          "(GPT-4-LLM Figure 4's ranked groups); failed results labelled, never drawn as 0", png))
    return out


def _bucket_order(name: str) -> tuple[float, str]:
    match = re.search(r"\d+", name)
    return (float(match.group()) if match else float("inf"), name)


def rouge_by_length(results: list[Result]) -> list[Figure]:
    out = []
    for task in dict.fromkeys(r.task for r in results if r.kind == "benchmark"):
        series: dict[str, dict[str, float]] = {}
        of_task = [r for r in results if r.task == task and r.kind == "benchmark"]
        for r in of_task:
            rows = [e for e in r.examples() if "bucket" in e and isinstance(e.get(r.primary), (int, float))]
            by: dict[str, list[float]] = {}
            for e in rows:
                by.setdefault(str(e["bucket"]), []).append(float(e[r.primary]))
            if by:
                series[r.row] = {b: sum(v) / len(v) for b, v in by.items()}
        if series:
            buckets = sorted({b for s in series.values() for b in s}, key=_bucket_order)
            out.append(Figure(f"length-buckets-{task}.png", f"{task}: {of_task[0].primary} by ground-truth length",
                              "per ground-truth length bucket (GPT-4-LLM Figure 6)",
                              plots.rouge_by_length(series, buckets)))
    return out


def _pairwise_judges(results: list[Result]) -> list[tuple[Result, list[tuple[str, float]]]]:
    """Judge results with per-judgment preferences and outputs: (result, [(output, preference)])."""
    out = []
    for r in results:
        if not r.judged or failed(r):
            continue
        pairs = [(model_output(e), judge_preference(e)) for e in r.examples()]
        kept = [(o, p) for o, p in pairs if o is not None and p is not None]
        if kept:
            out.append((r, kept))
    return out


def length_bias(results: list[Result]) -> tuple[list[Figure], str]:
    judged = _pairwise_judges(results)
    if not judged:
        return [], "unique tokens vs win rate and length vs preference: no judge example carries the model's output"
    points = []
    lines: dict[str, list[tuple[float, float]]] = {}
    for r, kept in judged:
        unique = sum(len(set(word_tokens(o))) for o, _ in kept) / len(kept)
        win = 100 * sum(p - 1 for _, p in kept) / len(kept)
        points.append((f"{r.row} ({r.task})", unique, win))
        ordered = sorted(kept, key=lambda item: len(item[0]))
        bins = [ordered[i * len(ordered) // 4:(i + 1) * len(ordered) // 4] for i in range(4)]
        lines[f"{r.row} ({r.task})"] = [(sum(len(o) for o, _ in b) / len(b), 100 * sum(p - 1 for _, p in b) / len(b))
                                        for b in bins if b]
    return [Figure("unique-tokens-vs-win-rate.png", "Unique tokens vs win rate",
                   "mean unique words per output against the judge's win rate, across models (Tülu)",
                   plots.scatter(points, "mean unique words per output", "win rate (%)")),
            Figure("length-vs-preference.png", "Length vs preference",
                   "judgments binned by output length (quartiles): mean preference as a win rate",
                   plots.binned_lines(lines, "mean output length in the bin (characters)", "win rate (%)"))], ""


def training(runs: list[RunContents]) -> list[Figure]:
    out = []
    names = run_names([run.root for run in runs])  # two runs named alike never share one figure file
    for run in runs:
        for curve in run.curves:
            name = f"training-{names[run.root]}-{curve.name}".replace("/", "-")
            out.append(Figure(re.sub(r"[^A-Za-z0-9._-]+", "-", name) + ".png", f"Training: {names[run.root]}/{curve.name}",
                              f"{curve.steps} logged steps; every logged series", plots.training_curves(curve)))
    return out
