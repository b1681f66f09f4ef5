"""LLMBar meta-evaluation: how often a judge picks the better output (Zeng et al. 2023).

Protocol: princeton-nlp/LLMBar `LLMEvaluator/` (the evaluators' prompts in
`evaluators/prompts/`, accuracy and positional agreement as its scoring); the prompt wording
is LLMBar's, the placeholders and layout drover's (`resources/prompts/judges/llmbar/README.md`).

Each pair of the shipped LLMBar sets (Natural; Adversarial Neighbor, GPTInst, GPTOut,
Manual) is judged in both orders. Accuracy is the mean over both orders (LLMBar's
`correct_average`); positional agreement is the fraction of pairs with the same winner
in both orders (LLMBar's `equal`). Strategies, their stages and prompt files are listed
in `resources/prompts/judges/llmbar/README.md`. A judge answer naming neither output is
a parse failure, counted, and scored as wrong (as LLMBar scores a `None` winner).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from drover.errors import ConfigError, did_you_mean
from drover.judges.files import data_path, read_json
from drover.judges.judge import Judge, JudgeContext, JudgeInputs, JudgeOutput, option
from drover.judges.runner import JudgeCall, Judgment
from drover.judges.verdicts import Choice, Outcome, ParseFailure, Text
from drover.completions import Constraint
from drover.prompts import load_prompt

SETS = {
    "Natural": ("LLMBar", "Natural"),
    "Neighbor": ("LLMBar", "Adversarial", "Neighbor"),
    "GPTInst": ("LLMBar", "Adversarial", "GPTInst"),
    "GPTOut": ("LLMBar", "Adversarial", "GPTOut"),
    "Manual": ("LLMBar", "Adversarial", "Manual"),
}
ADVERSARIAL = ("Neighbor", "GPTInst", "GPTOut", "Manual")


@dataclass(frozen=True)
class Strategy:
    name: str
    comparison: str  # prompt file of the final choice
    auxiliary: tuple[str, ...] = ()  # "metrics", "reference": generated first, per instruction
    swap: bool = False  # explain-then-choose, synthesis when the orders disagree


STRATEGIES = {
    "vanilla": Strategy("vanilla", "comparison_vanilla"),
    "rules": Strategy("rules", "comparison_rules"),
    "metrics": Strategy("metrics", "comparison_metrics", ("metrics",)),
    "reference": Strategy("reference", "comparison_reference", ("reference",)),
    "metrics-reference-rules": Strategy("metrics-reference-rules", "comparison_metrics_reference",
                                        ("metrics", "reference")),
    "swap": Strategy("swap", "comparison_cot", swap=True),
}
ALIASES = {"metrics+reference+rules": "metrics-reference-rules", "rules+metrics+reference": "metrics-reference-rules"}
# LLMBar's max_tokens per stage (GPT-4 configs), temperature 0 everywhere.
MAX_TOKENS = {"metrics": 150, "reference": 384, "comparison": 50, "cot": 300, "synthesize": 50}
AUX_PLACEHOLDER = {"metrics": "questions", "reference": "reference"}
# The constrained verdicts: the line `parse_choice` reads, or the sentence `parse_cot` reads.
CHOICE = Constraint(choice=("Output (a)", "Output (b)"))
COT = Constraint(regex=r"Output \((a|b)\) is better\.")


def get_strategy(name: str) -> Strategy:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in STRATEGIES:
        raise ConfigError(f"unknown LLMBar strategy {name!r}{did_you_mean(key, STRATEGIES)}; "
                          f"known: {', '.join(STRATEGIES)}")
    return STRATEGIES[key]


def prompt_messages(name: str, **values: str) -> list[dict[str, str]]:
    """Fill a `[system]`/`[user]` prompt file of resources/prompts/judges/llmbar/."""
    text = load_prompt(f"judges/llmbar/{name}.txt")
    system, _, user = text.partition("[user]\n")
    system = system.replace("[system]\n", "", 1).strip()
    filled = re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)] if m.group(1) in values else m.group(0), user)
    return [{"role": "system", "content": system}, {"role": "user", "content": filled.strip()}]


_CHOICE = {Outcome.FIRST: re.compile(r"(?:^|\n) ?Output \(a\)"), Outcome.SECOND: re.compile(r"(?:^|\n) ?Output \(b\)")}
_COT = re.compile(r"Output \((a|b)\) is better\.")


def parse_choice(text: str) -> Choice | ParseFailure:
    """LLMBar's parse: "Output (a)" or "Output (b)" at the start of a line.

    LLMBar tries (a) before (b); drover takes whichever line comes first.

    >>> parse_choice("Output (b)")
    Choice(outcome=<Outcome.SECOND: 'second'>)
    >>> parse_choice(" Output (a) is better because ...")
    Choice(outcome=<Outcome.FIRST: 'first'>)
    >>> parse_choice("Both outputs are good.").reason
    'neither "Output (a)" nor "Output (b)" at the start of a line'
    """
    stripped = text.strip()
    found = [(m.start(), o) for o, pattern in _CHOICE.items() if (m := pattern.search(stripped))]
    if not found:
        return ParseFailure(text, 'neither "Output (a)" nor "Output (b)" at the start of a line')
    return Choice(min(found)[1])


def parse_cot(text: str) -> Choice | ParseFailure:
    """The explain-then-choose verdict: the last "Output (x) is better."

    >>> parse_cot("Output (a) misses the point... Therefore, Output (b) is better.")
    Choice(outcome=<Outcome.SECOND: 'second'>)
    >>> parse_cot("Output (a) is concise but wrong.").reason
    'no "Output (a/b) is better." found'
    """
    found = _COT.findall(text)
    if not found:
        return ParseFailure(text, 'no "Output (a/b) is better." found')
    return Choice(Outcome.FIRST if found[-1] == "a" else Outcome.SECOND)


def reverse_output_names(explanation: str) -> str:
    """Swap "Output (a)" and "Output (b)" in an explanation (for the other order).

    >>> reverse_output_names("Output (a) is long; output (b) is short.")
    'Output (b) is long; output (a) is short.'
    """
    return re.sub(r"\b(Output|output) \((a|b)\)", lambda m: f"{m.group(1)} ({'b' if m.group(2) == 'a' else 'a'})",
                  explanation)


def load_set(name: str, limit: int | None = None) -> list[dict[str, Any]]:
    if name not in SETS:
        raise ConfigError(f"unknown LLMBar set {name!r}{did_you_mean(name, SETS)}; known: {', '.join(SETS)}")
    rows = read_json(data_path("llmbar", *SETS[name], "dataset.json"))
    return rows[:limit] if limit else rows


def _text(completion: Any) -> Text:
    return Text(completion.text.strip())


def _comparison_calls(strategy: Strategy, items: list[tuple[str, dict[str, Any]]],
                      aux: dict[str, dict[str, str]]) -> list[JudgeCall]:
    calls = []
    name = strategy.comparison
    cot = strategy.swap
    for key, row in items:
        for order in ("ab", "ba"):
            o1, o2 = (row["output_1"], row["output_2"]) if order == "ab" else (row["output_2"], row["output_1"])
            values = {"instruction": row["input"], "output_1": o1, "output_2": o2,
                      **{AUX_PLACEHOLDER[a]: aux[key][a] for a in strategy.auxiliary}}
            calls.append(JudgeCall(
                id=f"{key}/{order}", messages=prompt_messages(name, **values), prompt_id=f"llmbar/{name}",
                parse=(lambda c: parse_cot(c.text)) if cot else (lambda c: parse_choice(c.text)),
                constraint=COT if cot else CHOICE,
                decoding={"temperature": 0.0, "max_tokens": MAX_TOKENS["cot" if cot else "comparison"]},
                meta={"key": key, "order": order, "label": int(row["label"])}))
    return calls


def _winner(j: Judgment) -> int | None:
    """The winner in the dataset's numbering (1 or 2), or None."""
    if not isinstance(j.verdict, Choice) or j.verdict.outcome == Outcome.TIE:
        return None
    first = j.verdict.outcome == Outcome.FIRST
    return (1 if first else 2) if j.meta["order"] == "ab" else (2 if first else 1)


