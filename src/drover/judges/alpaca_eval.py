"""AlpacaEval: 805 instructions judged against a reference model's outputs (Tülu §4.2).

Protocol: tatsu-lab/alpaca_eval at the shipped configs' commit cd543a1:
`annotators/pairwise_evaluator.py` (PairwiseAnnotator), `processors.py`
(RandomSwitchTwoColumnsProcessor), `completion_parsers.py` (ranking_parser, logprob_parser),
`metrics/helpers.py` (win rate, SE, discrete win rate) and `metrics/glm_winrate.py` (the
AlpacaEval-2 length-controlled win rate: `lc_win_rate` when df_gamed.csv is given, else the
labelled `lc_win_rate_estimate`; none for AlpacaEval 1). All 805 instructions are judged.
Deliberate difference: function-calling annotators are not supported.

An annotator is the shipped alpaca_eval config (`evaluators_configs/<name>/configs.yaml`:
prompt template, decoding, parser), read as data:

- v1 `alpaca_eval_gpt4` (baseline text_davinci_003): the judge writes a ranking
  `[{'model': 'model_1', 'rank': 1}, ...]`; the preference is model_1's rank.
- v2 `weighted_alpaca_eval_gpt4_turbo` (baseline gpt4_1106_preview): one token, "m"
  (first output) or "M" (second); preference = 2 - P("m") with P normalised over
  {"m", "M"} among the top log-probs of that token.

Preferences are kept in alpaca_eval's frame: output_1 = the baseline, output_2 = the
model, so 2 means the model won. The order shown to the judge is decided by alpaca_eval's
own seeded per-instruction coin, `random.Random("is_switched_outputs" + instruction +
str(seed))`, which reproduces the official annotations' order exactly for seed 0.
Identical outputs are a tie without asking the judge.
"""

from __future__ import annotations

import ast
import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from drover.errors import ConfigError, InputError, did_you_mean
from drover.identity import file_fingerprint
from drover.inputs import iter_json_objects
from drover.judges.files import data_path, read_json
from drover.judges.judge import Judge, JudgeContext, JudgeInputs, JudgeOutput, option
from drover.judges.verdicts import ParseFailure, Preference
from drover.completions import Completion, Constraint
from drover.records import parse_messages

if TYPE_CHECKING:
    from drover.judges.runner import JudgeCall, Judgment

CONFIGS_DIR = data_path("alpaca_eval", "evaluators_configs")
SWITCH_COLUMN = "is_switched_outputs"

# version -> (annotator, baseline generator)
VERSIONS = {
    "v1": ("alpaca_eval_gpt4", "text_davinci_003"),
    "v2": ("weighted_alpaca_eval_gpt4_turbo", "gpt4_1106_preview"),
}
PARSERS = ("ranking_parser", "logprob_parser")
# v1's constrained verdict: the two rankings `ranking_parser` reads (model_1 first, or model_2 first).
RANKINGS = ("[{'model': 'model_1', 'rank': 1}, {'model': 'model_2', 'rank': 2}]",
            "[{'model': 'model_2', 'rank': 1}, {'model': 'model_1', 'rank': 2}]")


@dataclass
class Annotator:
    """One shipped alpaca_eval judge configuration."""

    name: str
    template: str
    parser: str
    parser_kwargs: dict[str, Any] = field(default_factory=dict)
    decoding: dict[str, Any] = field(default_factory=dict)
    model_name: str = ""

    @property
    def prompt_id(self) -> str:
        return f"alpaca_eval/{self.name}"

    def messages(self, instruction: str, output_1: str, output_2: str) -> list[dict[str, str]]:
        values = {"instruction": instruction, "output_1": output_1, "output_2": output_2}
        text = re.sub(r"\{(instruction|output_1|output_2)\}", lambda m: values[m.group(1)], self.template)
        return chatml_to_messages(text)

    def parse(self, completion: Completion) -> Preference | ParseFailure:
        if self.parser == "ranking_parser":
            return parse_ranking(completion.text)
        return parse_logprobs(completion, **self.parser_kwargs)

    @property
    def constraint(self) -> Constraint:
        """The verdict's shape: one of the two rankings (v1), or one of the preference tokens
        (v2: the log-prob route reads P over the same tokens, a ratio masking does not change)."""
        if self.parser == "ranking_parser":
            return Constraint(choice=RANKINGS)
        tokens = self.parser_kwargs.get("denominator_tokens", ("m", "M"))
        return Constraint(choice=tuple(dict.fromkeys(map(str, tokens))))


