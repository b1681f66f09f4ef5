"""The results of a study: win/tie/loss, acceptance, agreement — per rater and pooled.

Everything is spoken from system a's side. Pooling is per *item*: an item rated by m
raters contributes weight 1/m to each of its ratings, so 6 items rated by 2 raters are
n = 6, not 12, and a doubly-rated item does not count twice. Per-rater figures are plain
counts over that rater's own ratings. Flagged ratings (invalid / too hard) are counted
but left out of every rate, as are ratings that skip the question.

Win/tie/loss merge "much"/"somewhat" (HHH) or "clearly"/"slightly" (Tülu), as the
papers' figures do; the five-level distribution is kept beside it. Agreement (see
agreement.py) is computed on every item with two or more valid ratings — the study's
overlap set, plus any item given to several raters.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from itertools import combinations
from typing import Any

from drover.human.agreement import cohen_kappa, mean_or_none, merged, tie_discounted
from drover.human.forms import FLAGS, Form
from drover.human.store import Answer, Study
from drover.results import strict

OUTCOMES = {1: "win", 0: "tie", -1: "loss"}


def summarize(study: Study) -> dict[str, Any]:
    """The results of an open study (see `summarize_answers`)."""
    summary = summarize_answers(study.form, study.all_answers())
    summary["study"] = {"form": study.form.name, "form_source": study.form.source,
                        "system_a": study.name_a, "system_b": study.name_b, "items": len(study.items()),
                        "raters": study.raters(), "closed": study.is_closed(), "settings": study.settings}
    return summary


def _valid(answers: list[Answer]) -> list[Answer]:
    return [a for a in answers if not a.flags]


def _by_item(answers: list[Answer], key: str) -> dict[str, list[Answer]]:
    out: dict[str, list[Answer]] = defaultdict(list)
    for a in answers:
        if key in a.answers:
            out[a.item_id].append(a)
    return out


def _preference(form: Form, answers: list[Answer], name: str) -> dict[str, Any]:
    by_item = _by_item(answers, name)
    outcome_w = {o: 0.0 for o in OUTCOMES.values()}
    level_w = {level.label: 0.0 for level in form.levels}
    counts = {o: 0 for o in OUTCOMES.values()}
    per_rater: dict[str, dict[str, Any]] = defaultdict(lambda: {"n": 0, **{o: 0 for o in OUTCOMES.values()}})
    for ratings in by_item.values():
        for a in ratings:
            score = a.answers[name]
            outcome = OUTCOMES[merged(score)]
            outcome_w[outcome] += 1 / len(ratings)
            level_w[form.level_label(score)] += 1 / len(ratings)
            counts[outcome] += 1
            per_rater[a.rater]["n"] += 1
            per_rater[a.rater][outcome] += 1
    n_items = len(by_item)
    pooled = {"n_items": n_items, "n_ratings": sum(counts.values()), "counts": counts,
              **{o: (w / n_items if n_items else None) for o, w in outcome_w.items()},
              "levels": {label: (w / n_items if n_items else None) for label, w in level_w.items()}}
    for stats in per_rater.values():
        for o in OUTCOMES.values():
            stats[f"{o}_rate"] = stats[o] / stats["n"]
    return {"pooled": pooled, "per_rater": dict(sorted(per_rater.items())), **_preference_agreement(by_item, name)}


def _pairs(by_item: dict[str, list[Answer]]) -> list[tuple[str, Answer, Answer]]:
    """(item, rating, rating) for every pair of raters on an item, the first rater the smaller name."""
    out = []
    for item, ratings in by_item.items():
        for x, y in combinations(sorted(ratings, key=lambda a: a.rater), 2):
            out.append((item, x, y))
    return out


def _kappas(labelled: list[tuple[str, str, Any, Any]]) -> tuple[dict[str, float | None], float | None]:
    """(rater1, rater2, label1, label2) -> Cohen's kappa per rater pair and Light's pooled kappa."""
    by_pair: dict[str, list[tuple[Any, Any]]] = defaultdict(list)
    for r1, r2, x, y in labelled:
        by_pair[f"{r1}|{r2}"].append((x, y))
    kappas = {pair: cohen_kappa(obs) for pair, obs in sorted(by_pair.items())}
    defined = [k for k in kappas.values() if k is not None]
    return kappas, mean_or_none(defined)


def _per_rater_mean(scored: list[tuple[str, str, float]]) -> dict[str, dict[str, Any]]:
    by_rater: dict[str, list[float]] = defaultdict(list)
    for r1, r2, value in scored:
        by_rater[r1].append(value)
        by_rater[r2].append(value)
    return {r: {"n_pairs": len(v), "agreement": mean_or_none(v)} for r, v in sorted(by_rater.items())}


def _preference_agreement(by_item: dict[str, list[Answer]], name: str) -> dict[str, Any]:
    pairs = _pairs(by_item)
    item_scores: dict[str, list[float]] = defaultdict(list)
    scored, labelled = [], []
    for item, x, y in pairs:
        mx, my = merged(x.answers[name]), merged(y.answers[name])
        value = tie_discounted(mx, my)
        item_scores[item].append(value)
        scored.append((x.rater, y.rater, value))
        labelled.append((x.rater, y.rater, mx, my))
    kappas, pooled_kappa = _kappas(labelled)
    per_rater = _per_rater_mean(scored)
    for rater, stats in per_rater.items():
        stats["tie_discounted_accuracy"] = stats.pop("agreement")
        mine = [k for pair, k in kappas.items() if rater in pair.split("|") and k is not None]
        stats["cohen_kappa"] = mean_or_none(mine)
    return {"agreement": {
        "n_items": len(item_scores), "n_pairs": len(pairs),
        "tie_discounted_accuracy": mean_or_none([sum(v) / len(v) for v in item_scores.values()]),
        "cohen_kappa": pooled_kappa, "cohen_kappa_per_pair": kappas, "per_rater": per_rater}}


def _acceptance(form: Form, answers: list[Answer], names: dict[str, str]) -> dict[str, Any]:
    """Acceptance rate of each system (Tülu Figure 3) and acceptance agreement (Appendix G)."""
    out: dict[str, Any] = {}
    for side, name in names.items():
        by_item = _by_item(answers, name)
        per_rater: dict[str, list[bool]] = defaultdict(list)
        for ratings in by_item.values():
            for a in ratings:
                per_rater[a.rater].append(bool(a.answers[name]))
        out[side] = {"n_items": len(by_item),
                     "rate": mean_or_none([sum(bool(a.answers[name]) for a in r) / len(r) for r in by_item.values()]),
                     "per_rater": {r: {"n": len(v), "rate": sum(v) / len(v)} for r, v in sorted(per_rater.items())}}
    item_scores: dict[str, list[float]] = defaultdict(list)
    scored, labelled = [], []
    for side, name in names.items():
        for item, x, y in _pairs(_by_item(answers, name)):
            value = float(x.answers[name] == y.answers[name])
            item_scores[item].append(value)
            scored.append((x.rater, y.rater, value))
            labelled.append((x.rater, y.rater, bool(x.answers[name]), bool(y.answers[name])))
    kappas, pooled_kappa = _kappas(labelled)
    per_rater = _per_rater_mean(scored)
    for rater, stats in per_rater.items():
        mine = [k for pair, k in kappas.items() if rater in pair.split("|") and k is not None]
        stats["cohen_kappa"] = mean_or_none(mine)
    out["agreement"] = {"n_items": len(item_scores), "n_judgements": len(scored),
                        "agreement": mean_or_none([sum(v) / len(v) for v in item_scores.values()]),
                        "cohen_kappa": pooled_kappa, "cohen_kappa_per_pair": kappas, "per_rater": per_rater}
    return out


def summarize_answers(form: Form, answers: list[Answer]) -> dict[str, Any]:
    """Results of a list of answers (pure: what `drover human results` prints)."""
    valid = _valid(answers)
    summary: dict[str, Any] = {
        "ratings": len(answers), "valid_ratings": len(valid),
        "flags": {flag: sum(flag in a.flags for a in answers) for flag in FLAGS},
        "comments": sum(bool(a.comment.strip()) for a in answers),
        "questions": {q.name: _preference(form, valid, q.name) for q in form.preference_questions},
    }
    if form.acceptable_questions:
        summary["acceptance"] = _acceptance(form, valid, {q.side: q.name for q in form.acceptable_questions})
    return summary


def headline_metrics(summary: dict[str, Any]) -> dict[str, float | None]:
    """Flat pooled numbers for the result record (`drover report`)."""
    metrics: dict[str, float | None] = {}
    for name, q in summary["questions"].items():
        for outcome in OUTCOMES.values():
            metrics[f"{name}.{outcome}"] = q["pooled"][outcome]
        metrics[f"{name}.tie_discounted_accuracy"] = q["agreement"]["tie_discounted_accuracy"]
        metrics[f"{name}.cohen_kappa"] = q["agreement"]["cohen_kappa"]
    if "acceptance" in summary:
        acc = summary["acceptance"]
        metrics["acceptance.a"] = acc["a"]["rate"]
        metrics["acceptance.b"] = acc["b"]["rate"]
        metrics["acceptance.agreement"] = acc["agreement"]["agreement"]
        metrics["acceptance.cohen_kappa"] = acc["agreement"]["cohen_kappa"]
    return metrics


def to_json(summary: dict[str, Any]) -> str:
    return json.dumps(strict(summary), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def to_csv(summary: dict[str, Any]) -> str:
    """Long-form rows: section, question, rater ("" = pooled), metric, value."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["section", "question", "rater", "metric", "value"])
    for name, q in summary["questions"].items():
        pooled = q["pooled"]
        for key in ("n_items", "n_ratings", "win", "tie", "loss"):
            writer.writerow(["preference", name, "", key, pooled[key]])
        for label, value in pooled["levels"].items():
            writer.writerow(["preference", name, "", f"level:{label}", value])
        for rater, stats in q["per_rater"].items():
            for key in ("n", "win", "tie", "loss", "win_rate", "tie_rate", "loss_rate"):
                writer.writerow(["preference", name, rater, key, stats[key]])
        agree = q["agreement"]
        for key in ("n_items", "n_pairs", "tie_discounted_accuracy", "cohen_kappa"):
            writer.writerow(["agreement", name, "", key, agree[key]])
        for rater, stats in agree["per_rater"].items():
            for key, value in stats.items():
                writer.writerow(["agreement", name, rater, key, value])
    if "acceptance" in summary:
        acc = summary["acceptance"]
        for side in ("a", "b"):
            writer.writerow(["acceptance", f"system_{side}", "", "rate", acc[side]["rate"]])
            for rater, stats in acc[side]["per_rater"].items():
                writer.writerow(["acceptance", f"system_{side}", rater, "rate", stats["rate"]])
        agree = acc["agreement"]
        for key in ("n_items", "n_judgements", "agreement", "cohen_kappa"):
            writer.writerow(["agreement", "acceptance", "", key, agree[key]])
        for rater, stats in agree["per_rater"].items():
            for key, value in stats.items():
                writer.writerow(["agreement", "acceptance", rater, key, value])
    return buf.getvalue()


