"""Single-turn instruction data: Alpaca-style, Dolly, Self-Instruct, Unnatural
Instructions and FLAN/CoT input/target pairs.

Each becomes a user turn and an assistant turn. Instruction and input are joined the way
Tülu's fixed (non-random) layout does, `instruction + "\\n\\n" + input`; the raw fields stay
in `meta.instruction` / `meta.input` so the Alpaca prompt of "Instruction Tuning with
GPT-4" can be re-rendered from them at training time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from drover.formats.base import Converter, ConvertOptions, ConvertStats, Row, extra_meta
from drover.records import Conversation, Message
from drover.templates import join_instruction


def _pair(rid: str, source: str, prompt: str, answer: str, meta: dict[str, Any],
          stats: ConvertStats) -> Conversation | None:
    if not prompt.strip():
        stats.skip("empty instruction")
        return None
    if not answer.strip():
        stats.skip("empty output")
        return None
    return Conversation(rid, [Message("user", prompt), Message("assistant", answer.strip())], source, meta)


def _instruction_rows(rows: Iterable[Row], opts: ConvertOptions, stats: ConvertStats, default: str,
                      keys: tuple[str, str, str]) -> Iterator[Conversation]:
    source = opts.name(default)
    k_instruction, k_input, k_output = keys
    for number, row in enumerate(rows):
        obj = row.object()
        instruction = row.text(k_instruction)
        input_ = row.text(k_input, required=False)
        output = row.text(k_output)
        meta = {"instruction": instruction, "input": input_, **extra_meta(obj, keys + ("id",))}
        rid = f"{source}_{obj['id']}" if isinstance(obj.get("id"), (str, int)) else f"{source}_{number}"
        record = _pair(rid, source, join_instruction(instruction, input_), output, meta, stats)
        if record:
            yield record


def convert_alpaca(rows: Iterable[Row], opts: ConvertOptions, stats: ConvertStats) -> Iterator[Conversation]:
    """`{instruction, input, output}`: Alpaca, GPT-4-LLM (English and Chinese), Code Alpaca."""
    return _instruction_rows(rows, opts, stats, "alpaca", ("instruction", "input", "output"))


def convert_gsm8k(rows: Iterable[Row], opts: ConvertOptions, stats: ConvertStats) -> Iterator[Conversation]:
    """GSM8K `{question, answer}`: the answer (its reasoning, then `#### N`) is the assistant turn,
    which is also the gold answer the `gsm-match` reward and the GSM benchmark read."""
    return _instruction_rows(rows, opts, stats, "gsm8k", ("question", "input", "answer"))


def convert_dolly(rows: Iterable[Row], opts: ConvertOptions, stats: ConvertStats) -> Iterator[Conversation]:
    """Dolly 15k `{instruction, context, response, category}`: context plays the input."""
    return _instruction_rows(rows, opts, stats, "dolly", ("instruction", "context", "response"))


def convert_self_instruct(rows: Iterable[Row], opts: ConvertOptions,
                          stats: ConvertStats) -> Iterator[Conversation]:
    """Self-Instruct, both released shapes, one record per instance:

    - seed tasks and user-oriented tasks: `{id, instruction, instances: [{input, output}]}`;
    - the generated data, `all_instances_82K.jsonl` (yizhongw/self-instruct
      data/gpt3_generations/batch_221203, the file Tülu trains on): flat
      `{instruction, input, output}` lines without an id, named `<source>_<line index>` as
      open-instruct's reformat_datasets.py names them.
    """
    source = opts.name("self_instruct")
    for number, row in enumerate(rows):
        obj = row.object()
        if "instances" not in obj and "output" in obj:
            instruction, input_ = row.text("instruction"), row.text("input", required=False)
            record = _pair(f"{source}_{number}", source, join_instruction(instruction, input_), row.text("output"),
                           {"instruction": instruction, "input": input_,
                            **extra_meta(obj, ("instruction", "input", "output"))}, stats)
            if record:
                yield record
            continue
        task_id = row.get("id", (str, int))
        instruction = row.text("instruction")
        instances = row.array("instances")
        meta = extra_meta(obj, ("id", "instruction", "instances"))
        for i in range(len(instances)):
            inst = row.member(instances, i, "instances")
            prefix = f"instances[{i}]."
            input_ = row.text("input", obj=inst, prefix=prefix, required=False)
            output = row.text("output", obj=inst, prefix=prefix)
            rid = f"{task_id}" if len(instances) == 1 else f"{task_id}_{i}"
            record = _pair(rid, source, join_instruction(instruction, input_), output,
                           {"task_id": str(task_id), "instruction": instruction, "input": input_, **meta}, stats)
            if record:
                yield record


def convert_unnatural(rows: Iterable[Row], opts: ConvertOptions, stats: ConvertStats) -> Iterator[Conversation]:
    """Unnatural Instructions core/full: `instruction, instances[{instruction_with_input,
    input, constraints, output}]`, plus `reformulations` with `--reformulations`.

    The user turn is `instruction_with_input`, followed by the output constraints when they
    say something (open-instruct appends them the same way; "None" is dropped).
    """
    source = opts.name("unnatural_instructions")
    for number, row in enumerate(rows):
        row.object()
        row.text("instruction")
        groups = [("instances", row.array("instances"))]
        if opts.reformulations and row.object().get("reformulations") is not None:
            groups.append(("reformulations", row.array("reformulations", nonempty=False)))
        for group, items in groups:
            for i in range(len(items)):
                inst = row.member(items, i, group)
                prefix = f"{group}[{i}]."
                prompt = row.text("instruction_with_input", obj=inst, prefix=prefix)
                constraints = row.text("constraints", obj=inst, prefix=prefix, required=False).strip()
                if constraints and constraints.lower() not in ("none", "none."):
                    prompt = f"{prompt.strip()}\n{constraints}"
                output = row.text("output", obj=inst, prefix=prefix)
                tag = "" if group == "instances" else "r"
                record = _pair(f"{source}_{number}_{tag}{i}", source, prompt.strip(), output,
                               {"group": group, "instruction": inst.get("instruction") or row.obj["instruction"],
                                "input": inst.get("input") or ""}, stats)
                if record:
                    yield record


def convert_flan(rows: Iterable[Row], opts: ConvertOptions, stats: ConvertStats) -> Iterator[Conversation]:
    """FLAN / CoT collections: `inputs`/`targets` (or `input`/`target`)."""
    source = opts.name("flan")
    for number, row in enumerate(rows):
        obj = row.object()
        k_in, k_out = ("inputs", "targets") if "inputs" in obj or "targets" in obj else ("input", "target")
        prompt, target = row.text(k_in), row.text(k_out)
        record = _pair(f"{source}_{number}", source, prompt.strip(), target, extra_meta(obj, (k_in, k_out)), stats)
        if record:
            yield record


ALPACA = Converter(convert_alpaca, "conversation")
DOLLY = Converter(convert_dolly, "conversation")
SELF_INSTRUCT = Converter(convert_self_instruct, "conversation")
UNNATURAL = Converter(convert_unnatural, "conversation")
GSM8K = Converter(convert_gsm8k, "conversation")
FLAN = Converter(convert_flan, "conversation")