def chatml_to_messages(text: str) -> list[dict[str, str]]:
    """`<|im_start|>role\\ncontent\\n<|im_end|>` blocks -> chat messages (alpaca_eval's markup).

    >>> chatml_to_messages("<|im_start|>system\\nBe fair.\\n<|im_end|>\\n<|im_start|>user\\nHi\\n<|im_end|>")
    [{'role': 'system', 'content': 'Be fair.'}, {'role': 'user', 'content': 'Hi'}]
    """
    out = []
    for block in text.split("<|im_start|>")[1:]:
        role, _, rest = block.partition("\n")
        out.append({"role": role.strip(), "content": rest.split("<|im_end|>", 1)[0].strip()})
    return out


def list_annotators() -> list[str]:
    return sorted(p.name for p in CONFIGS_DIR.iterdir() if (p / "configs.yaml").exists())


def load_annotator(name: str) -> Annotator:
    """Read a shipped annotator config; only the text-completion parsers are supported."""
    path = CONFIGS_DIR / name / "configs.yaml"
    if not path.exists():
        raise ConfigError(f"unknown AlpacaEval annotator {name!r}{did_you_mean(name, list_annotators())}")
    cfg = yaml.safe_load(path.read_text(encoding="utf-8"))[name]
    parser = cfg["fn_completion_parser"]
    if parser not in PARSERS:
        raise ConfigError(f"AlpacaEval annotator {name!r} uses {parser!r} (function calling), which drover does "
                          f"not support; use one with {' or '.join(PARSERS)}")
    kwargs = dict(cfg.get("completions_kwargs", {}))
    decoding = {"temperature": float(kwargs.get("temperature", 0)), "max_tokens": int(kwargs.get("max_tokens", 100))}
    if kwargs.get("logprobs"):
        decoding["logprobs"] = True
        decoding["top_logprobs"] = int(kwargs.get("top_logprobs", 5))
    template = CONFIGS_DIR.joinpath(cfg["prompt_template"]).read_text(encoding="utf-8")
    return Annotator(name, template, parser, dict(cfg.get("completion_parser_kwargs", {})), decoding,
                     str(kwargs.get("model_name", "")))


def is_switched(instruction: str, seed: int = 0) -> bool:
    """alpaca_eval's position coin for one instruction (RandomSwitchTwoColumnsProcessor)."""
    return random.Random(SWITCH_COLUMN + instruction + str(seed)).choices([False, True], k=1)[0]


def parse_ranking(text: str) -> Preference | ParseFailure:
    """alpaca_eval's `ranking_parser`: model_1's rank (1 or 2) is the preference.

    A ```python fence or words around the list are tolerated (the first [...] is read).

    >>> parse_ranking("[{'model': 'model_1', 'rank': 2}, {'model': 'model_2', 'rank': 1}]")
    Preference(value=2.0)
    >>> parse_ranking("```python\\n[{'model': 'model_2', 'rank': 2}, {'model': 'model_1', 'rank': 1}]\\n```")
    Preference(value=1.0)
    >>> parse_ranking("[{'model': 'model_1', 'rank': 3}, {'model': 'model_2', 'rank': 1}]").reason
    'model_1 has rank 3, expected 1 or 2'
    >>> parse_ranking("[{'model': 'model_1', 'rank': 1}, {'model': 'model_2',").reason
    'no Python list of {model, rank} found'
    """
    candidates = [text.strip()]
    match = re.search(r"\[.*\]", text, flags=re.S)
    if match:
        candidates.append(match.group(0))
    for candidate in candidates:
        try:
            ranking = ast.literal_eval(candidate)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            continue
        if isinstance(ranking, dict):
            ranking = [ranking]
        if not isinstance(ranking, (list, tuple)):
            continue
        ranks = [r.get("rank") for r in ranking if isinstance(r, dict) and r.get("model") == "model_1"]
        if not ranks:
            return ParseFailure(text, "model_1 is not in the ranking")
        if ranks[0] not in (1, 2):
            return ParseFailure(text, f"model_1 has rank {ranks[0]}, expected 1 or 2")
        return Preference(float(ranks[0]))
    return ParseFailure(text, "no Python list of {model, rank} found")


