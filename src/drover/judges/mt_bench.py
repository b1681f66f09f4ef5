"""MT-bench (Zheng et al. 2023), as FastChat's `llm_judge` runs it, with its shipped prompts.

Protocol: lm-sys/FastChat `fastchat/llm_judge/common.py` (run_judge_single, run_judge_pair,
play_a_match_single, play_a_match_pair) and `gen_judgment.py`, with `data/judge_prompts.jsonl`
and `show_result.py`'s averages. One deliberate difference: a single-answer rating outside
0-10 (e.g. "[[85]]") is a counted parse failure, where FastChat would average it in.

- Single-answer grading: each of the two turns gets a `[[rating]]` (1-10). Questions
  of the math, reasoning and coding categories use the reference-guided prompts with
  the shipped GPT-4 reference answers (`single-math-v1`, `single-math-v1-multi-turn`).
- Pairwise: `[[A]]`, `[[B]]` or `[[C]]` (tie) for each turn, judged in both orders;
  FastChat's rule: the verdict counts only if both orders agree, otherwise it is a tie
  ("inconsistent").

Answers: FastChat's `model_answer` JSONL (`question_id`, `model_id`, `choices[0].turns`, as
`gen_model_answer.py` writes it) or Conversation JSONL (`id` = question id, the assistant
turns in order).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drover.errors import ConfigError, InputError
from drover.inputs import iter_json_objects
from drover.judges.files import data_path, read_jsonl
from drover.judges.judge import Judge, JudgeContext, JudgeInputs, JudgeOutput, option
from drover.judges.verdicts import Choice, Outcome, ParseFailure, Rating
from drover.completions import Constraint
from drover.records import parse_messages

if TYPE_CHECKING:
    from drover.judges.runner import JudgeCall, Judgment

NEED_REF_CATS = ("math", "reasoning", "coding")
DECODING = {"temperature": 0.0, "max_tokens": 2048}  # FastChat's judge settings
_RATING = re.compile(r"\[\[(\d+\.?\d*)\]\]")
_RATING_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")
# The constrained verdicts: FastChat's own markers, nothing around them.
RATING = Constraint(regex=r"Rating: \[\[(10|[1-9])\]\]")
PAIR_VERDICT = Constraint(choice=("[[A]]", "[[B]]", "[[C]]"))


def parse_rating(text: str) -> Rating | ParseFailure:
    """FastChat's rule: the first `[[x]]`, else the first `[x]`; ratings outside 0-10 fail.

    >>> parse_rating("The answer is correct. Rating: [[8]]")
    Rating(score=8.0)
    >>> parse_rating("Rating: [7.5]")
    Rating(score=7.5)
    >>> parse_rating("I would rate it 8/10.").reason
    'no [[rating]] found'
    >>> parse_rating("Rating: [[85]]").reason
    'rating 85.0 is outside 0-10'
    """
    match = _RATING.search(text) or _RATING_BACKUP.search(text)
    if not match:
        return ParseFailure(text, "no [[rating]] found")
    value = float(match.group(1))
    if not 0.0 <= value <= 10.0:
        return ParseFailure(text, f"rating {value} is outside 0-10")
    return Rating(value)


def parse_pair_verdict(text: str) -> Choice | ParseFailure:
    """FastChat's rule, in its order: "[[A]]", then "[[B]]", then "[[C]]" (tie).

    >>> parse_pair_verdict("Assistant B is more accurate. [[B]]")
    Choice(outcome=<Outcome.SECOND: 'second'>)
    >>> parse_pair_verdict("Both are equally good. [[C]]")
    Choice(outcome=<Outcome.TIE: 'tie'>)
    >>> parse_pair_verdict("Final verdict: [A]").reason
    'no [[A]], [[B]] or [[C]] found'
    """
    if "[[A]]" in text:
        return Choice(Outcome.FIRST)
    if "[[B]]" in text:
        return Choice(Outcome.SECOND)
    if "[[C]]" in text:
        return Choice(Outcome.TIE)
    return ParseFailure(text, "no [[A]], [[B]] or [[C]] found")


@dataclass(frozen=True)
class JudgePrompt:
    name: str
    system: str
    template: str

    def messages(self, **values: str) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system},
                {"role": "user", "content": self.template.format(**values)}]


def load_judge_prompts() -> dict[str, JudgePrompt]:
    return {p["name"]: JudgePrompt(p["name"], p["system_prompt"], p["prompt_template"])
            for p in read_jsonl(data_path("mt_bench", "judge_prompts.jsonl"))}


def load_questions() -> list[dict[str, Any]]:
    return read_jsonl(data_path("mt_bench", "question.jsonl"))


def load_references() -> dict[str, list[str]]:
    return {str(r["question_id"]): r["choices"][0]["turns"]
            for r in read_jsonl(data_path("mt_bench", "reference_answer", "gpt-4.jsonl"))}


def load_answers(path: str | Path) -> tuple[str, dict[str, list[str]]]:
    """(model name, {question_id: [turn 1 answer, turn 2 answer]})."""
    path = Path(path)
    name = path.stem
    out: dict[str, list[str]] = {}
    for number, obj in iter_json_objects(path):
        if "choices" in obj:
            choices = obj["choices"]
            turns = choices[0].get("turns") if isinstance(choices, list) and choices and \
                isinstance(choices[0], dict) else None
            if not isinstance(turns, list) or not all(isinstance(t, str) for t in turns):
                raise InputError(path, number, "choices", "expected [{\"turns\": [str, ...]}]")
            out[str(obj.get("question_id"))] = list(turns)
            name = str(obj.get("model_id") or name)
        elif "messages" in obj:
            messages = parse_messages(obj["messages"], "messages", path, number)
            out[str(obj.get("id"))] = [m.content for m in messages if m.role == "assistant"]
        else:
            raise InputError(path, number, None, "expected a FastChat answer {question_id, choices} "
                                                 "or a Conversation record")
        if len(out[str(obj.get("question_id", obj.get("id")))]) < 2:
            raise InputError(path, number, None, "MT-bench needs two assistant turns")
    return name, out


def _single_values(q: dict[str, Any], answers: list[str], ref: list[str] | None, turn: int) -> dict[str, str]:
    qs = q["turns"]
    if turn == 1:
        values = {"question": qs[0], "answer": answers[0]}
        if ref:
            values["ref_answer_1"] = ref[0]
    else:
        values = {"question_1": qs[0], "question_2": qs[1], "answer_1": answers[0], "answer_2": answers[1]}
        if ref:
            values.update(ref_answer_1=ref[0], ref_answer_2=ref[1])
    return values


def build_single_calls(answers: dict[str, list[str]]) -> list["JudgeCall"]:
    """Two calls per question (turn 1, turn 2), reference-guided where FastChat uses references."""
    from drover.judges.runner import JudgeCall

    prompts, refs = load_judge_prompts(), load_references()
    calls = []
    for q in load_questions():
        qid = str(q["question_id"])
        if qid not in answers:
            continue
        ref = refs.get(qid) if q["category"] in NEED_REF_CATS else None
        for turn in (1, 2):
            name = ("single-math-v1" if ref else "single-v1") + ("-multi-turn" if turn == 2 else "")
            prompt = prompts[name]
            calls.append(JudgeCall(
                id=f"{qid}/t{turn}", messages=prompt.messages(**_single_values(q, answers[qid], ref, turn)),
                prompt_id=f"mt_bench/{name}", parse=lambda c: parse_rating(c.text), decoding=dict(DECODING),
                constraint=RATING,
                meta={"question_id": qid, "category": q["category"], "turn": turn}))
    return calls


def build_pairwise_calls(answers_a: dict[str, list[str]], answers_b: dict[str, list[str]],
                         orders: tuple[str, ...] = ("ab", "ba")) -> list["JudgeCall"]:
    """Per question, turn and order one call; order "ab" shows model A's answers first."""
    from drover.judges.runner import JudgeCall

    prompts, refs = load_judge_prompts(), load_references()
    calls = []
    for q in load_questions():
        qid = str(q["question_id"])
        if qid not in answers_a or qid not in answers_b:
            continue
        ref = refs.get(qid) if q["category"] in NEED_REF_CATS else None
        for turn in (1, 2):
            name = ("pair-math-v1" if ref else "pair-v2") + ("-multi-turn" if turn == 2 else "")
            for order in orders:
                first, second = (answers_a, answers_b) if order == "ab" else (answers_b, answers_a)
                qs = q["turns"]
                if turn == 1:
                    values = {"question": qs[0], "answer_a": first[qid][0], "answer_b": second[qid][0]}
                else:
                    values = {"question_1": qs[0], "question_2": qs[1], "answer_a_1": first[qid][0],
                              "answer_a_2": first[qid][1], "answer_b_1": second[qid][0], "answer_b_2": second[qid][1]}
                if ref:
                    values.update(ref_answer_1=ref[0], ref_answer_2=ref[1])
                calls.append(JudgeCall(
                    id=f"{qid}/t{turn}/{order}", messages=prompts[name].messages(**values),
                    prompt_id=f"mt_bench/{name}", parse=lambda c: parse_pair_verdict(c.text),
                    constraint=PAIR_VERDICT, decoding=dict(DECODING), meta={"question_id": qid, "category": q["category"], "turn": turn,
                                                   "order": order, "switched": order == "ab"}))  # A shown first
    return calls


