"""Listwise ranking as an evaluation: rank K systems' responses per prompt (Tuna's judge).

Protocol: Tuna's contextual-ranking judge (`drover.judges.listwise`, after microsoft/LMOps
`tuna/src/gpt-eval.py`) used as an evaluation; there is no reference implementation of this
evaluation mode: judging both orders and averaging ranks is drover's.

The prompt and parser are helper E's `drover.judges.listwise` (Tuna's contextual
ranking, `rank: [...]` best first). Position matters, so each prompt is judged twice:
in a seeded random order of the systems and in the reverse of that order. A system's
rank on a prompt is its 1-based position among the ranked responses (the judge's own
reference is left out), averaged over the two orders that parsed; a response the judge
dropped as a duplicate has no rank there and is counted in `n_dropped`.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from drover.judges import listwise
from drover.judges.verdicts import ParseFailure

if TYPE_CHECKING:
    from drover.judges.runner import JudgeCall, Judgment

DECODING = {"temperature": 0.0, "max_tokens": 1024}


def permutation(key: str, k: int, seed: int = 0) -> list[int]:
    """A seeded per-prompt order of the K systems (shown position -> system index)."""
    order = list(range(k))
    random.Random(f"listwise/{key}/{seed}").shuffle(order)
    return order


def build_calls(prompts: list[tuple[str, str]], outputs: list[dict[str, str]], seed: int = 0) -> list["JudgeCall"]:
    """`prompts`: (key, instruction); `outputs[s][key]`: system s's response to that prompt."""
    from drover.judges.runner import JudgeCall

    k = len(outputs)
    calls = []
    for key, instruction in prompts:
        perm = permutation(key, k, seed)
        for name, order in (("fwd", perm), ("rev", perm[::-1])):
            responses = [outputs[s][key] for s in order]
            calls.append(JudgeCall(
                id=f"{key}/{name}", messages=listwise.build_prompt(instruction, responses),
                prompt_id="judges/tuna_contextual", parse=lambda c, n=k: listwise.parse(c.text, n),
                decoding=dict(DECODING), meta={"key": key, "order": name, "shown": order}))
    return calls


def summarize(judgments: list["Judgment"], systems: list[str]) -> dict[str, Any]:
    """Average rank per system (1 = best), rank-1 counts, dropped responses and failures."""
    ranks: dict[str, dict[int, list[float]]] = {}
    dropped = [0] * len(systems)
    firsts = [0] * len(systems)
    failed = 0
    for j in judgments:
        if j.verdict is None or isinstance(j.verdict, ParseFailure) or not isinstance(j.verdict, listwise.Ranking):
            failed += 1
            continue
        shown = j.meta["shown"]
        ranked = j.verdict.ranked_responses
        per_prompt = ranks.setdefault(j.meta["key"], {})
        for position, shown_index in enumerate(ranked, start=1):
            system = shown[shown_index]
            per_prompt.setdefault(system, []).append(float(position))
            firsts[system] += position == 1
        for shown_index in j.verdict.dropped:
            dropped[shown[shown_index]] += 1
    totals = [[] for _ in systems]  # type: list[list[float]]
    for per_prompt in ranks.values():
        for system, values in per_prompt.items():
            totals[system].append(sum(values) / len(values))
    metrics: dict[str, float] = {}
    for s, name in enumerate(systems):
        metrics[f"{name}/avg_rank"] = sum(totals[s]) / len(totals[s]) if totals[s] else float("nan")
    metrics["n_failed"] = float(failed)
    breakdown = {"per_system": {name: {"avg_rank": metrics[f"{name}/avg_rank"], "n_ranked": len(totals[s]),
                                       "n_first": firsts[s], "n_dropped": dropped[s]}
                                for s, name in enumerate(systems)}}
    return {"metrics": metrics, "breakdown": breakdown}
