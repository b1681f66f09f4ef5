"""Vicuna-80 pairwise scoring (Chiang et al. 2023; GPT-4-LLM Figures 4/5).

Protocol: lm-sys/FastChat `fastchat/eval/eval_gpt_review.py` (get_eval, parse_score) with its
`fastchat/eval/table/prompt.jsonl` and `reviewer.jsonl` (the April-2023 Vicuna-80 evaluation that
GPT-4-LLM's Figures 4/5 use). Deliberate difference: both answer orders are judged by default (the
reference judges once, the reference answer as Assistant 1: `--one-order`).

The judge sees a question and two answers and gives each a 1-10 score; totals over
the 80 questions give the relative score `total_model / total_reference` ("624 : 667
= 94%"). The prompts are FastChat's own (shipped `vicuna80/prompt.jsonl` and
`reviewer.jsonl`): a question uses the reviewer whose `category` equals its own
(coding, math), else the general one, with that reviewer's decoding settings.

Position matters, so both orders are judged by default; per question the scores are
averaged over the orders that parsed, and `order_flip_rate` says how often the order
changed the winner.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drover.errors import DroverError, InputError
from drover.inputs import iter_json_objects
from drover.judges.files import data_path as _data_path
from drover.judges.files import read_jsonl as _read_jsonl
from drover.judges.judge import Judge, JudgeContext, JudgeInputs, JudgeOutput, option
from drover.judges.verdicts import ParseFailure, ScorePair
from drover.completions import Constraint
from drover.records import parse_messages

if TYPE_CHECKING:
    from drover.judges.runner import JudgeCall, Judgment

_NUM = r"(\d+(?:\.\d+)?)"
# The constrained verdict: FastChat's first line, two 1-10 scores (read by `parse_scores`'s first rule).
VERDICT = Constraint(regex=r"(10|[1-9]) (10|[1-9])")


def data_path(*parts: str) -> Path:
    return _data_path("vicuna80", *parts)


def _valid(a: float, b: float) -> bool:
    return 0.0 <= a <= 10.0 and 0.0 <= b <= 10.0


def parse_scores(text: str) -> ScorePair | ParseFailure:
    """Read the two scores of a Vicuna review.

    FastChat's rule first (the first line holds exactly two numbers, commas allowed);
    then, for judges that wrote an explanation first (the math prompt asks for "a
    Python tuple" at the end), the last `Assistant 1: a ... Assistant 2: b` pair, then
    "give Assistant 1 a score of a and Assistant 2 a score of b", then the last `(a, b)`
    tuple (last because questions hold tuples too, e.g. the endpoints (10, 4)).

    >>> parse_scores("8 9\\nBoth assistants ...")
    ScorePair(first=8.0, second=9.0)
    >>> parse_scores("7.5, 9\\n...")
    ScorePair(first=7.5, second=9.0)
    >>> parse_scores("First, I will solve it.\\n...\\nThe output tuple is (10, 1).")
    ScorePair(first=10.0, second=1.0)
    >>> parse_scores("Scores:\\nAssistant 1: 3/10\\nAssistant 2: 7/10\\nAssistant 2 is better.")
    ScorePair(first=3.0, second=7.0)
    >>> parse_scores("Assistant 1 is better.").reason
    'no pair of scores found'
    >>> parse_scores("").reason
    'empty output'
    """
    if not text.strip():
        return ParseFailure(text, "empty output")
    first = text.strip().split("\n")[0].strip().replace(",", " ")
    parts = first.split()
    if len(parts) == 2:
        try:
            a, b = float(parts[0]), float(parts[1])
            if _valid(a, b):
                return ScorePair(a, b)
        except ValueError:
            pass
    s1 = re.findall(rf"Assistant 1(?: receives| gets)?(?: a score of|:)\s*{_NUM}", text)
    s2 = re.findall(rf"Assistant 2(?: receives| gets)?(?: a score of|:)\s*{_NUM}", text)
    if s1 and s2:
        a, b = float(s1[-1]), float(s2[-1])
        if _valid(a, b):
            return ScorePair(a, b)
    given = re.findall(rf"give Assistant 1 a score of {_NUM} and Assistant 2 a score of {_NUM}", text)
    if given:
        return ScorePair(float(given[-1][0]), float(given[-1][1]))
    tuples = re.findall(rf"\(\s*{_NUM}\s*,\s*{_NUM}\s*\)", text)
    if tuples:
        a, b = float(tuples[-1][0]), float(tuples[-1][1])
        if _valid(a, b):
            return ScorePair(a, b)
    return ParseFailure(text, "no pair of scores found")


@dataclass(frozen=True)
class VicunaPrompt:
    prompt_id: str
    system: str
    template: str
    defaults: dict[str, str]
    temperature: float
    max_tokens: int

    def messages(self, question: str, answer_1: str, answer_2: str) -> list[dict[str, str]]:
        user = self.template.format(question=question, answer_1=answer_1, answer_2=answer_2, **self.defaults)
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]


def load_prompts() -> dict[str, VicunaPrompt]:
    """{question category or "general": prompt}, from the shipped FastChat tables."""
    prompts = {p["prompt_id"]: p for p in _read_jsonl(data_path("prompt.jsonl"))}
    out: dict[str, VicunaPrompt] = {}
    for reviewer in _read_jsonl(data_path("reviewer.jsonl")):
        p = prompts[reviewer["prompt_id"]]
        meta = reviewer.get("metadata", {})
        out[reviewer["category"]] = VicunaPrompt(
            prompt_id=f"vicuna80/{reviewer['reviewer_id']}", system=p["system_prompt"],
            template=p["prompt_template"], defaults=p["defaults"],
            temperature=float(meta.get("temperature", 0.2)), max_tokens=int(meta.get("max_tokens", 1024)))
    return out


def prompt_for(prompts: dict[str, VicunaPrompt], category: str) -> VicunaPrompt:
    return prompts.get(category, prompts["general"])


def load_questions(path: Path | None = None) -> list[dict[str, Any]]:
    return _read_jsonl(path or data_path("question.jsonl"))


SHIPPED_ANSWERS = {
    "gpt35": "answer_gpt35.jsonl", "bard": "answer_bard.jsonl", "alpaca-13b": "answer_alpaca-13b.jsonl",
    "llama-13b": "answer_llama-13b.jsonl", "vicuna-13b": "answer_vicuna-13b.jsonl",
    "vicuna-7b": "answer_vicuna-7b-20230322-fp16.jsonl",
}


def load_answers(spec: str) -> tuple[str, dict[str, str]]:
    """(name, {question_id: answer}) from a shipped answer set name or a file.

    Files: FastChat answer JSONL - the Vicuna-80 table (`question_id`, `text`) or
    llm_judge's current `model_answer` file (`question_id`, `model_id`, `choices[0].turns`,
    the answer being the first turn) - or Conversation JSONL whose `meta.question_id` (as
    `drover convert --from vicuna-questions` keeps it) or else `id` is the question id, and
    whose last assistant turn is the answer.
    """
    if spec in SHIPPED_ANSWERS:
        path = data_path("answer", SHIPPED_ANSWERS[spec])
        name = spec
    else:
        path = Path(spec)
        name = path.stem
        if not path.exists():
            raise InputError(path, None, None,
                             f"file not found (or use a shipped answer set: {', '.join(SHIPPED_ANSWERS)})")
    out: dict[str, str] = {}
    for number, obj in iter_json_objects(path):
        if "question_id" in obj and ("text" in obj or "choices" in obj):
            if "text" in obj and not isinstance(obj["text"], str):
                raise InputError(path, number, "text", f"expected a string, got {type(obj['text']).__name__}")
            out[str(obj["question_id"])] = obj["text"] if "text" in obj else _first_turn(path, number, obj)
            if "model_id" in obj and spec not in SHIPPED_ANSWERS:
                name = str(obj["model_id"]).split(":")[0]
        elif "messages" in obj:
            messages = parse_messages(obj["messages"], "messages", path, number)
            answer = next((m.content for m in reversed(messages) if m.role == "assistant"), None)
            if answer is None:
                raise InputError(path, number, "messages", "no assistant turn (the answer to judge)")
            meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
            out[str(meta.get("question_id", obj.get("id")))] = answer
        else:
            raise InputError(path, number, None, "expected {question_id, text} or a Conversation record")
    return name, out


def _first_turn(path: Path, number: int, obj: dict[str, Any]) -> str:
    """The answer of a FastChat `model_answer` record: `choices[0].turns[0]`."""
    choices = obj["choices"]
    turns = choices[0].get("turns") if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
    if not isinstance(turns, list) or not turns or not isinstance(turns[0], str):
        raise InputError(path, number, "choices", "expected FastChat's [{\"index\": 0, \"turns\": [answer, ...]}]")
    return turns[0]


def reviews_totals(path: str | Path) -> dict[str, Any]:
    """Totals of a shipped FastChat review file, from its stored `score` fields.

    The oracle for this module: the original Vicuna evaluation's totals come out of
    these files (e.g. LLaMA-13B 513 : Vicuna-13B 694). Each review's text is parsed
    too, and the questions where the parse differs from the stored score are listed
    (`disagreements`): in the shipped files, only question 70 (index 69), whose stored
    scores were entered by hand and differ from the review text in two files.
    """
    rows = _read_jsonl(Path(path))
    parsed = [parse_scores(r["text"]) for r in rows]
    stored = [(float(r["score"][0]), float(r["score"][1])) for r in rows]
    return {
        "n": len(rows),
        "total_1": sum(a for a, _ in stored), "total_2": sum(b for _, b in stored),
        "failures": [i for i, p in enumerate(parsed) if isinstance(p, ParseFailure)],
        "disagreements": [i for i, (p, s) in enumerate(zip(parsed, stored))
                          if not isinstance(p, ParseFailure) and (p.first, p.second) != s],
    }


# --- Judging a model against a reference --------------------------------------------

ORDERS = ("ab", "ba")  # ab: reference is Assistant 1 (FastChat's convention), ba: swapped


def build_calls(questions: list[dict[str, Any]], model: dict[str, str], reference: dict[str, str],
                orders: tuple[str, ...] = ORDERS) -> list["JudgeCall"]:
    """One call per (question, order) for the questions both answer sets cover."""
    from drover.judges.runner import JudgeCall

    prompts = load_prompts()
    calls = []
    for q in questions:
        qid = str(q["question_id"])
        if qid not in model or qid not in reference:
            continue
        prompt = prompt_for(prompts, q.get("category", ""))
        for order in orders:
            a1, a2 = (reference[qid], model[qid]) if order == "ab" else (model[qid], reference[qid])
            calls.append(JudgeCall(
                id=f"{qid}/{order}", messages=prompt.messages(q["text"], a1, a2), prompt_id=prompt.prompt_id,
                parse=lambda c: parse_scores(c.text), constraint=VERDICT,
                decoding={"temperature": prompt.temperature, "max_tokens": prompt.max_tokens},
                meta={"question_id": qid, "category": q.get("category", ""), "order": order}))
    return calls


def summarize(judgments: list["Judgment"]) -> dict[str, Any]:
    """Totals, relative score and per-question scores (model and reference), order-averaged.

    A question's score is the mean over the orders that parsed; a question where no order
    parsed is left out of both totals and listed in `unscored`.
    """
    by_q: dict[str, dict[str, ScorePair]] = {}
    categories: dict[str, str] = {}
    for j in judgments:
        qid, order = j.meta["question_id"], j.meta["order"]
        categories[qid] = j.meta.get("category", "")
        by_q.setdefault(qid, {})
        if isinstance(j.verdict, ScorePair):
            # (reference, model) in both orders
            by_q[qid][order] = j.verdict if order == "ab" else j.verdict.swapped()
    per_question = []
    unscored = []
    flips = both = 0
    for qid, got in by_q.items():
        if not got:
            unscored.append(qid)
            continue
        ref = sum(p.first for p in got.values()) / len(got)
        mod = sum(p.second for p in got.values()) / len(got)
        if len(got) == 2:
            both += 1
            flips += got["ab"].outcome != got["ba"].outcome
        per_question.append({"question_id": qid, "category": categories[qid], "model": mod, "reference": ref,
                             "orders": {o: [p.first, p.second] for o, p in got.items()}})
    total_model = sum(r["model"] for r in per_question)
    total_ref = sum(r["reference"] for r in per_question)
    by_cat: dict[str, list[float]] = {}
    for r in per_question:
        cat = by_cat.setdefault(r["category"], [0.0, 0.0])
        cat[0] += r["model"]
        cat[1] += r["reference"]
    wins = sum(r["model"] > r["reference"] for r in per_question)
    ties = sum(r["model"] == r["reference"] for r in per_question)
    n = len(per_question)
    from drover.metrics.winrate import standard_error

    outcomes = [100.0 if r["model"] > r["reference"] else 50.0 if r["model"] == r["reference"] else 0.0
                for r in per_question]
    return {
        "standard_errors": {"question_win_rate": standard_error(outcomes)},
        "metrics": {
            "relative_score": 100.0 * total_model / total_ref if total_ref else float("nan"),
            "total_model": total_model, "total_reference": total_ref,
            "n_scored": n, "n_unscored": len(unscored),
            "question_win_rate": 100.0 * (wins + 0.5 * ties) / n if n else float("nan"),
            "order_flip_rate": 100.0 * flips / both if both else float("nan"),
        },
        "breakdown": {"label": relative_label(total_model, total_ref),
                      "per_category": {c: {"model": m, "reference": r, "relative_score": 100.0 * m / r if r else None}
                                       for c, (m, r) in sorted(by_cat.items())},
                      "per_question": per_question, "unscored": unscored},
    }


def relative_label(total_model: float, total_reference: float) -> str:
    """GPT-4-LLM's way of writing a relative score.

    >>> relative_label(624, 667)
    '624 : 667 = 94%'
    """
    if not total_reference:
        return f"{total_model:g} : {total_reference:g}"
    return f"{total_model:g} : {total_reference:g} = {100 * total_model / total_reference:.0f}%"


# --- The registry entry -------------------------------------------------------------


@dataclass
class VicunaSettings:
    model_outputs: str = field(default="", metadata=option(
        "answers: FastChat answer JSONL (Vicuna-80 `text` or llm_judge `choices[].turns`) or Conversation JSONL",
        required=True))
    reference: str = field(default="gpt35", metadata=option(
        f"reference answers: a shipped set ({', '.join(SHIPPED_ANSWERS)}) or a file"))
    one_order: bool = field(default=False, metadata=option("judge only with the reference as Assistant 1"))
    limit: int | None = None


class VicunaJudge(Judge):
    name = "vicuna"
    task = "vicuna80"
    title = "Vicuna-80 pairwise 1-10 scores against a reference, relative score (both orders)"
    example = "drover judge vicuna --judge http://127.0.0.1:8000/v1#judge --model-outputs answers.jsonl"
    primary_metric = "relative_score"
    Settings = VicunaSettings
    shipped = ("data/vicuna80",)

    def load(self, settings: VicunaSettings) -> JudgeInputs:
        model, answers = load_answers(settings.model_outputs)
        ref_name, reference = load_answers(settings.reference)
        questions = load_questions()[: settings.limit] if settings.limit else load_questions()
        covered = [q for q in questions if str(q["question_id"]) in answers and str(q["question_id"]) in reference]
        if not covered:
            raise DroverError(f"{settings.model_outputs}: none of its {len(answers)} answers matches a Vicuna-80 "
                              f"question id also answered by {ref_name!r} (ids seen: {', '.join(list(answers)[:5])})")
        ids = [str(q["question_id"]) for q in covered]
        return JudgeInputs(model, f"vicuna80-vs-{ref_name}", {
            "questions": [[q["question_id"], q["text"]] for q in covered],
            "model": [answers[i] for i in ids], "reference": [reference[i] for i in ids]},
            (covered, answers, ref_name, reference))

    def judge(self, ctx: JudgeContext | None, settings: VicunaSettings, inputs: JudgeInputs) -> JudgeOutput:
        assert ctx is not None
        questions, answers, ref_name, reference = inputs.data
        orders = ("ab",) if settings.one_order else ORDERS
        judgments = ctx.run(build_calls(questions, answers, reference, orders), desc="vicuna80")
        summary = summarize(judgments)
        return JudgeOutput(summary["metrics"], summary["breakdown"], len(questions), summary["standard_errors"],
                           {"reference": ref_name, "orders": list(orders)},
                           message=f"Vicuna-80 ({summary['breakdown']['label']}): {inputs.label} vs {ref_name}, "
                                   f"judge {ctx.judge_label}")


JUDGE = VicunaJudge()
