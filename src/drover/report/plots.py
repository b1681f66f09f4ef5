"""The report's figures as PNG bytes (matplotlib, Agg backend, no display needed)."""

from __future__ import annotations

import io
import math
from drover.report.collect import TrainingCurve


def _figure(width: float = 7.5, height: float = 3.0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, plt.subplots(1, 1, figsize=(width, height))


def _png(plt, fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def training_curves(curve: TrainingCurve) -> bytes:
    """Loss, learning rate and throughput against step, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(10, 2.8))
    series = [("loss", curve.loss), ("learning rate", curve.lr), ("tokens/s", curve.tokens_per_s)]
    for ax, (label, values) in zip(axes, series):
        pairs = [(s, v) for s, v in zip(curve.steps, values) if not math.isnan(v)]
        if pairs:
            ax.plot([p[0] for p in pairs], [p[1] for p in pairs], color="#3465a4", linewidth=1.4)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("step", fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle(curve.name, fontsize=10)
    return _png(plt, fig)


def relative_scores(rows: list[tuple[str, float]]) -> bytes:
    """Horizontal bars of relative score (%) against a reference, as GPT-4-LLM Figure 4."""
    plt, (fig, ax) = _figure(7.5, 0.5 + 0.45 * max(1, len(rows)))
    names = [r[0] for r in rows]
    values = [0.0 if math.isnan(r[1]) else r[1] for r in rows]
    bars = ax.barh(names, values, color="#73a9d8")
    for bar, value in zip(bars, values):
        ax.text(bar.get_width() + 1, bar.get_y() + bar.get_height() / 2, f"{value:.0f}%", va="center", fontsize=9)
    ax.axvline(100, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("relative score: total of the model / total of the reference (%)")
    ax.set_xlim(0, max([110.0] + [v + 15 for v in values]))
    ax.invert_yaxis()
    return _png(plt, fig)


def win_rates(rows: list[tuple[str, float, float]]) -> bytes:
    """Win rate bars with standard-error whiskers."""
    plt, (fig, ax) = _figure(7.5, 0.5 + 0.45 * max(1, len(rows)))
    names = [r[0] for r in rows]
    ax.barh(names, [r[1] for r in rows], xerr=[r[2] for r in rows], color="#8ae234", capsize=3)
    ax.axvline(50, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("win rate (%) ± standard error")
    ax.set_xlim(0, 100)
    ax.invert_yaxis()
    return _png(plt, fig)


def histogram(values: list[float], title: str, log: bool = True) -> bytes:
    plt, (fig, ax) = _figure(5, 2.6)
    ax.hist([v for v in values if v > 0] if log else values, bins=30, color="#ad7fa8", log=log)
    ax.set_title(title, fontsize=10)
    return _png(plt, fig)


def benchmark_bars(rows: list[tuple[str, float]], title: str) -> bytes:
    plt, (fig, ax) = _figure(7.5, 0.5 + 0.4 * max(1, len(rows)))
    ax.barh([r[0] for r in rows], [r[1] for r in rows], color="#fcaf3e")
    ax.set_title(title, fontsize=10)
    ax.invert_yaxis()
    return _png(plt, fig)