def summarize_single(judgments: list["Judgment"]) -> dict[str, Any]:
    """Mean score overall, per turn and per category (FastChat's `show_result` table)."""
    scored = [(j.meta, j.verdict.score) for j in judgments if isinstance(j.verdict, Rating)]

    def mean(values: list[float]) -> float:
        return sum(values) / len(values) if values else float("nan")

    from drover.metrics.winrate import standard_error

    metrics = {"score": mean([s for _, s in scored]),
               "score_turn1": mean([s for m, s in scored if m["turn"] == 1]),
               "score_turn2": mean([s for m, s in scored if m["turn"] == 2]),
               "n_scored": len(scored), "n_failed": len(judgments) - len(scored)}
    cats = sorted({m["category"] for m, _ in scored})
    return {"metrics": metrics, "standard_errors": {"score": standard_error([s for _, s in scored])},
            "breakdown": {"per_category": {c: mean([s for m, s in scored if m["category"] == c]) for c in cats},
                          "per_question": [{"question_id": m["question_id"], "turn": m["turn"], "score": s}
                                           for m, s in scored]}}


def summarize_pairwise(judgments: list["Judgment"]) -> dict[str, Any]:
    """Wins of model A, of model B and ties, where disagreeing orders count as ties.

    A (question, turn) whose verdict failed to parse in either order is left out and counted.
    """
    games: dict[tuple[str, int], dict[str, Outcome]] = {}
    failed: set[tuple[str, int]] = set()
    for j in judgments:
        key = (j.meta["question_id"], j.meta["turn"])
        if isinstance(j.verdict, Choice):
            outcome = j.verdict.outcome if j.meta["order"] == "ab" else j.verdict.outcome.swapped()
            games.setdefault(key, {})[j.meta["order"]] = outcome  # FIRST = model A better
        else:
            failed.add(key)
    wins_a = wins_b = ties = inconsistent = 0
    rows = []
    for key, got in sorted(games.items()):
        if key in failed:
            continue
        outcomes = set(got.values())
        if len(outcomes) > 1:
            winner = Outcome.TIE
            inconsistent += 1
        else:
            winner = next(iter(outcomes))
        wins_a += winner == Outcome.FIRST
        wins_b += winner == Outcome.SECOND
        ties += winner == Outcome.TIE
        rows.append({"question_id": key[0], "turn": key[1], "winner": {"first": "A", "second": "B", "tie": "tie"}[
            winner.value], "orders": {o: v.value for o, v in got.items()}})
    n = wins_a + wins_b + ties
    from drover.metrics.winrate import standard_error

    points = [100.0 if r["winner"] == "A" else 0.0 if r["winner"] == "B" else 50.0 for r in rows]
    return {"standard_errors": {"win_rate": standard_error(points)},
            "metrics": {"win_rate": 100.0 * (wins_a + 0.5 * ties) / n if n else float("nan"),
                        "wins": wins_a, "losses": wins_b, "ties": ties, "inconsistent": inconsistent,
                        "n_games": n, "n_failed": len(failed)},
            "breakdown": {"games": rows}}


