"""Evaluation sets: AlpacaEval model outputs and Vicuna / MT-bench question files."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import partial

from drover.formats.base import Converter, ConvertOptions, ConvertStats, Row, extra_meta
from drover.records import Conversation, Message


def convert_alpaca_eval(rows: Iterable[Row], opts: ConvertOptions, stats: ConvertStats) -> Iterator[Conversation]:
    """AlpacaEval `model_outputs.json`: `[{dataset, instruction, output, generator}]`.

    Ids are `alpaca_eval_<index>` whatever the generator, so two models' outputs pair up
    by id; `source` is the generator. All 805 instructions are kept, as alpaca_eval
    evaluates all of them: an instruction whose output is empty (text_davinci_003 has two)
    becomes a prompt without an assistant turn, never a dropped row.
    """
    prefix = opts.name("alpaca_eval")
    for number, row in enumerate(rows):
        obj = row.object()
        instruction = row.text("instruction")
        output = row.text("output")
        generator = row.text("generator")
        if not instruction.strip():
            stats.skip("empty instructions")
            continue
        meta = extra_meta(obj, ("instruction", "output", "generator"))
        turns = [Message("user", instruction)] + ([Message("assistant", output)] if output.strip() else [])
        yield Conversation(f"{prefix}_{number}", turns, generator, meta)


def convert_questions(rows: Iterable[Row], opts: ConvertOptions, stats: ConvertStats,
                      default: str = "questions") -> Iterator[Conversation]:
    """FastChat question files as prompts (no assistant turn).

    Vicuna-80 `{question_id, text, category}`; llm_judge / MT-bench
    `{question_id, category, turns, reference?}`. Only the first turn can be a message (the
    second MT-bench turn follows the model's own answer), so all turns, and the reference
    answers when present, are kept in `meta`.
    """
    source = opts.name(default)
    for row in rows:
        obj = row.object()
        qid = row.get("question_id", (int, str))
        if "turns" in obj:
            turns = row.array("turns")
            for i, turn in enumerate(turns):
                if not isinstance(turn, str) or not turn.strip():
                    raise row.error(f"turns[{i}]", "expected a non-empty string")
        else:
            turns = [row.text("text")]
            if not turns[0].strip():
                raise row.error("text", "empty question")
        meta = {"question_id": qid, "turns": turns, **extra_meta(obj, ("question_id", "text", "turns"))}
        if isinstance(obj.get("reference"), list):
            meta["reference"] = obj["reference"]
        yield Conversation(f"{source}_{qid}", [Message("user", turns[0])], source, meta)


ALPACA_EVAL = Converter(convert_alpaca_eval, "conversation")
VICUNA_QUESTIONS = Converter(partial(convert_questions, default="vicuna"), "conversation")
MT_BENCH_QUESTIONS = Converter(partial(convert_questions, default="mt_bench"), "conversation")
