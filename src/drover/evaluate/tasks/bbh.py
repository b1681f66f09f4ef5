"""BIG-Bench Hard (Suzgun et al. 2022): 27 tasks, 3-shot, chain-of-thought and direct.

Prompts: the shipped `cot-prompts/<task>.txt` (canary header removed). The direct variant
replaces each exemplar's "Let's think step by step. ... So the answer is X." by "X."
Query: "<prompt>\\n\\nQ: <input>" with the cue "A:" (with CoT, the model is expected to
reason then write "So the answer is ..."). Greedy, 512 new tokens; raw text stops at the
first blank line, chat formats at the end of the turn, as open-instruct.
Prediction: the text after "the answer is" (else the first line), compared to the target
after case and whitespace normalization (`drover.metrics.extract.bbh_match`). 40
examples per task by default (seeded), as the Tülu evaluation; the score is the mean
of the per-task accuracies.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from drover.evaluate.task import EvalContext, Task, TaskResult, resource_path, subsample
from drover.metrics.classification import mean
from drover.metrics.extract import answer_after_phrase, bbh_match

_COT_ANSWER = re.compile(r"A: Let's think step by step\.\s.*?So the answer is (.*?)\.?\n*$", re.DOTALL)


def task_names() -> list[str]:
    return sorted(p.stem for p in resource_path("data", "bbh", "bbh").glob("*.json"))


def base_prompt(task: str, cot: bool) -> str:
    text = resource_path("data", "bbh", "cot-prompts", f"{task}.txt").read_text(encoding="utf-8")
    text = text.split("-----\n", 1)[1].strip()
    if cot:
        return text
    blocks = text.split("\n\nQ: ")
    direct = [blocks[0]]
    for block in blocks[1:]:
        question, sep, answer = block.partition("\nA: ")
        match = _COT_ANSWER.match("A: " + answer.strip() + "\n")
        direct.append(question + sep + (match.group(1).strip() + "." if match else answer))
    return "\n\nQ: ".join(direct)


@dataclass
class BBHSettings:
    cot: bool = True
    limit: int | None = 40  # examples per task
    max_tokens: int = 512
    tasks: list[str] | None = None  # None = all 27


class BBH(Task):
    primary_metric = "accuracy"
    Settings = BBHSettings

    def __init__(self, name: str, title: str, cot: bool):
        self.name, self.title, self.cot = name, title, cot

    def default_settings(self) -> BBHSettings:
        return BBHSettings(cot=self.cot)

    def run(self, ctx: EvalContext, settings: BBHSettings) -> TaskResult:
        names = settings.tasks or task_names()
        items = []
        for task in names:
            path = resource_path("data", "bbh", "bbh", f"{task}.json")
            examples = json.loads(path.read_text(encoding="utf-8"))["examples"]
            indexed = subsample(list(enumerate(examples)), settings.limit, ctx.options.seed)
            prompt_base = base_prompt(task, settings.cot)
            for i, example in indexed:
                user = prompt_base + "\n\nQ: " + example["input"]
                prompt = ctx.fmt.render(user, chat_cue="A:", raw_cue="\nA:")
                items.append((f"{task}/{i}", task, example["target"], prompt))
        stop = None if ctx.fmt.is_chat else ["\n\n"]
        requests = [ctx.fmt.request(p, key=eid, temperature=0.0, max_tokens=settings.max_tokens, stop=stop)
                    for eid, _, _, p in items]
        outputs = ctx.generate(requests, desc=self.name)
        examples, per_task = [], {}
        for (eid, task, target, prompt), out in zip(items, outputs):
            prediction = answer_after_phrase(out.text) if settings.cot else out.text.strip().split("\n")[0].strip()
            if not settings.cot and prediction.lower().startswith("the answer is"):
                prediction = answer_after_phrase(out.text)
            if not settings.cot and prediction.endswith("."):
                prediction = prediction[:-1]
            correct = bbh_match(prediction, target)
            per_task.setdefault(task, []).append(correct)
            examples.append({"id": eid, "task": task, "prompt": prompt, "output": out.text,
                             "prediction": prediction, "reference": target, "correct": correct})
        task_acc = {t: 100 * mean(v) for t, v in per_task.items()}
        metrics = {"accuracy": mean(task_acc.values()),
                   "accuracy_micro": 100 * mean(e["correct"] for e in examples)}
        return TaskResult(metrics, examples, {"task": task_acc})


COT = BBH("bbh_cot", "BBH CoT", True)
DIRECT = BBH("bbh_direct", "BBH Direct", False)
