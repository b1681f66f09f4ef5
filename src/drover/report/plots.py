"""The report's figures as PNG bytes (matplotlib, Agg backend, no display needed).

Each takes plain rows the report computed from result files; a failed result is passed
as a row with value None and drawn as a labelled gap ("failed"), never as a 0 bar.
"""

from __future__ import annotations

import io
import math

from drover.report.collect import TrainingCurve


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(plt, fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def training_curves(curve: TrainingCurve) -> bytes:
    """Every logged series of one training stage (loss, lr, reward accuracy, margins, ...) against step."""
    plt = _plt()
    names = sorted(curve.series, key=lambda n: (n != "loss", n))
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols + 0.5, 2.2 * rows + 0.4), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        points = [(s, v) for s, v in curve.series[name] if math.isfinite(v)]
        ax.plot([p[0] for p in points], [p[1] for p in points], color="#3465a4", linewidth=1.2,
                marker="o" if len(points) < 4 else None, markersize=3)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(curve.name, fontsize=10)
    return _png(plt, fig)


def bars_with_intervals(rows: list[tuple[str, float | None, float | None, float | None]], xlabel: str,
                        reference: float | None = None, xmax: float | None = None) -> bytes:
    """Horizontal bars (label, value, low, high) with 95% interval whiskers; None value = "failed"."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 0.6 + 0.42 * max(1, len(rows))))
    top = max([v for _, v, _, h in rows for v in (v, h) if v is not None] + [1.0])
    limit = xmax if xmax is not None else top * 1.2
    for y, (label, value, low, high) in enumerate(rows):
        if value is None:
            ax.text(limit * 0.01, y, "failed (no usable judgment)", va="center", fontsize=9, color="#a40000")
            continue
        err = None if low is None or high is None else [[max(0.0, value - low)], [max(0.0, high - value)]]
        ax.barh(y, value, xerr=err, color="#73a9d8", capsize=3)
        ax.text(min(value if high is None else high, limit) + limit * 0.01, y, f"{value:.1f}", va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=8)
    if reference is not None:
        ax.axvline(reference, color="grey", linestyle="--", linewidth=1)
    ax.set_xlim(0, limit)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.invert_yaxis()
    return _png(plt, fig)


def rouge_by_length(series: dict[str, dict[str, float]], buckets: list[str]) -> bytes:
    """ROUGE-L per ground-truth length bucket, one bar group per model (GPT-4-LLM Figure 6)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 3.0))
    width = 0.8 / max(1, len(series))
    for i, (model, values) in enumerate(series.items()):
        xs = [b + i * width for b in range(len(buckets))]
        ax.bar(xs, [values.get(b, float("nan")) for b in buckets], width=width, label=model)
    ax.set_xticks([b + 0.4 - width / 2 for b in range(len(buckets))], buckets)
    ax.set_xlabel("ground-truth response length (words)")
    ax.set_ylabel("ROUGE-L")
    ax.legend(fontsize=8)
    return _png(plt, fig)


def scatter(points: list[tuple[str, float, float]], xlabel: str, ylabel: str) -> bytes:
    """Labelled points (label, x, y), e.g. unique tokens vs win rate across models (Tülu)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    ax.scatter([p[1] for p in points], [p[2] for p in points], color="#cc0000")
    for label, x, y in points:
        ax.annotate(label, (x, y), fontsize=8, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.grid(alpha=0.3)
    return _png(plt, fig)


def binned_lines(series: dict[str, list[tuple[float, float]]], xlabel: str, ylabel: str) -> bytes:
    """One line per model of (x, y) points, e.g. output length bin vs mean preference."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for model, points in series.items():
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=model)
    ax.axhline(50, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(plt, fig)
