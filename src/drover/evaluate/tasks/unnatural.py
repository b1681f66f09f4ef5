"""Unnatural Instructions (Honovich et al. 2022): ROUGE-L bucketed by reference length, as
Figure 6 of "Instruction Tuning with GPT-4" (Peng et al. 2023).

Protocol: the paper's §4.3 (no code released): 9K instances sampled at random from
`core_data.jsonl`, ROUGE-L F per ground-truth length bucket; the ROUGE-L is google-research
`rouge-score` (rouge_scorer.py, `use_stemmer=True`), which drover's `metrics.rouge` equals
(tests/test_rouge.py). Deliberate difference: the paper does not give its sampling seed.

Data from a user-given file (`--data-dir` holding `core_data.jsonl`, the official format:
one instruction per line with `instances: [{instruction_with_input, constraints, output}]`),
one example per instance; a seeded random sample of 9,000 of them
(`random.Random(--seed).sample`), as the paper sampled 9,000 at random; `--limit N` changes N.
The user turn is `instruction_with_input` followed by the constraints. Greedy, 256 new
tokens. ROUGE-L F against the reference (Porter stemming, as the Super-NI metric the
Unnatural Instructions paper used), in percent, overall and per ground-truth length in
words: 0-2, 3-5, 6-10, >10.
"""

from __future__ import annotations

from dataclasses import dataclass

from drover.errors import ConfigError, InputError
from drover.evaluate.task import EvalContext, Task, TaskResult, require_data_dir, subsample
from drover.metrics.classification import grouped_mean, mean
from drover.metrics.rouge import rouge_l
from drover.records import iter_json_lines

BUCKETS = ("0-2", "3-5", "6-10", ">10")


def length_bucket(reference: str) -> str:
    words = len(reference.split())
    return "0-2" if words <= 2 else "3-5" if words <= 5 else "6-10" if words <= 10 else ">10"


@dataclass
class UnnaturalSettings:
    limit: int | None = 9000  # the paper's random sample (its plots/data/*_h9000_*.json)
    max_tokens: int = 256
    file: str = "core_data.jsonl"
    use_stemmer: bool = True


class Unnatural(Task):
    name = "unnatural"
    title = "Unnatural Instr. ROUGE-L"
    primary_metric = "rougeL"
    Settings = UnnaturalSettings
    uses = ("data_dir",)

    def run(self, ctx: EvalContext, settings: UnnaturalSettings) -> TaskResult:
        root = require_data_dir(ctx.options, self.name, f"the Unnatural Instructions {settings.file}")
        path = root / settings.file if root.is_dir() else root
        if not path.exists():
            raise ConfigError(f"unnatural: {path} not found")
        items = []
        for line, obj in iter_json_lines(path):
            instances = obj.get("instances") if isinstance(obj, dict) else None
            if not isinstance(instances, list):
                raise InputError(path, line, "instances", "expected a list (official Unnatural Instructions format)")
            for j, inst in enumerate(instances):
                if "instruction_with_input" not in inst or "output" not in inst:
                    raise InputError(path, line, f"instances[{j}]", "needs instruction_with_input and output")
                user = inst["instruction_with_input"].strip()
                if inst.get("constraints"):
                    user += "\n" + inst["constraints"].strip()
                items.append((f"{line}/{j}", user, inst["output"]))
        items = subsample(items, settings.limit, ctx.options.seed)
        prompts = [ctx.fmt.render(user) for _, user, _ in items]
        requests = [ctx.fmt.request(p, key=i, temperature=0.0, max_tokens=settings.max_tokens)
                    for (i, _, _), p in zip(items, prompts)]
        outputs = ctx.generate(requests, desc=self.name)
        examples = []
        for (iid, _, reference), prompt, out in zip(items, prompts, outputs):
            prediction = out.text.strip()
            examples.append({"id": iid, "prompt": prompt, "prediction": prediction, "reference": reference,
                             "bucket": length_bucket(reference),
                             "rougeL": 100 * rouge_l(prediction, reference, use_stemmer=settings.use_stemmer)})
        per_bucket = grouped_mean((e["bucket"], e["rougeL"]) for e in examples)
        counts = {b: sum(e["bucket"] == b for e in examples) for b in BUCKETS}
        metrics = {"rougeL": mean(e["rougeL"] for e in examples)}
        metrics.update({f"rougeL/{b}": per_bucket[b] for b in BUCKETS if b in per_bucket})
        return TaskResult(metrics, examples, {"length_bucket": {b: {"rougeL": per_bucket.get(b), "n": counts[b]}
                                                                for b in BUCKETS}})


TASK = Unnatural()
