"""BIG-Bench Hard (Suzgun et al. 2022): 27 tasks, 3-shot, chain-of-thought and direct.

Protocol: allenai/open-instruct `eval/bbh/run_eval.py`, main() and eval_hf_model(), at the
Tülu-1-era commit cd06c6fb0 (July 2023).
- Prompts: the shipped `cot-prompts/<task>.txt` without their first two lines (canary,
  "-----"), stripped. Direct: the prompt split at "\\n\\n"; every field starting "Q:" becomes
  its question (up to "\\nA:") + "\\nA: " + the text after its last "So the answer is"
  (period kept, e.g. "(A).").
- Query: "<prompt>\\n\\nQ: <input>" and the cue "\\nA:" (chat: one user turn, the assistant
  turn starts "A:"). Greedy, 512 new tokens, stopped at the first blank line (the reference
  stops direct runs there and cuts CoT outputs there afterwards; the verdicts are the same
  except for an output that starts with a blank line).
- Prediction (CoT and direct alike): the output stripped and cut at its first blank line,
  then the text between "So the answer is " and the next period; else that paragraph.
  Verdict: `evaluate`'s exact_match ignoring case and punctuation (`drover.metrics.extract`).
- 40 examples per task (`random.sample` after `random.seed(42)`); the score is the mean of
  the per-task accuracies. Deliberate difference: the reference draws the tasks' samples
  from one generator in `glob` (file-system) order, which is not reproducible across
  machines; drover seeds one generator per task (`--seed`), in sorted order.
Deliberate, optional difference: `match=lenient` reads the answer after any "the answer
is" to the end of its line and accepts "X" or "(X) text" for an option "(X)" while keeping
punctuation (Dyck answers). Recorded in settings.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from drover.errors import ConfigError, did_you_mean
from drover.evaluate.task import EvalContext, Task, TaskResult, resource_path, subsample
from drover.metrics.classification import mean
from drover.metrics.extract import bbh_prediction, bbh_reference_correct, lenient_bbh_correct, lenient_bbh_prediction

# match setting -> (extract a prediction from the output, is it correct for the target)
MATCHERS: dict[str, tuple[Callable[[str], str], Callable[[str, str], bool]]] = {
    "exact": (bbh_prediction, bbh_reference_correct),          # open-instruct (the default)
    "lenient": (lenient_bbh_prediction, lenient_bbh_correct),  # drover
}


def task_names() -> list[str]:
    return sorted(p.stem for p in resource_path("data", "bbh", "bbh").glob("*.json"))


def base_prompt(task: str, cot: bool) -> str:
    lines = resource_path("data", "bbh", "cot-prompts", f"{task}.txt").read_text(encoding="utf-8").splitlines(True)
    text = "".join(lines[2:])
    if cot:
        return text.strip()
    fields = []
    for field in text.split("\n\n"):
        if field.startswith("Q:"):
            if "So the answer is" not in field or "\nA:" not in field:
                raise ConfigError(f"bbh: {task}.txt has an exemplar without 'So the answer is' or '\\nA:'")
            field = field.split("\nA:")[0].strip() + "\nA: " + field.split("So the answer is")[-1].strip()
        fields.append(field)
    return "\n\n".join(fields).strip()


@dataclass
class BBHSettings:
    cot: bool = True
    limit: int | None = 40  # examples per task
    max_tokens: int = 512
    tasks: list[str] | None = None  # None = all 27
    match: str = "exact"  # exact (open-instruct) | lenient (drover)


class BBH(Task):
    primary_metric = "accuracy"
    Settings = BBHSettings
    shipped = ("data/bbh/bbh", "data/bbh/cot-prompts")

    def __init__(self, name: str, title: str, cot: bool):
        self.name, self.title, self.cot = name, title, cot

    def default_settings(self) -> BBHSettings:
        return BBHSettings(cot=self.cot)

    def run(self, ctx: EvalContext, settings: BBHSettings) -> TaskResult:
        if settings.match not in MATCHERS:
            raise ConfigError(f"{self.name}: unknown match={settings.match!r}{did_you_mean(settings.match, MATCHERS)}; "
                              f"choose one of: {', '.join(MATCHERS)}")
        extract, correct_for = MATCHERS[settings.match]
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
        requests = [ctx.fmt.request(p, key=eid, temperature=0.0, max_tokens=settings.max_tokens, stop=["\n\n"])
                    for eid, _, _, p in items]
        outputs = ctx.generate(requests, desc=self.name)
        examples, per_task = [], {}
        for (eid, task, target, prompt), out in zip(items, outputs):
            prediction = extract(out.text)
            correct = correct_for(prediction, target)
            per_task.setdefault(task, []).append(correct)
            examples.append({"id": eid, "task": task, "prompt": prompt, "output": out.text,
                             "prediction": prediction, "reference": target, "correct": correct})
        task_acc = {t: 100 * mean(v) for t, v in per_task.items()}
        metrics = {"accuracy": mean(task_acc.values()),
                   "accuracy_micro": 100 * mean(e["correct"] for e in examples)}
        return TaskResult(metrics, examples, {"task": task_acc})


COT = BBH("bbh_cot", "BBH CoT", True)
DIRECT = BBH("bbh_direct", "BBH Direct", False)