def format_text(summary: dict[str, Any]) -> str:
    """A one-screen plain-text summary."""
    study = summary.get("study", {})
    a, b = study.get("system_a", "a"), study.get("system_b", "b")
    lines = [f"{summary['ratings']} ratings ({summary['valid_ratings']} unflagged) on {study.get('items', '?')} items; "
             f"flags: " + ", ".join(f"{k} {v}" for k, v in summary["flags"].items()), f"{a} (a) vs {b} (b):"]
    for name, q in summary["questions"].items():
        p, agree = q["pooled"], q["agreement"]
        lines.append(f"  {name}: win {_pct(p['win'])} / tie {_pct(p['tie'])} / loss {_pct(p['loss'])} "
                     f"(n = {p['n_items']} items, {p['n_ratings']} ratings); agreement on {agree['n_items']} items: "
                     f"tie-discounted {_num(agree['tie_discounted_accuracy'])}, kappa {_num(agree['cohen_kappa'])}")
    if "acceptance" in summary:
        acc = summary["acceptance"]
        lines.append(f"  acceptable: {a} {_pct(acc['a']['rate'])}, {b} {_pct(acc['b']['rate'])}; agreement "
                     f"{_num(acc['agreement']['agreement'])}, kappa {_num(acc['agreement']['cohen_kappa'])}")
    return "\n".join(lines)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"