def preference_from_top_logprobs(top: dict[str, float], numerator_token: str = "m",
                                 denominator_tokens: tuple[str, ...] | list[str] = ("m", "M"),
                                 is_binarize: bool = False) -> float | None:
    """alpaca_eval's `logprob_parser` on one position's top log-probs; None if no token is there.

    >>> round(preference_from_top_logprobs({"M": -6.7e-07, "The": -15.45, "m": -15.515626}), 10)
    1.9999998173
    >>> preference_from_top_logprobs({"The": -0.1}) is None
    True
    """
    wanted = set(denominator_tokens) | {numerator_token}
    present = {t: lp for t, lp in top.items() if t in wanted}
    if not present:
        return None
    missing = float("-inf")
    numerator = present.get(numerator_token, missing)
    if is_binarize:
        others = [present.get(t, missing) for t in denominator_tokens if t != numerator_token]
        return 1.0 if all(numerator > o for o in others) else 2.0
    logs = [present.get(t, missing) for t in denominator_tokens]
    peak = max(logs)
    denominator = peak + math.log(sum(math.exp(v - peak) for v in logs if v != missing))
    return 2.0 - math.exp(numerator - denominator)


def parse_logprobs(completion: Completion, numerator_token: str = "m",
                   denominator_tokens: tuple[str, ...] | list[str] = ("m", "M"),
                   is_binarize: bool = False) -> Preference | ParseFailure:
    """The v2 judge: read the first generated token's top log-probs."""
    choice = completion.choices[0] if completion.choices else None
    if choice is None or not choice.logprobs:
        return ParseFailure(completion.text, "no log-probs returned (the judge endpoint must support top_logprobs)")
    first = choice.logprobs[0]
    top = dict(first.top or {})
    top.setdefault(first.token, first.logprob)
    value = preference_from_top_logprobs(top, numerator_token, tuple(denominator_tokens), is_binarize)
    if value is None:
        shown = ", ".join(repr(t) for t in list(top)[:5])
        return ParseFailure(completion.text, f"none of {sorted(set(denominator_tokens))} among the top "
                                             f"log-probs ({shown})")
    return Preference(min(2.0, max(1.0, value)))


# --- Data ---------------------------------------------------------------------------


@dataclass
class Pair:
    """One instruction with the baseline's output (output_1) and the model's (output_2)."""

    index: int  # position in the 805-instruction reference set (alpaca_eval's `index`)
    instruction: str
    dataset: str
    output_1: str
    output_2: str


def load_outputs(path: str | Path) -> tuple[str, dict[str, str]]:
    """(generator name, {instruction: output}) from alpaca_eval model_outputs.json or Conversation JSONL."""
    path = Path(path)
    name = path.parent.name if path.name == "model_outputs.json" else path.stem
    if path.suffix == ".json":
        rows = read_json(path)
        if not isinstance(rows, list) or not rows:
            raise InputError(path, None, None, "expected a non-empty JSON list of {instruction, output, generator}")
        out = {}
        for i, row in enumerate(rows):
            if not isinstance(row, dict) or not isinstance(row.get("instruction"), str) \
                    or not isinstance(row.get("output"), str):
                raise InputError(path, None, f"[{i}]", "expected {instruction: str, output: str}")
            out[row["instruction"]] = row["output"]
            name = str(row.get("generator") or name)
        return name, out
    out = {}
    for number, obj in iter_json_objects(path):
        messages = parse_messages(obj.get("messages"), "messages", path, number)
        users = [m.content for m in messages if m.role == "user"]
        answers = [m.content for m in messages if m.role == "assistant"]
        if not users or not answers:
            raise InputError(path, number, "messages", "needs a user turn (instruction) and an assistant turn (output)")
        out[users[-1]] = answers[-1]
        meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
        name = str(meta.get("generator") or obj.get("source") or name)
    return name, out


def reference_path(baseline: str) -> Path:
    return data_path("alpaca_eval", "results", baseline, "model_outputs.json")


def make_pairs(model_outputs: dict[str, str], baseline: str, limit: int | None = None) -> list[Pair]:
    """Join model outputs to the shipped reference outputs on the instruction."""
    path = reference_path(baseline)
    if not path.exists():
        raise ConfigError(f"no shipped reference outputs for {baseline!r}")
    reference = read_json(path)
    pairs = [Pair(i, r["instruction"], r.get("dataset", ""), r["output"], model_outputs[r["instruction"]])
             for i, r in enumerate(reference) if r["instruction"] in model_outputs]
    unknown = len(model_outputs) - len(pairs)
    if not pairs:
        raise InputError("--model-outputs", None, None, "none of the instructions are AlpacaEval instructions")
    if unknown > 0:
        raise InputError("--model-outputs", None, None,
                         f"{unknown} instructions are not in the AlpacaEval set (outputs must answer its instructions)")
    return pairs[:limit] if limit else pairs


# --- Judging ------------------------------------------------------------------------


