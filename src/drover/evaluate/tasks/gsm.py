"""GSM8K (Cobbe et al. 2021), 8-shot chain-of-thought and direct, as the Tülu evaluation.

Exemplars: the 8 CoT exemplars of Wei et al. 2022 (`resources/prompts/eval/gsm_exemplars.json`);
the direct variant keeps only their final "The answer is N." Prompt: "Answer the following
questions.\\n\\n" + "Question: ...\\nAnswer: ..." exemplars + "Question: <q>" and the cue
"Answer:". Greedy decoding, 512 new tokens; raw text stops at the first newline (the
exemplar answers are one line), chat formats at the end of the turn, as open-instruct.
Prediction = the last number in the output (commas removed), compared by value with the
number after "####" (`drover.metrics.extract`). A seeded subsample of 200 test problems
by default, as the paper.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from drover.evaluate.task import EvalContext, Task, TaskResult, resource_path, resource_text, subsample
from drover.metrics.classification import mean
from drover.metrics.extract import gsm_reference, last_number, numbers_equal
from drover.records import iter_json_lines


def exemplar_block(cot: bool) -> str:
    data = json.loads(resource_text("prompts", "eval", "gsm_exemplars.json"))["exemplars"]
    shots = [f"Question: {e['question']}\nAnswer: " + (e["cot_answer"] if cot else f"The answer is {e['short_answer']}.")
             for e in data]
    return "Answer the following questions.\n\n" + "\n\n".join(shots) + "\n\n"


@dataclass
class GSMSettings:
    cot: bool = True
    limit: int | None = 200
    max_tokens: int = 512
    shots: int = 8


class GSM(Task):
    primary_metric = "accuracy"
    Settings = GSMSettings

    def __init__(self, name: str, title: str, cot: bool):
        self.name, self.title, self.cot = name, title, cot

    def default_settings(self) -> GSMSettings:
        return GSMSettings(cot=self.cot)

    def run(self, ctx: EvalContext, settings: GSMSettings) -> TaskResult:
        path = resource_path("data", "gsm8k", "test.jsonl")
        rows = [(f"test/{line}", obj) for line, obj in iter_json_lines(path)]
        rows = subsample(rows, settings.limit, ctx.options.seed)
        prefix = exemplar_block(settings.cot) if settings.shots else "Answer the following questions.\n\n"
        if settings.shots and settings.shots < 8:
            blocks = prefix.split("\n\n")
            prefix = "\n\n".join(blocks[: 1 + settings.shots]) + "\n\n"
        prompts = [ctx.fmt.render(prefix + "Question: " + obj["question"].strip(), chat_cue="Answer:", raw_cue="\nAnswer:")
                   for _, obj in rows]
        stop = None if ctx.fmt.is_chat else ["\n"]
        requests = [ctx.fmt.request(p, key=rid, temperature=0.0, max_tokens=settings.max_tokens, stop=stop)
                    for p, (rid, _) in zip(prompts, rows)]
        outputs = ctx.generate(requests, desc=self.name)
        examples = []
        for (rid, obj), prompt, out in zip(rows, prompts, outputs):
            reference = gsm_reference(obj["answer"])
            prediction = last_number(out.text)
            correct = numbers_equal(prediction, reference)
            examples.append({"id": rid, "prompt": prompt, "output": out.text, "prediction": prediction,
                             "reference": reference, "correct": correct})
        return TaskResult({"accuracy": 100 * mean(e["correct"] for e in examples)}, examples)


COT = GSM("gsm_cot", "GSM CoT", True)
DIRECT = GSM("gsm_direct", "GSM Direct", False)