def judge_sets(ctx: JudgeContext, strategy: Strategy, sets: list[str], limit: int | None = None) -> list[Judgment]:
    """Run every stage of the strategy on the chosen sets; returns the final-choice judgments.

    The context's `max_tokens` option caps every stage's generation length (cost control, tests).
    """
    items = [(f"{s}/{i}", row) for s in sets for i, row in enumerate(load_set(s, limit))]
    aux: dict[str, dict[str, str]] = {key: {} for key, _ in items}
    for kind in strategy.auxiliary:
        calls = [JudgeCall(id=f"{key}/{kind}", messages=prompt_messages(f"aux_{kind}", instruction=row["input"]),
                           prompt_id=f"llmbar/aux_{kind}", parse=_text,
                           decoding={"temperature": 0.0, "max_tokens": MAX_TOKENS[kind]}, meta={"key": key})
                 for key, row in items]
        for j in ctx.run(calls, desc=f"llmbar {kind}"):
            aux[j.meta["key"]][kind] = j.raw.strip()  # an empty/failed auxiliary output stays empty
    final = ctx.run(_comparison_calls(strategy, items, aux), desc=f"llmbar {strategy.name}")
    if not strategy.swap:
        return final
    return _synthesize(ctx, items, final)


def _synthesize(ctx: JudgeContext, items: list[tuple[str, dict[str, Any]]], cot: list[Judgment]) -> list[Judgment]:
    """Swap: where the two orders disagree (one says 1, the other 2), review both explanations."""
    by_key: dict[str, dict[str, Judgment]] = {}
    for j in cot:
        by_key.setdefault(j.meta["key"], {})[j.meta["order"]] = j
    rows = dict(items)
    calls = []
    for key, got in by_key.items():
        w = {o: _winner(j) for o, j in got.items()}
        if {w.get("ab"), w.get("ba")} != {1, 2}:
            continue
        # explanation arguing for dataset output 1 / 2, written with the names of its own order
        order_for = {w["ab"]: "ab", w["ba"]: "ba"}
        row = rows[key]
        for order in ("ab", "ba"):
            e1 = got[order_for[1]].raw if order_for[1] == order else reverse_output_names(got[order_for[1]].raw)
            e2 = got[order_for[2]].raw if order_for[2] == order else reverse_output_names(got[order_for[2]].raw)
            o1, o2 = (row["output_1"], row["output_2"]) if order == "ab" else (row["output_2"], row["output_1"])
            ex1, ex2 = (e1, e2) if order == "ab" else (e2, e1)
            calls.append(JudgeCall(
                id=f"{key}/synth/{order}", prompt_id="llmbar/swap_synthesize",
                messages=prompt_messages("swap_synthesize", instruction=row["input"], output_1=o1, output_2=o2,
                                         explanation_1=ex1, explanation_2=ex2),
                parse=lambda c: parse_choice(c.text), constraint=CHOICE,
                decoding={"temperature": 0.0, "max_tokens": MAX_TOKENS["synthesize"]},
                meta={"key": key, "order": order, "label": int(row["label"]), "synthesized": True}))
    synth = {(j.meta["key"], j.meta["order"]): j
             for j in ctx.run(calls, desc="llmbar swap-synthesize")}
    return [synth.get((j.meta["key"], j.meta["order"]), j) for j in cot]


