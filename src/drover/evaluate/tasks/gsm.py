"""GSM8K (Cobbe et al. 2021), 8-shot chain-of-thought and direct, as the Tülu evaluation.

Protocol: allenai/open-instruct `eval/gsm/run_eval.py`, main(), at the Tülu-1-era commit
cd06c6fb0 (July 2023), exemplars from its `eval/gsm/examplars.py`.
- Data: the 1,319 test problems; `random.seed(42)` then `random.sample(test, 200)` (the
  paper's 200; `--seed` is that seed); with fewer than 8 shots, the exemplars are
  `random.sample`d from the same generator afterwards, as the reference does.
- Prompt: "Answer the following questions.\\n\\n" + exemplars joined by "\\n\\n" + "\\n\\n" +
  "Question: <q>" and the cue "\\nAnswer:" (chat: one user turn, the assistant turn starts
  "Answer:"). CoT exemplars are "Question: ..\\nAnswer: <cot> So the answer is N."; direct
  ones keep the reference's own text "Quesion: ..\\nAnswer: N" (its typo included). 0-shot:
  "Answer the following question.\\n\\n".
- Decoding: greedy, 512 new tokens, stop at the first newline, for raw text and chat alike
  (the Tülu-1 script; open-instruct dropped the chat stop in October 2023:
  `stop_at_newline=false`).
- Answer: one pass of `(\\d),(\\d)` comma removal, the last `[-+]?\\d*\\.\\d+|\\d+` (else the
  whole output), exact match with `evaluate`'s exact_match ignoring case and punctuation
  (`drover.metrics.extract`). So "12.00" != "12", ".80" == "80", "-21" reads as "21".
Deliberate, optional difference: `match=value` extracts the last signed number (commas only
inside thousands groups) and compares by value (`18.00 == 18`). Recorded in settings.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

from drover.errors import ConfigError, did_you_mean
from drover.evaluate.task import EvalContext, Task, TaskResult, resource_path, resource_text
from drover.metrics.classification import mean
from drover.metrics.extract import GSM_MATCHERS as MATCHERS
from drover.metrics.extract import gsm_reference
from drover.records import iter_json_lines


def exemplar_text(example: dict, cot: bool) -> str:
    if cot:
        return "Question: " + example["question"] + "\n" + "Answer: " + example["cot_answer"]
    return "Quesion: " + example["question"] + "\n" + "Answer: " + example["short_answer"]  # sic, as the reference


def prompt_prefix(exemplars: list[dict], cot: bool) -> str:
    if not exemplars:
        return "Answer the following question.\n\n"
    return "Answer the following questions.\n\n" + "\n\n".join(exemplar_text(e, cot) for e in exemplars) + "\n\n"


def sample_problems(rows: list, limit: int | None, shots: int, seed: int) -> tuple[list, list[dict]]:
    """The reference's draws from one seeded generator: test problems, then exemplars."""
    rng = random.Random(seed)
    if limit and len(rows) > limit:
        rows = rng.sample(rows, limit)
    exemplars = json.loads(resource_text("prompts", "eval", "gsm_exemplars.json"))["exemplars"]
    if shots and len(exemplars) > shots:
        exemplars = rng.sample(exemplars, shots)
    return rows, exemplars if shots else []


@dataclass
class GSMSettings:
    cot: bool = True
    limit: int | None = 200
    max_tokens: int = 512
    shots: int = 8
    match: str = "exact"  # exact (open-instruct) | value (drover)
    stop_at_newline: bool = True  # Tülu-1: also for chat formats


class GSM(Task):
    primary_metric = "accuracy"
    Settings = GSMSettings
    shipped = ("data/gsm8k/test.jsonl", "prompts/eval/gsm_exemplars.json")

    def __init__(self, name: str, title: str, cot: bool):
        self.name, self.title, self.cot = name, title, cot

    def default_settings(self) -> GSMSettings:
        return GSMSettings(cot=self.cot)

    def run(self, ctx: EvalContext, settings: GSMSettings) -> TaskResult:
        if settings.match not in MATCHERS:
            raise ConfigError(f"{self.name}: unknown match={settings.match!r}{did_you_mean(settings.match, MATCHERS)}; "
                              f"choose one of: {', '.join(MATCHERS)}")
        extract, correct_for = MATCHERS[settings.match]
        path = resource_path("data", "gsm8k", "test.jsonl")
        rows = [(f"test/{line}", obj) for line, obj in iter_json_lines(path)]
        rows, exemplars = sample_problems(rows, settings.limit, settings.shots, ctx.options.seed)
        prefix = prompt_prefix(exemplars, settings.cot)
        prompts = [ctx.fmt.render(prefix + "Question: " + obj["question"].strip(), chat_cue="Answer:",
                                  raw_cue="\nAnswer:") for _, obj in rows]
        stop = ["\n"] if settings.stop_at_newline or not ctx.fmt.is_chat else None
        requests = [ctx.fmt.request(p, key=rid, temperature=0.0, max_tokens=settings.max_tokens, stop=stop)
                    for p, (rid, _) in zip(prompts, rows)]
        outputs = ctx.generate(requests, desc=self.name)
        examples = []
        for (rid, obj), prompt, out in zip(rows, prompts, outputs):
            reference = gsm_reference(obj["answer"])
            prediction = extract(out.text)
            examples.append({"id": rid, "prompt": prompt, "output": out.text, "prediction": prediction,
                             "reference": reference, "correct": correct_for(prediction, reference)})
        return TaskResult({"accuracy": 100 * mean(e["correct"] for e in examples)}, examples)


COT = GSM("gsm_cot", "GSM CoT", True)
DIRECT = GSM("gsm_direct", "GSM Direct", False)
