"""Human ratings: what a rater says about one instance, how it is stored, and the summary.

Following Tülu (Wang et al. 2023, §4.3), a rater marks each completion acceptable or not
and gives a 5-point pairwise preference. Completions are shown as A and B in a seeded
random order; the stored record also says which model was A, and `score` restates the
preference from the side of the instance's first model (+2 clearly better ... -2 clearly
worse), so summaries never depend on the display order.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from drover.errors import InputError
from drover.formats.source import read_rows
from drover.human.instances import Instance
from drover.records import JsonlAppender

# key -> (label shown to raters, score for A)
PREFERENCES: dict[str, tuple[str, int]] = {
    "a_clearly": ("A is clearly better", 2),
    "a_slightly": ("A is slightly better", 1),
    "tie": ("About the same", 0),
    "b_slightly": ("B is slightly better", -1),
    "b_clearly": ("B is clearly better", -2),
}
SCORE_NAMES = {2: "clearly better", 1: "slightly better", 0: "tie", -1: "slightly worse", -2: "clearly worse"}


def rating_id(instance_key: str, rater: str) -> str:
    return f"{instance_key}::{rater}"


def make_rating(instance: Instance, rater: str, seed: int, acceptable_a: bool, acceptable_b: bool,
                preference: str) -> dict[str, Any]:
    """The stored record for one judgement (A/B as displayed for this seed)."""
    if preference not in PREFERENCES:
        raise ValueError(f"preference must be one of {', '.join(PREFERENCES)}")
    a, b = instance.shown_order(seed)
    score_a = PREFERENCES[preference][1]
    return {
        "id": rating_id(instance.key, rater),
        "instance": instance.key,
        "instance_id": instance.id,
        "rater": rater,
        "models": list(instance.models),
        "shown": [instance.models[a], instance.models[b]],
        "acceptable": {instance.models[a]: acceptable_a, instance.models[b]: acceptable_b},
        "preference": preference,
        "score": score_a if a == 0 else -score_a,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


class RatingStore:
    """Append-only ratings file, resumable: one flushed line per rating (a torn last line
    from a crash is dropped on open), with a lock for concurrent requests."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._appender = JsonlAppender(self.path)
        self._lock = threading.Lock()

    def has(self, instance_key: str, rater: str) -> bool:
        return rating_id(instance_key, rater) in self._appender.done_ids

    def add(self, rating: dict[str, Any]) -> bool:
        """Append a rating; False (and nothing written) if this rater already rated it."""
        with self._lock:
            if rating["id"] in self._appender.done_ids:
                return False
            self._appender.write(rating)
            return True

    def count(self, rater: str, instances: list[Instance]) -> int:
        return sum(self.has(inst.key, rater) for inst in instances)

    def close(self) -> None:
        self._appender.close()


def read_ratings(path: str | Path) -> list[dict[str, Any]]:
    """Validated ratings; a re-rating of the same instance by the same rater replaces the first."""
    latest: dict[str, dict[str, Any]] = {}
    for row in read_rows(path):
        row.object()
        rid = row.text("id")
        row.text("rater")
        models = row.array("models")
        if len(models) != 2 or not all(isinstance(m, str) for m in models):
            raise row.error("models", "expected two model names")
        acceptable = row.get("acceptable", dict)
        for model in models:
            if not isinstance(acceptable.get(model), bool):
                raise row.error(f"acceptable.{model}", "expected true or false")
        score = row.get("score", int)
        if score not in SCORE_NAMES:
            raise row.error("score", f"expected an integer from -2 to 2, got {score}")
        latest[rid] = row.obj
    return list(latest.values())


def summarize_ratings(path: str | Path) -> dict[str, Any]:
    """Acceptance rate per model, and per model pair the 5-level distribution and
    win/tie/loss from the pair's first model's side (as in Tülu's Figure 4)."""
    ratings = read_ratings(path)
    if not ratings:
        raise InputError(str(path), None, None, "no ratings")
    accept: dict[str, Counter] = defaultdict(Counter)
    pairs: dict[tuple[str, str], Counter] = defaultdict(Counter)
    raters: Counter = Counter()
    for r in ratings:
        raters[r["rater"]] += 1
        for model in r["models"]:
            accept[model]["rated"] += 1
            accept[model]["acceptable"] += int(r["acceptable"][model])
        pairs[tuple(r["models"])][r["score"]] += 1
    acceptance = {m: {"rated": c["rated"], "acceptable": c["acceptable"], "rate": c["acceptable"] / c["rated"]}
                  for m, c in sorted(accept.items())}
    pair_stats = {}
    for (first, second), c in sorted(pairs.items()):
        n = sum(c.values())
        pair_stats[f"{first} vs {second}"] = {
            "first": first, "second": second, "n": n,
            "levels": {SCORE_NAMES[s]: c[s] for s in (2, 1, 0, -1, -2)},
            "wins": c[2] + c[1], "ties": c[0], "losses": c[-1] + c[-2],
            "win_rate": (c[2] + c[1]) / n, "tie_rate": c[0] / n, "loss_rate": (c[-1] + c[-2]) / n,
        }
    return {"ratings": len(ratings), "raters": dict(raters), "acceptance": acceptance, "pairs": pair_stats}


def format_summary(summary: dict[str, Any]) -> str:
    """A plain-text report of `summarize_ratings`."""
    lines = [f"{summary['ratings']} ratings by {len(summary['raters'])} rater(s): "
             + ", ".join(f"{k} ({v})" for k, v in sorted(summary["raters"].items())), "", "acceptance rate:"]
    width = max(len(m) for m in summary["acceptance"])
    for model, a in summary["acceptance"].items():
        lines.append(f"  {model:<{width}}  {100 * a['rate']:5.1f}%  ({a['acceptable']}/{a['rated']})")
    lines += ["", "pairwise (from the first model's side):"]
    for name, p in summary["pairs"].items():
        levels = ", ".join(f"{k} {v}" for k, v in p["levels"].items())
        lines.append(f"  {name}: win {p['wins']} / tie {p['ties']} / loss {p['losses']} (n={p['n']}; "
                     f"win {100 * p['win_rate']:.1f}%, tie {100 * p['tie_rate']:.1f}%, loss {100 * p['loss_rate']:.1f}%)")
        lines.append(f"    {levels}")
    return "\n".join(lines)