def summarize(judgments: list[Judgment], sets: list[str]) -> dict[str, Any]:
    """Per set: accuracy (mean over both orders), positional agreement, parse failures."""
    per_set: dict[str, dict[str, float]] = {}
    for s in sets:
        pairs: dict[str, dict[str, Judgment]] = {}
        for j in judgments:
            if j.meta["key"].split("/")[0] == s:
                pairs.setdefault(j.meta["key"], {})[j.meta["order"]] = j
        n = len(pairs)
        correct = agree = failed = 0
        for got in pairs.values():
            winners = {o: _winner(j) for o, j in got.items()}
            label = next(iter(got.values())).meta["label"]
            correct += sum(w == label for w in winners.values())
            agree += winners.get("ab") is not None and winners.get("ab") == winners.get("ba")
            failed += sum(j.failed for j in got.values())
        per_set[s] = {"accuracy": 100.0 * correct / (2 * n) if n else float("nan"),
                      "agreement": 100.0 * agree / n if n else float("nan"), "n": n, "n_failed": failed,
                      "points": [100.0 * sum(w == next(iter(got.values())).meta["label"] for w in
                                             (_winner(j) for j in got.values())) / len(got) for got in pairs.values()]}
    metrics: dict[str, float] = {}
    for s, m in per_set.items():
        metrics[f"{s}/accuracy"] = m["accuracy"]
        metrics[f"{s}/agreement"] = m["agreement"]
    adv = [per_set[s] for s in ADVERSARIAL if s in per_set]
    if adv:
        metrics["Adversarial/accuracy"] = sum(m["accuracy"] for m in adv) / len(adv)
        metrics["Adversarial/agreement"] = sum(m["agreement"] for m in adv) / len(adv)
    total = sum(m["n"] for m in per_set.values())
    metrics["accuracy"] = sum(m["accuracy"] * m["n"] for m in per_set.values()) / total if total else float("nan")
    metrics["n_failed"] = float(sum(m["n_failed"] for m in per_set.values()))
    from drover.metrics.winrate import standard_error

    errors = {"accuracy": standard_error([p for m in per_set.values() for p in m["points"]])}
    for m in per_set.values():
        del m["points"]
    return {"metrics": metrics, "breakdown": {"per_set": per_set}, "standard_errors": errors}