def build_calls(pairs: list[Pair], annotator: Annotator, seed: int = 0) -> list["JudgeCall"]:
    """One call per pair with different outputs, in the order alpaca_eval's coin picks."""
    from drover.judges.runner import JudgeCall

    calls = []
    for pair in pairs:
        if pair.output_1 == pair.output_2:
            continue  # a tie by construction, never sent
        switched = is_switched(pair.instruction, seed)
        shown = (pair.output_2, pair.output_1) if switched else (pair.output_1, pair.output_2)
        calls.append(JudgeCall(
            id=str(pair.index), messages=annotator.messages(pair.instruction, *shown),
            prompt_id=annotator.prompt_id, parse=annotator.parse, decoding=dict(annotator.decoding),
            constraint=annotator.constraint,
            meta={"index": pair.index, "dataset": pair.dataset, "switched": switched}))
    return calls


def preferences(pairs: list[Pair], judgments: list["Judgment"]) -> list[float | None]:
    """Preferences in alpaca_eval's frame (2 = the model won), aligned with `pairs`.

    Identical outputs are 1.5; a failed judgment is None (dropped from the win rate, counted).
    """
    by_index = {j.meta["index"]: j for j in judgments}
    out: list[float | None] = []
    for pair in pairs:
        if pair.output_1 == pair.output_2:
            out.append(1.5)
            continue
        j = by_index.get(pair.index)
        if j is None or not isinstance(j.verdict, Preference):
            out.append(None)
            continue
        out.append(j.verdict.swapped().value if j.meta["switched"] else j.verdict.value)
    return out


def summarize(pairs: list[Pair], prefs: list[float | None], difficulty: dict[int, float] | None = None,
              version: str = "v2", gamed: Any = None) -> dict[str, Any]:
    """Win rate, standard error, discrete win rate, counts, average length, per subset, and
    for v2 only the length-controlled win rate: `lc_win_rate` when computed the official
    way (alpaca_eval's df_gamed.csv given as `gamed`, a `metrics.winrate.GamedAnnotations`),
    else `lc_win_rate_estimate` (drover's fit on these annotations alone; `difficulty`, an
    instruction_difficulty.csv, adds the difficulty term). AlpacaEval 1 has no LC metric.
    """
    from drover.metrics.winrate import (avg_length, length_controlled_win_rate, official_length_controlled_win_rate,
                                        win_rate)

    metrics: dict[str, Any] = dict(win_rate(prefs))
    metrics["avg_length"] = avg_length([p.output_2 for p in pairs])
    subsets: dict[str, list[float | None]] = {}
    for pair, pref in zip(pairs, prefs):
        subsets.setdefault(pair.dataset, []).append(pref)
    breakdown: dict[str, Any] = {"per_dataset": {name: win_rate(values) for name, values in sorted(subsets.items())}}
    if version != "v2":
        return {"metrics": metrics, "breakdown": breakdown}
    model_lengths, baseline_lengths = [len(p.output_2) for p in pairs], [len(p.output_1) for p in pairs]
    if gamed is not None:
        lc = official_length_controlled_win_rate(prefs, model_lengths, baseline_lengths, [p.index for p in pairs],
                                                 gamed)
        metrics["lc_win_rate"] = lc.win_rate
        breakdown["length_controlled"] = {**lc.to_dict(), "method": "official (alpaca_eval length_controlled_v1 "
                                                                    "with df_gamed.csv)"}
        return {"metrics": metrics, "breakdown": breakdown}
    diff = None
    if difficulty is not None:
        missing = [p.index for p in pairs if p.index not in difficulty]
        if missing:
            raise InputError("--instruction-difficulty", None, None,
                             f"no difficulty for {len(missing)} instructions (e.g. index {missing[0]})")
        diff = [difficulty[p.index] for p in pairs]
    lc = length_controlled_win_rate(prefs, model_lengths, baseline_lengths, diff)
    metrics["lc_win_rate_estimate"] = lc.win_rate
    breakdown["length_controlled"] = {**lc.to_dict(), "method": "estimate (no df_gamed.csv: fitted on these "
                                                                "annotations only; not the leaderboard number)"}
    return {"metrics": metrics, "breakdown": breakdown}


def annotations(pairs: list[Pair], prefs: list[float | None], baseline: str, model: str,
                annotator: str) -> list[dict[str, Any]]:
    """The judged pairs in alpaca_eval's annotations.json layout (read by `drover judge bias`)."""
    return [{"instruction": p.instruction, "dataset": p.dataset, "output_1": p.output_1, "generator_1": baseline,
             "output_2": p.output_2, "generator_2": model, "annotator": annotator, "preference": pref}
            for p, pref in zip(pairs, prefs)]


# --- The registry entry -------------------------------------------------------------