# --- The registry entry -------------------------------------------------------------


@dataclass
class MTBenchSettings:
    model_outputs: str = field(default="", metadata=option(
        "answers: FastChat model_answer JSONL (choices[0].turns) or Conversation JSONL (2 turns)",
        required=True))
    mode: str = field(default="single", metadata=option("single-answer grading or pairwise",
                                                        choices=("single", "pairwise")))
    baseline_outputs: str | None = field(default=None, metadata=option(
        "the other model's answers (pairwise)"))
    limit: int | None = None


class MTBenchJudge(Judge):
    name = "mt-bench"
    task = "mt_bench"
    title = "MT-bench single-answer grading (1-10 per turn) or pairwise against another model"
    example = "drover judge mt-bench --judge http://127.0.0.1:8000/v1#judge --model-outputs model_answer/mine.jsonl"
    primary_metric = "score"
    Settings = MTBenchSettings
    shipped = ("data/mt_bench",)

    def task_for(self, settings: MTBenchSettings) -> str:
        return "mt_bench" if settings.mode == "single" else "mt_bench_pairwise"

    def primary(self, settings: MTBenchSettings, inputs: JudgeInputs) -> str:
        return "score" if settings.mode == "single" else "win_rate"

    def load(self, settings: MTBenchSettings) -> JudgeInputs:
        model, answers = load_answers(settings.model_outputs)
        if settings.limit:
            keep = {str(q["question_id"]) for q in load_questions()[: settings.limit]}
            answers = {k: v for k, v in answers.items() if k in keep}
        if settings.mode == "single":
            return JudgeInputs(model, "mt-bench", {"answers": sorted(answers.items())}, (answers, None, None))
        if not settings.baseline_outputs:
            raise ConfigError("mt-bench --mode pairwise needs --baseline-outputs FILE")
        other, other_answers = load_answers(settings.baseline_outputs)
        return JudgeInputs(model, f"mt-bench-pair-vs-{other}", {
            "answers": sorted(answers.items()), "other": sorted(other_answers.items())}, (answers, other, other_answers))

    def judge(self, ctx: JudgeContext | None, settings: MTBenchSettings, inputs: JudgeInputs) -> JudgeOutput:
        assert ctx is not None
        answers, other, other_answers = inputs.data
        if settings.mode == "single":
            judgments = ctx.run(build_single_calls(answers), desc="mt-bench")
            summary, facts = summarize_single(judgments), {}
        else:
            judgments = ctx.run(build_pairwise_calls(answers, other_answers), desc="mt-bench")
            summary, facts = summarize_pairwise(judgments), {"reference": other}
        n = len({j.meta["question_id"] for j in judgments})
        return JudgeOutput(summary["metrics"], summary["breakdown"], n, summary["standard_errors"], facts,
                           message=f"MT-bench ({settings.mode}): {inputs.label}, judge {ctx.judge_label}")


JUDGE = MTBenchJudge()