# --- The registry entry -------------------------------------------------------------


@dataclass
class MetaSettings:
    strategy: str = field(default="vanilla", metadata=option(
        "LLMBar strategy: " + ", ".join(STRATEGIES)))
    sets: list[str] = field(default_factory=lambda: list(SETS), metadata=option(
        "LLMBar sets: " + ", ".join(SETS), nargs="+"))
    limit: int | None = None


class MetaJudge(Judge):
    name = "meta"
    task = "llmbar"
    title = "LLMBar meta-evaluation of the judge itself: accuracy on pairs with a known better output"
    example = "drover judge meta --judge openai:gpt-4 --strategy metrics-reference-rules --sets Natural Neighbor"
    primary_metric = "accuracy"
    Settings = MetaSettings
    shipped = ("data/llmbar", "prompts/judges/llmbar")

    def load(self, settings: MetaSettings) -> JudgeInputs:
        strategy = get_strategy(settings.strategy)
        rows = {s: load_set(s, settings.limit) for s in settings.sets}  # validates the names before any request
        return JudgeInputs(None, f"llmbar-{strategy.name}", {"sets": rows}, strategy)

    def judge(self, ctx: JudgeContext | None, settings: MetaSettings, inputs: JudgeInputs) -> JudgeOutput:
        assert ctx is not None
        judgments = judge_sets(ctx, inputs.data, settings.sets, settings.limit)
        summary = summarize(judgments, settings.sets)
        return JudgeOutput(summary["metrics"], summary["breakdown"], len(judgments) // 2, summary["standard_errors"],
                           {"strategy": inputs.data.name},
                           message=f"LLMBar meta-evaluation: judge {ctx.judge_label}, strategy {inputs.data.name}")


JUDGE = MetaJudge()