@dataclass
class AlpacaEvalSettings:
    model_outputs: str = field(default="", metadata=option(
        "alpaca_eval model_outputs.json or Conversation JSONL", required=True))
    version: str = field(default="v2", metadata=option("v1 (GPT-4 ranking) or v2 (weighted log-prob)",
                                                       choices=tuple(VERSIONS)))
    annotator: str | None = field(default=None, metadata=option(
        "a shipped alpaca_eval annotator config (default: the version's)"))
    baseline: str | None = field(default=None, metadata=option(
        "reference generator (default: text_davinci_003 for v1, gpt4_1106_preview for v2)"))
    seed: int = field(default=0, metadata=option("seed of the per-instruction position coin (alpaca_eval: 0)"))
    instruction_difficulty: str | None = field(default=None, metadata=option(
        "alpaca_eval instruction_difficulty.csv, for the length-controlled GLM"))
    gamed_baselines: str | None = field(default=None, metadata=option(
        "alpaca_eval df_gamed.csv: with it (v2), the LC win rate is computed the official way (lc_win_rate), "
        "else it is an estimate (lc_win_rate_estimate)"))
    limit: int | None = None


class AlpacaEvalJudge(Judge):
    name = "alpaca-eval"
    task = "alpaca_eval"
    title = "AlpacaEval win rate (± standard error) against a reference model's outputs"
    example = ("drover judge alpaca-eval --judge openai:gpt-4-turbo --model-outputs outputs.json --version v2 "
               "judge_options.price_input_per_1k=0.01 judge_options.price_output_per_1k=0.03")
    primary_metric = "win_rate"
    Settings = AlpacaEvalSettings
    shipped = ("data/alpaca_eval",)

    def task_for(self, settings: AlpacaEvalSettings) -> str:
        return f"alpaca_eval_{settings.version}"

    def load(self, settings: AlpacaEvalSettings) -> JudgeInputs:
        from drover.metrics.winrate import read_gamed

        if settings.gamed_baselines and settings.version != "v2":
            raise ConfigError("--gamed-baselines: the length-controlled win rate is defined for AlpacaEval 2 only "
                              "(--version v2)")
        gamed = read_gamed(settings.gamed_baselines) if settings.gamed_baselines else None
        default_annotator, default_baseline = VERSIONS[settings.version]
        annotator = load_annotator(settings.annotator or default_annotator)
        baseline = settings.baseline or default_baseline
        model, outputs = load_outputs(settings.model_outputs)
        pairs = make_pairs(outputs, baseline, settings.limit)
        difficulty = None
        if settings.instruction_difficulty:
            from drover.metrics.winrate import read_difficulty

            difficulty = read_difficulty(settings.instruction_difficulty)
        content = {"baseline": baseline, "annotator": annotator.name,
                   "pairs": [[p.index, p.instruction, p.output_1, p.output_2] for p in pairs],
                   "difficulty": None if difficulty is None else sorted(difficulty.items()),
                   "gamed": None if gamed is None else file_fingerprint(settings.gamed_baselines)}
        return JudgeInputs(model, f"alpaca-eval-{settings.version}", content,
                           (annotator, baseline, pairs, difficulty, gamed))

    def judge(self, ctx: JudgeContext | None, settings: AlpacaEvalSettings, inputs: JudgeInputs) -> JudgeOutput:
        assert ctx is not None
        annotator, baseline, pairs, difficulty, gamed = inputs.data
        judgments = ctx.run(build_calls(pairs, annotator, settings.seed), desc="alpaca-eval")
        prefs = preferences(pairs, judgments)
        summary = summarize(pairs, prefs, difficulty, version=settings.version, gamed=gamed)
        m = summary["metrics"]
        lc = ((f"; LC win rate {m['lc_win_rate']:.2f}" if "lc_win_rate" in m else "")
              + (f"; LC win rate (estimate) {m['lc_win_rate_estimate']:.2f}" if "lc_win_rate_estimate" in m else ""))
        return JudgeOutput(m, summary["breakdown"], len(pairs), {"win_rate": m["standard_error"]},
                           {"reference": baseline, "annotator": annotator.name,
                            "lc_uses_instruction_difficulty": difficulty is not None,
                            "lc_method": None if settings.version != "v2" else "official" if gamed is not None
                            else "estimate"},
                           {"annotations": annotations(pairs, prefs, baseline, inputs.label, annotator.name)},
                           f"AlpacaEval {settings.version}: {inputs.label} vs {baseline}, judge {ctx.judge_label} "
                           f"({annotator.name}): win rate {m['win_rate']:.2f} ± {m['standard_error']:.2f}{lc}")


JUDGE = AlpacaEvalJudge()
