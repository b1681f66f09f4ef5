"""Prompt encoders and parsers for teacher-generated tasks (Alpaca and Self-Instruct).

Alpaca asks for 20 numbered `Instruction / Input / Output` blocks separated by `###`;
Self-Instruct asks for a numbered list of instructions, then (per instruction) either
`Class label:` blocks (output-first, classification) or `Example k / Input / Output`
blocks (input-first). These functions follow the original post-processing, with the
tolerance a chat model needs (a reply that restates the number it was asked to
continue, markdown bold around field names).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass
class Task:
    instruction: str
    input: str = ""
    output: str = ""


@dataclass
class Rejected:
    text: str
    reason: str


def encode_alpaca_prompt(header: str, seeds: list[Task]) -> str:
    """Alpaca's prompt: prompt.txt, then the seed tasks as numbered blocks, then `N. Instruction:`."""
    prompt = header + "\n"
    for idx, task in enumerate(seeds):
        instruction = re.sub(r"\s+", " ", task.instruction).strip().rstrip(":")
        input_ = "<noinput>" if task.input.lower() == "" else task.input
        prompt += "###\n"
        prompt += f"{idx + 1}. Instruction: {instruction}\n"
        prompt += f"{idx + 1}. Input:\n{input_}\n"
        prompt += f"{idx + 1}. Output:\n{task.output}\n"
    prompt += "###\n"
    prompt += f"{len(seeds) + 1}. Instruction:"
    return prompt


_BOLD = re.compile(r"\*\*|__")


def parse_alpaca_tasks(text: str, num_prompt_instructions: int, finish_reason: str | None) -> list[Task | Rejected]:
    """Alpaca's `post_process_gpt3_response` block split (filters are applied by the caller).

    >>> out = parse_alpaca_tasks(" Name a colour.\\n4. Input:\\n<noinput>\\n4. Output:\\nRed.\\n###\\n"
    ...                          "5. Instruction: Add the numbers.\\n5. Input:\\n2, 3\\n5. Output:\\n5", 3, "stop")
    >>> [(t.instruction, t.input, t.output) for t in out]
    [('Name a colour.', '', 'Red.'), ('Add the numbers.', '2, 3', '5')]
    """
    if not text.strip():
        return []
    first = num_prompt_instructions + 1
    text = _BOLD.sub("", text)
    if not re.match(rf"\s*{first}\.\s+Instruction:", text):
        text = f"{first}. Instruction:" + text
    blocks = re.split("###", text)
    out: list[Task | Rejected] = []
    for idx, block in enumerate(blocks):
        if not block.strip():
            continue
        # A reply cut off by length: its last block is likely incomplete.
        if idx == len(blocks) - 1 and finish_reason == "length":
            out.append(Rejected(block.strip(), "truncated (finish_reason=length)"))
            continue
        number = idx + first
        parts = re.split(rf"{number}\.\s+(Instruction|Input|Output):", block)
        if len(parts) != 7:
            out.append(Rejected(block.strip(), "malformed block (expected numbered Instruction/Input/Output)"))
            continue
        input_ = parts[4].strip()
        input_ = "" if input_.lower() == "<noinput>" else input_
        out.append(Task(parts[2].strip(), input_, parts[6].strip()))
    return out


def encode_self_instruct_prompt(header: str, instructions: list[str]) -> str:
    """Self-Instruct's bootstrap prompt: a header, numbered instructions, then `N+1.`."""
    prompt = header
    for idx, instruction in enumerate(instructions):
        instruction = re.sub(r"\s+", " ", instruction).strip().rstrip(":")
        prompt += f"{idx + 1}. {instruction}\n"
    prompt += f"{len(instructions) + 1}."
    return prompt


