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

import itertools
import math
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from drover.errors import ConfigError
from drover.judges import listwise
from drover.judges.judge import Judge, JudgeContext, JudgeInputs, JudgeOutput, option
from drover.judges.verdicts import ParseFailure
from drover.completions import Constraint

if TYPE_CHECKING:
    from drover.judges.runner import JudgeCall, Judgment

DECODING = {"temperature": 0.0, "max_tokens": 1024}
MAX_CHOICES = 720  # up to 5 systems (+ the judge's reference) the verdict is one of the full rankings


def verdict(k: int) -> Constraint:
    """The constrained verdict for K responses: `rank: [...]` over indices 0..K (K = the judge's
    reference), every index once - as a choice of all (K+1)! rankings while that is small, else
    a regex of the list's shape (a repeated index is then a parse failure, counted).

    >>> verdict(1).choice
    ('rank: [0, 1]', 'rank: [1, 0]')
    """
    if math.factorial(k + 1) <= MAX_CHOICES:
        return Constraint(choice=tuple("rank: [" + ", ".join(map(str, p)) + "]"
                                       for p in itertools.permutations(range(k + 1))))
    index = "(" + "|".join(str(i) for i in range(k, -1, -1)) + ")"
    return Constraint(regex=rf"rank: \[{index}(, {index}){{{k}}}\]")


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
                constraint=verdict(k),
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
    from drover.metrics.winrate import standard_error

    errors = {f"{name}/avg_rank": standard_error(totals[s]) for s, name in enumerate(systems)}
    breakdown = {"per_system": {name: {"avg_rank": metrics[f"{name}/avg_rank"], "n_ranked": len(totals[s]),
                                       "n_first": firsts[s], "n_dropped": dropped[s]}
                                for s, name in enumerate(systems)}}
    return {"metrics": metrics, "breakdown": breakdown, "standard_errors": errors}


# --- The registry entry -------------------------------------------------------------


@dataclass
class RankSettings:
    model_outputs: list[str] = field(default_factory=list, metadata=option(
        "K >= 2 output files (alpaca_eval JSON or Conversation JSONL), same instructions",
        nargs="+", required=True))
    seed: int = field(default=0, metadata=option("seed of the per-prompt order of the systems"))
    limit: int | None = None


class RankJudge(Judge):
    name = "rank"
    task = "listwise_rank"
    title = "listwise ranking of K systems per prompt (Tuna's contextual judge), average rank"
    example = "drover judge rank --judge openai:gpt-4 --model-outputs sft.jsonl dpo.jsonl tuna.jsonl"
    primary_metric = "avg_rank"
    higher_is_better = False
    Settings = RankSettings
    shipped = ("prompts/judges/tuna_contextual.txt", "prompts/judges/tuna_contextual_response.txt",
               "prompts/judges/tuna_contextual_system.txt")

    def primary(self, settings: RankSettings, inputs: JudgeInputs) -> str:
        return f"{inputs.data[0][0]}/avg_rank"

    def load(self, settings: RankSettings) -> JudgeInputs:
        from drover.judges import alpaca_eval as ae
        from drover.results import model_slug

        if len(settings.model_outputs) < 2:
            raise ConfigError("rank needs at least two --model-outputs files")
        systems, outputs = [], []
        for path in settings.model_outputs:
            system, by_instruction = ae.load_outputs(path)
            systems.append(system)
            outputs.append(by_instruction)
        common = [i for i in outputs[0] if all(i in o for o in outputs[1:])]
        if not common:
            raise ConfigError("rank: the output files share no instruction")
        common = common[: settings.limit] if settings.limit else common
        keys = {instruction: str(n) for n, instruction in enumerate(common)}
        prompts = [(keys[i], i) for i in common]
        per_system = [{keys[i]: o[i] for i in common} for o in outputs]
        label = "+".join(model_slug(s) for s in systems)
        return JudgeInputs(label, "rank", {"systems": systems, "prompts": common,
                                           "outputs": [[o[i] for i in common] for o in outputs]},
                           (systems, prompts, per_system))

    def judge(self, ctx: JudgeContext | None, settings: RankSettings, inputs: JudgeInputs) -> JudgeOutput:
        assert ctx is not None
        systems, prompts, per_system = inputs.data
        judgments = ctx.run(build_calls(prompts, per_system, settings.seed), desc="rank")
        summary = summarize(judgments, systems)
        return JudgeOutput(summary["metrics"], summary["breakdown"], len(prompts), summary["standard_errors"],
                           {"systems": systems},
                           message=f"Listwise ranking of {len(systems)} systems on {len(prompts)} prompts, "
                                   f"judge {ctx.judge_label}")


JUDGE = RankJudge()
