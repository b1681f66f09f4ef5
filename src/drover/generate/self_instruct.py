"""`drover generate self-instruct`: grow an instruction pool from seed tasks.

Two modes, each following its original code (defaults included):

* `alpaca` (Taori et al. 2023, `generate_instruction.py`): 3 random seed tasks in the
  prompt of Alpaca's `prompt.txt`, up to 20 new Instruction/Input/Output blocks per call
  (temperature 1.0, top_p 1.0).
* `self-instruct` (Wang et al. 2022): 8 instructions in context (6 human seeds + 2 from
  the machine pool; temperature 0.7, top_p 0.5), then for each new instruction "is it a
  classification task?", then instance generation, output-first for classification and
  input-first otherwise (greedy), up to 5 instances per task.

Both drop replies cut off by length, instructions of <= 3 or > 150 words, blacklisted
words, "Write a program...", a leading punctuation mark or non-ASCII character, and near
duplicates (ROUGE-L > 0.7 against the seeds and everything kept so far, via the exact
fast `NearDuplicateIndex`). Rejections are counted by reason and listed in
`<output>.rejected.jsonl`. The output is Conversation records (instruction + input as the
user turn, the teacher's output as the assistant turn), appended as they are kept; a
restart reloads the pool from the output and continues with the next request.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Literal

from drover.errors import ConfigError, InputError
from drover.generate.filters import BLACKLIST_ALPACA, BLACKLIST_SELF_INSTRUCT, instruction_problem
from drover.generate.stage import Summary, cache_path, check_ranges, close_all, open_llm, require, sidecar
from drover.generate.task_blocks import (Rejected, Task, encode_alpaca_prompt, encode_self_instruct_prompt,
                                         parse_alpaca_tasks, parse_classification_instances,
                                         parse_generation_instances, parse_is_classification,
                                         parse_self_instruct_instructions)
from drover.metrics.rouge import NearDuplicateIndex
from drover.prompts import load_prompt
from drover.records import Conversation, JsonlAppender, Message

# Per-mode defaults of the original code; a config value of None takes these.
MODE_DEFAULTS = {
    "alpaca": {"num_prompt_instructions": 3, "temperature": 1.0, "top_p": 1.0, "max_tokens": 3072,
               "stop": ["\n20", "20.", "20."], "seed_tasks": "alpaca/seed_tasks.jsonl"},
    "self-instruct": {"num_prompt_instructions": 8, "temperature": 0.7, "top_p": 0.5, "max_tokens": 1024,
                      "stop": ["\n\n", "\n16", "16.", "16 ."], "seed_tasks": "self_instruct/seed_tasks.jsonl"},
}


@dataclass
class SelfInstructConfig:
    GROWS: ClassVar[tuple[str, ...]] = ("limit", "num_instructions")  # more instructions continue the same pool
    output: str = ""
    teacher: str = ""
    teacher_options: dict[str, Any] = field(default_factory=dict)
    run_dir: str = ""
    mode: Literal["alpaca", "self-instruct"] = "alpaca"
    seed_tasks: str = ""  # JSONL of {instruction, instances:[{input, output}], is_classification}; default shipped
    num_instructions: int = 100  # new instructions to keep
    num_prompt_instructions: int | None = None  # in-context tasks per prompt (alpaca 3, self-instruct 8)
    num_machine_instructions: int = 2  # self-instruct: machine instructions among them
    request_batch_size: int = 5
    max_requests: int = 0  # stop after this many teacher calls (0 = 4 per wanted instruction)
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    rouge_threshold: float = 0.7
    prompt_style: Literal["chat", "text"] = "chat"  # chat endpoint (one user message) or raw completion
    clf_seed_tasks_only: bool = False  # self-instruct: classification seeds only (more clf tasks)
    max_instances: int = 5  # self-instruct: instances per task
    seed: int = 42

    def validate(self) -> None:
        check_ranges(self)
        require(self.output, "output", "output")
        if self.num_instructions < 1:
            raise ConfigError(f"num_instructions: must be >= 1, got {self.num_instructions}")

    def get(self, key: str) -> Any:
        value = getattr(self, key)
        return MODE_DEFAULTS[self.mode][key] if value in (None, "") else value


def _seed_tasks(config: SelfInstructConfig) -> list[dict[str, Any]]:
    name = config.get("seed_tasks")
    path = Path(name) if config.seed_tasks else Path(str(resources.files("drover").joinpath(
        "resources", "data", name)))
    tasks = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(path, number, None, f"invalid JSON: {exc.msg}") from None
            if not isinstance(obj.get("instruction"), str) or not obj["instruction"].strip():
                raise InputError(path, number, "instruction", "expected a non-empty string")
            tasks.append(obj)
    if config.clf_seed_tasks_only:
        tasks = [t for t in tasks if t.get("is_classification")]
    if not tasks:
        raise InputError(path, None, None, "no seed tasks")
    return tasks


def _request(config: SelfInstructConfig, text: str, index: int, **decoding: Any) -> Any:
    from drover.completions import Request

    if config.prompt_style == "text":
        return Request.text(text, key=str(index), sample_index=index, **decoding)
    return Request.chat([{"role": "user", "content": text}], key=str(index), sample_index=index, **decoding)


class _Pool:
    """The kept instructions (resumed from the output) and the near-duplicate index."""

    def __init__(self, config: SelfInstructConfig, seeds: list[str], out: JsonlAppender, path: Path):
        self.index = NearDuplicateIndex(config.rouge_threshold)
        for s in seeds:
            self.index.add(s)
        self.machine: list[str] = []
        self.next_request = 0
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    obj = json.loads(line)
                    inst = obj.get("instruction") or obj.get("meta", {}).get("instruction")
                    request = obj.get("request_idx", obj.get("meta", {}).get("request_idx", -1))
                    if inst and inst not in self.machine:
                        self.machine.append(inst)
                        self.index.add(inst)
                    self.next_request = max(self.next_request, int(request) + 1)

    def check(self, inst: str) -> tuple[str | None, float]:
        """(rejection reason or None, best similarity above threshold or 0); adds if novel."""
        match = self.index.add_if_novel(inst)
        if match is None:
            self.machine.append(inst)
            return None, 0.0
        return f"near duplicate (ROUGE-L > {self.index.threshold})", match.score


def run_self_instruct(config: SelfInstructConfig) -> dict[str, Any]:
    seeds = _seed_tasks(config)
    teacher = open_llm(config.teacher, cache_path(config.output, config.run_dir), config.teacher_options)
    mode = config.mode
    summary = Summary(f"generate self-instruct ({mode})", config.output)
    try:
        if mode == "alpaca":
            _alpaca(config, teacher, seeds, summary)
        else:
            _self_instruct(config, teacher, seeds, summary)
    finally:
        close_all(teacher)
    return summary.finish({"teacher": teacher})


def _decoding(config: SelfInstructConfig) -> dict[str, Any]:
    return {"temperature": config.get("temperature"), "top_p": config.get("top_p"),
            "max_tokens": config.get("max_tokens"), "stop": MODE_DEFAULTS[config.mode]["stop"]}


def _max_requests(config: SelfInstructConfig) -> int:
    return config.max_requests or 4 * config.num_instructions


def _alpaca(config: SelfInstructConfig, teacher: Any, seed_rows: list[dict], summary: Summary) -> None:
    seeds = [Task(t["instruction"], t["instances"][0].get("input", ""), t["instances"][0].get("output", ""))
             for t in seed_rows]
    header = Path(str(resources.files("drover").joinpath("resources", "data", "alpaca", "prompt.txt"))).read_text(
        encoding="utf-8")
    k = config.get("num_prompt_instructions")
    with JsonlAppender(config.output) as out, JsonlAppender(sidecar(config.output, "rejected.jsonl")) as rejected:
        pool = _Pool(config, [t.instruction for t in seeds], out, Path(config.output))
        kept = len(pool.machine)
        summary.add("already kept", kept)
        while kept < config.num_instructions and pool.next_request < _max_requests(config):
            first = pool.next_request
            count = min(config.request_batch_size, _max_requests(config) - first)
            requests = []
            for idx in range(first, first + count):
                rng = random.Random(f"{config.seed}-{idx}")
                prompt = encode_alpaca_prompt(header, rng.sample(seeds, min(k, len(seeds))))
                requests.append(_request(config, prompt, idx, **_decoding(config)))
            pool.next_request = first + count
            for idx, completion in zip(range(first, first + count), teacher.run(requests, desc="self-instruct")):
                summary.add("requests")
                if completion.error:
                    summary.add("failed requests (LLM error)")
                    continue
                choice = completion.choices[0]
                for j, item in enumerate(parse_alpaca_tasks(choice.text, k, choice.finish_reason)):
                    summary.add("generated")
                    reason = item.reason if isinstance(item, Rejected) else instruction_problem(
                        item.instruction, BLACKLIST_ALPACA)
                    if reason is None and not item.output.strip():
                        reason = "empty output"
                    score = 0.0
                    if reason is None:
                        reason, score = pool.check(item.instruction)
                    if reason is not None:
                        summary.add(f"rejected: {reason.split(' (')[0]}")
                        text = item.text if isinstance(item, Rejected) else item.instruction
                        rid = f"req{idx}-{j}"
                        if rid not in rejected.done_ids:
                            rejected.write({"id": rid, "reason": reason, "text": text, "rouge_l": score})
                        continue
                    kept += 1
                    summary.add("kept")
                    out.write(_conversation(f"alpaca-{len(pool.machine):06d}", item, "self-instruct:alpaca",
                                            {"request_idx": idx, "teacher": teacher.config.model}))
                    if kept >= config.num_instructions:
                        break
                if kept >= config.num_instructions:
                    break
        if kept < config.num_instructions:
            summary.extra["note"] = (f"stopped after max_requests={_max_requests(config)} teacher calls with "
                                     f"{kept} of {config.num_instructions} instructions kept")


def _conversation(rid: str, task: Task, source: str, meta: dict[str, Any]) -> Conversation:
    from drover.templates import join_instruction

    messages = [Message("user", join_instruction(task.instruction, task.input))]
    if task.output.strip():
        messages.append(Message("assistant", task.output.strip()))
    return Conversation(rid, messages, source, {"instruction": task.instruction, "input": task.input, **meta})


def _self_instruct(config: SelfInstructConfig, teacher: Any, seed_rows: list[dict], summary: Summary) -> None:
    seeds = [t["instruction"] for t in seed_rows]
    header = load_prompt("generate/self_instruct_tasks_clf.txt" if config.clf_seed_tasks_only
                         else "generate/self_instruct_tasks.txt")
    k = config.get("num_prompt_instructions")
    pool_path = sidecar(config.output, "instructions.jsonl")
    with JsonlAppender(pool_path) as instructions, \
            JsonlAppender(sidecar(config.output, "rejected.jsonl")) as rejected:
        pool = _Pool(config, seeds, instructions, pool_path)
        kept = len(pool.machine)
        summary.add("already kept instructions", kept)
        while kept < config.num_instructions and pool.next_request < _max_requests(config):
            first = pool.next_request
            count = min(config.request_batch_size, _max_requests(config) - first)
            requests = []
            for idx in range(first, first + count):
                rng = random.Random(f"{config.seed}-{idx}")
                machine = rng.sample(pool.machine, min(config.num_machine_instructions, len(pool.machine)))
                shown = machine + rng.sample(seeds, min(len(seeds), k - len(machine)))
                rng.shuffle(shown)
                requests.append(_request(config, encode_self_instruct_prompt(header, shown), idx,
                                         **_decoding(config)))
            pool.next_request = first + count
            for idx, completion in zip(range(first, first + count), teacher.run(requests, desc="instructions")):
                summary.add("requests")
                if completion.error:
                    summary.add("failed requests (LLM error)")
                    continue
                choice = completion.choices[0]
                parsed = parse_self_instruct_instructions(choice.text, choice.finish_reason, k + 1)
                items = [parsed] if isinstance(parsed, Rejected) else parsed
                for j, inst in enumerate(items):
                    summary.add("generated")
                    if isinstance(inst, Rejected):
                        reason, text, score = inst.reason, inst.text, 0.0
                    else:
                        text, score = inst, 0.0
                        reason = instruction_problem(inst, BLACKLIST_SELF_INSTRUCT)
                        if reason is None:
                            reason, score = pool.check(inst)
                    if reason is not None:
                        summary.add(f"rejected: {reason.split(' (')[0]}")
                        rid = f"req{idx}-{j}"
                        if rid not in rejected.done_ids:
                            rejected.write({"id": rid, "reason": reason, "text": text, "rouge_l": score})
                        continue
                    kept += 1
                    summary.add("kept instructions")
                    instructions.write({"id": f"si-{len(pool.machine):06d}", "instruction": inst, "request_idx": idx})
                    if kept >= config.num_instructions:
                        break
                if kept >= config.num_instructions:
                    break
    _instances(config, teacher, pool_path, summary)


def _instances(config: SelfInstructConfig, teacher: Any, pool_path: Path, summary: Summary) -> None:
    """Classification-or-not, then output-first / input-first instances for every kept instruction."""
    tasks = [json.loads(line) for line in pool_path.read_text(encoding="utf-8").splitlines() if line.strip()] \
        if pool_path.exists() else []
    clf_template = load_prompt("generate/self_instruct_is_clf.txt")
    requests = [_request(config, f"{clf_template} {t['instruction'].strip()}\nIs it classification?", 0,
                         temperature=0.0, max_tokens=3, stop=["\n", "Task"]) for t in tasks]
    is_clf = {}
    for task, completion in zip(tasks, teacher.run(requests, desc="is it classification?")):
        verdict = None if completion.error else parse_is_classification(completion.text)
        if verdict is None:
            summary.add("classification answer unreadable (taken as no)")
        is_clf[task["id"]] = bool(verdict)
    output_first = load_prompt("generate/self_instruct_output_first.txt")
    input_first = load_prompt("generate/self_instruct_input_first.txt")
    with JsonlAppender(config.output) as out, JsonlAppender(sidecar(config.output, "tasks.jsonl")) as done:
        todo = [t for t in tasks if t["id"] not in done.done_ids]
        requests = []
        for t in todo:
            clf = is_clf[t["id"]]
            template = output_first if clf else input_first
            requests.append(_request(config, f"{template} {t['instruction'].strip()}\n", 0, temperature=0.0,
                                     max_tokens=300 if clf else 350,
                                     stop=[f"Example {config.max_instances + 1}", "Task:"]))
        for task, completion in zip(todo, teacher.run(requests, desc="instances")):
            if completion.error:
                summary.add("failed instance requests (LLM error)")
                continue
            choice = completion.choices[0]
            clf = is_clf[task["id"]]
            parse = parse_classification_instances if clf else parse_generation_instances
            instances = parse(choice.text, task["instruction"], choice.finish_reason)
            rng = random.Random(f"{config.seed}-{task['id']}")
            instances = rng.sample(instances, min(len(instances), config.max_instances))
            for i, inst in enumerate(instances):
                rid = f"{task['id']}-{i}"
                if rid not in out.done_ids:
                    out.write(_conversation(rid, inst, "self-instruct", {
                        "task_id": task["id"], "is_classification": clf, "request_idx": task["request_idx"],
                        "teacher": teacher.config.model}))
                summary.add("instances")
            if not instances:
                summary.add("tasks without valid instances")
            done.write({"id": task["id"], "is_classification": clf, "instances": len(instances)})
    summary.extra["classification tasks"] = sum(is_clf.values())
    summary.extra["instructions in pool"] = len(tasks)