def parse_self_instruct_instructions(text: str, finish_reason: str | None, first_number: int) -> list[str] | Rejected:
    """Self-Instruct's split of a reply into instructions (normalised and capitalised).

    A reply cut off by length is dropped whole, as in the original.

    >>> parse_self_instruct_instructions(" Sort the list of numbers.\\n10. Name three rivers in Asia.", "stop", 9)
    ['Sort the list of numbers.', 'Name three rivers in asia.']
    """
    if finish_reason == "length":
        return Rejected(text, "truncated (finish_reason=length)")
    text = re.sub(rf"^\s*{first_number}\s?\.\s", " ", _BOLD.sub("", text))
    text = re.sub(r"\n\d+\s?\.\s*$", "", text.rstrip())  # a dangling "11." the model started
    out = []
    for inst in re.split(r"\n\d+\s?\. ", text):
        inst = re.sub(r"\s+", " ", inst).strip()
        inst = inst.strip().capitalize()
        if inst:
            out.append(inst)
    return out


def parse_is_classification(text: str) -> bool | None:
    """'Yes'/'No' of the classification-or-not prompt; None if neither."""
    answer = text.strip().split("\n")[0].strip().strip(".").lower()
    if answer.startswith("yes"):
        return True
    if answer.startswith("no"):
        return False
    return None


def _parse_input_output(text: str) -> tuple[str, str]:
    if re.findall(r"Output\s*\d*\s*:", text):
        parts = re.split(r"Output\s*\d*\s*:", text)
        inst_input, inst_output = parts[0].strip(), parts[1].strip()
    else:
        inst_input, inst_output = "", text.strip()
    if re.findall(r"Input\s*\d*\s*:", inst_output):
        inst_output = re.split(r"Input\s*\d*\s*:", inst_output)[0].strip()
    inst_input = re.sub(r"^Input\s*\d*\s*:", "", inst_input).strip()
    return inst_input, inst_output


def _clean_instances(instances: list[Task]) -> list[Task]:
    """Self-Instruct's filter_invalid_instances + filter_duplicate_instances (order kept)."""
    valid = [t for t in instances
             if t.input != t.output and t.output != ""
             and not t.input.strip().endswith(":") and not t.output.strip().endswith(":")]
    for i in range(1, len(valid)):
        for j in range(i):
            if valid[i].input and valid[i].input == valid[j].input and valid[i].output != valid[j].output:
                return []  # same input, different outputs: the task is ambiguous
    seen, out = set(), []
    for t in valid:
        if (t.input, t.output) not in seen:
            seen.add((t.input, t.output))
            out.append(t)
    return out


def parse_generation_instances(text: str, instruction: str, finish_reason: str | None) -> list[Task]:
    """Input-first instances: `Example k` blocks with `Input:`/`Output:` (or one pair).

    >>> [(t.input, t.output) for t in parse_generation_instances(
    ...     "Example 1\\nList: [3, 1]\\nOutput: [1, 3]\\nExample 2\\nList: [2, 9, 1]\\nOutput: [1, 2, 9]", "Sort.", "stop")]
    [('List: [3, 1]', '[1, 3]'), ('List: [2, 9, 1]', '[1, 2, 9]')]
    """
    text = text.strip()
    instances = []
    if re.findall(r"Example\s?\d*\.?", text):
        for block in [b.strip() for b in re.split(r"Example\s?\d*\.?", text) if b.strip()]:
            i, o = _parse_input_output(block)
            instances.append(Task(instruction.strip(), i.strip(), o.strip()))
    elif re.findall(r"Output\s*\d*\s*:", text):
        i, o = _parse_input_output(text)
        instances.append(Task(instruction.strip(), i.strip(), o.strip()))
    else:
        return []
    if finish_reason == "length":
        instances = instances[:-1]
    return _clean_instances(instances)


def parse_classification_instances(text: str, instruction: str, finish_reason: str | None) -> list[Task]:
    """Output-first instances: `Class label: L` followed by the input it labels.

    >>> [(t.input, t.output) for t in parse_classification_instances(
    ...     "Class label: Positive\\nSentence: Great day.\\nClass label: Negative\\nSentence: Awful.", "Sentiment?", "stop")]
    [('Sentence: Great day.', 'Positive'), ('Sentence: Awful.', 'Negative')]
    """
    if "Class label:" not in text:
        return []
    instances = []
    for block in text.split("Class label:")[1:]:
        fields = block.strip().split("\n", 1)
        label = fields[0].strip()
        input_text = fields[1].strip() if len(fields) == 2 else ""
        instances.append(Task(instruction.strip(), input_text, label))
    if finish_reason == "length":
        instances = instances[:-1]
    return _clean_instances(instances)
