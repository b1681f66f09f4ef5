"""Super-NaturalInstructions (Wang et al. 2022) test tasks, 0-shot and 2-shot, ROUGE-L.

Protocol: yizhongw/Tk-Instruct `src/ni_collator.py` (the encoding) and
`src/compute_metrics.py` (rouge-score RougeScorer(["rougeL"], use_stemmer=True) for English,
max over references, exact match after SQuAD normalisation), as allenai/open-instruct
`eval/superni/` (Tülu-1-era commit cd06c6fb0) runs them; `use_stemmer=false` is an option.

As Tk-Instruct and the Tuna paper: the 119 tasks of the default test split (shipped list),
the first 100 instances of each, read from a user-given checkout (`--data-dir` holding
`tasks/<name>.json` in the official format). Prompt (Tk-Instruct encoding):
"Definition: <definition>\\n\\n", for 2-shot " Positive Example i -\\nInput: ...\\n Output: ...\\n\\n",
then "Now complete the following example -\\nInput: <input>\\nOutput: " (a period added
after fields that lack final punctuation). Greedy, 128 new tokens, first line. Metric:
the official `compute_metrics` for English: ROUGE-L F (Porter stemming) against the
best of the references, averaged over instances, in percent; plus exact match.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from pathlib import Path

from drover.errors import ConfigError, InputError
from drover.evaluate.task import EvalContext, Task, TaskResult, require_data_dir, resource_path
from drover.metrics.classification import grouped_mean, mean
from drover.metrics.rouge import rouge_l
from drover.metrics.squad import exact_match_score, metric_max_over_ground_truths


def _close(text: str) -> str:
    return text if text and text[-1] in string.punctuation else text + "."


def encode(task: dict, instance: dict, shots: int) -> str:
    definition = task["Definition"][0] if isinstance(task["Definition"], list) else task["Definition"]
    text = "Definition: " + _close(definition.strip()) + "\n\n"
    for i, example in enumerate(task.get("Positive Examples", [])[:shots]):
        text += f" Positive Example {i + 1} -\n"
        text += _close(f"Input: {example['input'].strip()}") + "\n"
        text += _close(f" Output: {example['output'].strip()}") + "\n\n"
    text += "Now complete the following example -\n"
    text += _close(f"Input: {instance['input'].strip()}") + "\n"
    return text + "Output: "


def load_task(path: Path) -> dict:
    try:
        task = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise InputError(path, None, None, f"invalid JSON: {exc}") from None
    for key in ("Definition", "Instances"):
        if key not in task:
            raise InputError(path, None, key, "missing (expected a Super-NI task file)")
    return task


def superni_rouge(prediction: str, references: list[str], use_stemmer: bool = True) -> float:
    return metric_max_over_ground_truths(lambda p, r: rouge_l(p, r, use_stemmer=use_stemmer), prediction, references)


@dataclass
class SuperNISettings:
    shots: int = 0
    limit: int | None = 100  # instances per task
    max_tokens: int = 128
    use_stemmer: bool = True  # the official compute_metrics stems (rouge-score's Porter stemmer, nltk)


class SuperNI(Task):
    primary_metric = "rougeL"
    Settings = SuperNISettings
    uses = ("data_dir",)
    shipped = ("data/superni/splits/default/test_tasks.txt",)

    def __init__(self, name: str, title: str, shots: int):
        self.name, self.title, self.shots = name, title, shots

    def default_settings(self) -> SuperNISettings:
        return SuperNISettings(shots=self.shots)

    def run(self, ctx: EvalContext, settings: SuperNISettings) -> TaskResult:
        root = require_data_dir(ctx.options, self.name, "a Super-NaturalInstructions checkout (tasks/<name>.json)")
        names = resource_path("data", "superni", "splits", "default", "test_tasks.txt").read_text().split()
        tasks_dir = root / "tasks" if (root / "tasks").is_dir() else root
        present = [n for n in names if (tasks_dir / f"{n}.json").exists()]
        if not present:
            raise ConfigError(f"{self.name}: none of the 119 test tasks found under {tasks_dir}")
        items = []
        for name in present:
            task = load_task(tasks_dir / f"{name}.json")
            instances = task["Instances"][: settings.limit]
            for instance in instances:
                outputs = instance["output"] if isinstance(instance["output"], list) else [instance["output"]]
                prompt = ctx.fmt.render(encode(task, instance, settings.shots))
                items.append((str(instance.get("id", f"{name}-{len(items)}")), name, prompt, outputs))
        requests = [ctx.fmt.request(p, key=i, temperature=0.0, max_tokens=settings.max_tokens, stop=["\n"])
                    for i, _, p, _ in items]
        outputs = ctx.generate(requests, desc=self.name)
        examples = []
        for (iid, name, prompt, refs), out in zip(items, outputs):
            prediction = out.text.strip().split("\n")[0].strip()
            examples.append({"id": iid, "task": name, "prompt": prompt, "prediction": prediction, "reference": refs,
                             "rougeL": 100 * superni_rouge(prediction, refs, settings.use_stemmer),
                             "exact_match": 100 * metric_max_over_ground_truths(exact_match_score, prediction, refs)})
        metrics = {"rougeL": mean(e["rougeL"] for e in examples),
                   "exact_match": mean(e["exact_match"] for e in examples)}
        per_task = grouped_mean((e["task"], e["rougeL"]) for e in examples)
        return TaskResult(metrics, examples, {"task": per_task},
                          {"tasks_found": len(present), "tasks_missing": len(names) - len(present)})


ZERO_SHOT = SuperNI("superni_0shot", "Super-NI 0-shot", 0)
TWO_SHOT = SuperNI("superni_2shot", "Super-NI 2-shot", 2)
