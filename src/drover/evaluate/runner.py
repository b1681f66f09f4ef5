"""Run benchmark tasks into a run directory and print the Tülu Table-8-style table.

Per task and model it writes, through `drover.results` (the one result writer),
`RUN/eval/<model-slug>/<task>.json`:

    {"kind": "benchmark", "name", "task", "title", "model": {"label", "spec", "fingerprint"},
     "key", "metrics": {name: float | null}, "primary_metric", "higher_is_better",
     "breakdown", "settings", "n_examples", "failures": 0, "examples_file",
     "usage": {"prompt_tokens", "completion_tokens", "cost"}, "time_s", "provenance"}

and `RUN/eval/<model-slug>/<task>.examples.jsonl` (id, the exact prompt, prediction,
reference, score per example). Results live per model, so base and tuned models
evaluated into one run sit side by side. A task is skipped only when a result with the
same `key` exists: the digest of the model's content identity (`LLMConfig.identity()`:
the model directory's fingerprint, or the endpoint's URL and served name), the task's
code (with the metric modules it imports) and data inputs (shipped and user-given), and
its resolved settings. Retraining a model in place therefore
re-runs its benchmarks; a re-run with nothing changed is free, and an interrupted task
re-runs from the LLM cache, paying nothing twice.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from drover.evaluate.prompting import PromptFormatter, prompt_text, resolve_chat_format
from drover.evaluate.registry import TASKS
from drover.evaluate.task import EvalContext, EvalOptions, Task
from drover.errors import DroverError
from drover.identity import digest, module_fingerprint, path_fingerprint
from drover.results import find_result, model_label, model_slug, result_path, write_result
from drover.runs import RunDir, report_stage


def task_settings(task: Task, options: EvalOptions) -> dict[str, Any]:
    """Everything that determines a task's result, as recorded (and compared on resume)."""
    settings = dataclasses.asdict(task.settings(options))
    settings["chat_format"] = options.chat_format
    settings["seed"] = options.seed
    for name in getattr(task, "uses", ()):
        settings[name] = getattr(options, name)
    return json.loads(json.dumps(settings, default=str))


def task_inputs(task: Task, options: EvalOptions) -> dict[str, str]:
    """Content fingerprints of what a task reads besides the model: the protocol (the task's
    module with the metric and parser modules it imports, the shared prompt formatting and
    the shipped chat template it renders with, the shipped data and prompts it declares in
    `Task.shipped`) and the user-given paths among the options it uses (data dir, classifier)."""
    from drover.evaluate.task import resource_path
    from drover.templates import CHAT_TEMPLATES, chat_template_text

    inputs = {"code": module_fingerprint(type(task).__module__),
              "prompting": module_fingerprint("drover.evaluate.prompting")}
    if options.chat_format in CHAT_TEMPLATES:  # a shipped template renders the prompts ("model": the model's own)
        inputs["chat_format"] = digest(chat_template_text(options.chat_format))
    for rel in task.shipped:
        inputs[f"shipped:{rel}"] = path_fingerprint(resource_path(*rel.split("/")))
    for name in getattr(task, "uses", ()):
        value = getattr(options, name)
        if isinstance(value, str) and value:
            for part, path in _named_paths(value).items():
                inputs[f"{name}.{part}" if part else name] = path_fingerprint(path)
    return inputs


def _named_paths(value: str) -> dict[str, str]:
    """The local paths an option names: the value itself, `hf:PATH`, or each SPEC of
    `NAME=SPEC,NAME=SPEC` (TruthfulQA's truth=...,info=... judges), by NAME ("" for a lone one)."""
    if Path(value).exists():
        return {"": value}
    parts = dict(p.split("=", 1) for p in value.split(",") if "=" in p) if "=" in value else {"": value}
    named = {k: v.removeprefix("hf:") for k, v in parts.items()}
    return {k: v for k, v in named.items() if v and Path(v).exists()}


def result_key(model_identity: dict[str, Any], task: Task, options: EvalOptions) -> str:
    return digest({"model": model_identity, "task": task.name, "inputs": task_inputs(task, options),
                   "settings": task_settings(task, options)})


@dataclasses.dataclass
class ModelRef:
    """The evaluated model as results name it: a readable label, the spec as given, its identity."""

    label: str
    spec: str
    identity: dict[str, Any]

    @property
    def fingerprint(self) -> str:
        return digest(self.identity)

    @property
    def source(self) -> str | None:
        """Where the model lives (a resolved directory, or an endpoint's URL#name), to tell a model
        retrained in place (same source: its results are replaced) from another model under the
        same label (refused). None for a recipe's service: its port changes every run, and its
        identity is declared (the recipe's stage key decides what re-runs)."""
        if "endpoint" in self.identity:
            return None
        if "base_url" in self.identity:
            return f"{self.identity['base_url']}#{self.identity.get('model')}"
        path = Path(self.spec.removeprefix("hf:"))
        return str(path.resolve()) if path.is_dir() else self.spec

    def to_dict(self) -> dict[str, Any]:
        out = {"label": self.label, "spec": self.spec, "fingerprint": self.fingerprint}
        return {**out, "source": self.source} if self.source else out


def check_label(run: RunDir, model: ModelRef, names: list[str]) -> None:
    """Refuse, before any request, to replace the results of another model that has this label
    (two endpoints serving one name, two directories of one name): results live per label."""
    from drover.errors import ConfigError
    from drover.results import read_result

    for name in names:
        path = result_path(run.root, model.label, name)
        if not path.is_file():
            continue
        try:
            old = (read_result(path).get("model") or {}).get("source")
        except DroverError:
            continue  # a torn or foreign file is recomputed, then replaced
        if old and model.source and old != model.source:
            raise ConfigError(f"{path}: holds the result of {old} under the label {model.label!r}, and {model.source} "
                              f"is another model; give it its own --name (or --force to replace that result)")


def _usage(llm: Any) -> dict[str, float]:
    stats = getattr(llm, "stats", None)
    if stats is None:
        return {"prompt_tokens": 0, "completion_tokens": 0, "cost": 0.0}
    return {"prompt_tokens": stats.prompt_tokens, "completion_tokens": stats.completion_tokens, "cost": stats.cost}


def run_tasks(llm: Any, fmt: PromptFormatter, model: ModelRef, names: list[str], run: RunDir, options: EvalOptions,
              force: bool = False, log: Callable[[str], None] = print,
              provenance: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Run (or skip, when done from the same inputs and settings) each task; returns their records."""
    if not force:
        check_label(run, model, names)
    run.ensure()
    results = []
    for name in names:
        task = TASKS.get(name)
        settings = task.settings(options)
        recorded = task_settings(task, options)
        key = result_key(model.identity, task, options)
        previous = None if force else find_result(run.root, model.label, name, key)
        if previous is not None:
            log(f"eval {name}: done already for {model.label} with the same model, data and settings; skipping")
            report_stage(outputs=[result_path(run.root, model.label, name)])
            results.append(previous)
            continue
        log(f"eval {name}: running on {model.label}")
        before = _usage(llm)
        start = time.perf_counter()
        ctx = EvalContext(llm, fmt, options, cache_path=run.llm_cache)
        result = task.run(ctx, settings)
        elapsed = time.perf_counter() - start
        after = _usage(llm)
        for judge in ctx.judges:  # judge models' tokens and cost belong to this task too
            after = {k: after[k] + v for k, v in _usage(judge).items()}
        record = {
            "kind": "benchmark",
            "name": name,
            "task": name,
            "title": task.title,
            "model": model.to_dict(),
            "key": key,
            "metrics": {k: float(v) for k, v in result.metrics.items()},
            "primary_metric": task.primary_metric,
            "higher_is_better": task.higher_is_better,
            "breakdown": result.breakdown,
            # What was learned while running (e.g. shots dropped) is kept apart from what is compared.
            "settings": {**recorded, "run_info": result.extra_settings} if result.extra_settings else recorded,
            "n_examples": len(result.examples),
            "failures": 0,  # a benchmark request that fails after retries raises: nothing is guessed
            "usage": {k: after[k] - before[k] for k in after},
            "time_s": round(elapsed, 3),
            "provenance": {**(provenance or {}), "inputs": {"model": model.fingerprint,
                                                           **task_inputs(task, options)}},
        }
        examples = [{**e, "prompt": prompt_text(e["prompt"])} if "prompt" in e else e for e in result.examples]
        path = write_result(run.root, record, examples)
        report_stage(outputs=[path])
        record = json.loads(path.read_text(encoding="utf-8"))  # exactly what was written (strict JSON)
        run.log("eval", task=name, model=model.label, metrics=record["metrics"], time_s=record["time_s"])
        value = record["metrics"].get(task.primary_metric)
        log(f"eval {name}: {task.primary_metric} = {'-' if value is None else f'{value:.2f}'} "
            f"({record['n_examples']} examples, {elapsed:.1f} s)")
        results.append(record)
    return results


def _cell(record: dict[str, Any]) -> str:
    value = record["metrics"].get(record["primary_metric"])
    return "-" if value is None else f"{value:.1f}"


def table8(results_by_model: dict[str, list[dict[str, Any]]]) -> str:
    """One row per model, one column per task (primary metric), as Table 8 of the Tülu paper."""
    columns: list[tuple[str, str]] = []
    for records in results_by_model.values():
        for record in records:
            key = (record["task"], record.get("title") or record["task"])
            if key not in columns:
                columns.append(key)
    headers = ["model"] + [title + ("" if _higher(results_by_model, task) else " (↓)") for task, title in columns]
    rows = []
    for model, records in results_by_model.items():
        by_task = {r["task"]: r for r in records}
        rows.append([model] + [_cell(by_task[t]) if t in by_task else "-" for t, _ in columns])
    return _grid(headers, rows)


def _higher(results_by_model: dict[str, list[dict[str, Any]]], task: str) -> bool:
    for records in results_by_model.values():
        for record in records:
            if record["task"] == task:
                return record.get("higher_is_better", True)
    return True


def details(records: list[dict[str, Any]]) -> str:
    """Per task: every metric, the number of examples, time and tokens."""
    headers = ["task", "metrics", "n", "time (s)", "tokens"]
    rows = []
    for r in records:
        metrics = ", ".join(f"{k}={'-' if v is None else f'{v:.2f}'}" for k, v in r["metrics"].items())
        tokens = int(r["usage"]["prompt_tokens"] + r["usage"]["completion_tokens"])
        rows.append([r["task"], metrics, str(r["n_examples"]), f"{r['time_s']:.1f}", str(tokens)])
    return _grid(headers, rows)


def _grid(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep] + [line(r) for r in rows])


def evaluate(config: Any, log: Callable[[str], None] = print, shard: Any = None,
             merge_after: bool = False) -> list[dict[str, Any]]:
    """`drover eval` (an `EvalConfig`): open the model through the LLM client, run the tasks, print the tables.

    `shard` (a `drover.shards.Shard`): only answer that shard's requests into its cache
    part (`drover.evaluate.shard`), then, with `merge_after` (rank 0 under a launcher),
    wait for the other shards and merge. Without a shard, shard parts found in the run
    directory are merged into its cache first.
    """
    from drover.evaluate.registry import expand_tasks
    from drover.llm.client import LLM
    from drover.llm.config import LLMConfig
    from drover.provenance import provenance
    from drover.shards import cache_part, merge_cache_parts, shard_dir, wait_for

    config.validate()
    names = expand_tasks(config.tasks)
    options = config.eval_options()
    overrides = {"batch_size": config.batch_size} if config.batch_size else {}
    llm_config = LLMConfig.from_spec(config.model, **overrides)
    chat_format, why = resolve_chat_format(options.chat_format, llm_config)
    log(f"chat format: {chat_format} ({why})")
    options = dataclasses.replace(options, chat_format=chat_format)
    run = RunDir(config.run_dir).ensure()
    fmt = PromptFormatter.for_llm(llm_config, options.chat_format)
    if shard is not None:
        from drover.evaluate.shard import JOB, run_shard

        job = digest([result_key(llm_config.identity(), TASKS.get(name), options) for name in names])
        with LLM(llm_config, cache_part(run.root, JOB, shard)) as llm:
            run_shard(llm, fmt, names, run, options, shard, log=log, job=job)
        if not merge_after:
            return []
        wait_for(shard_dir(run.root, JOB), shard.count, log=log, job=job)  # (an earlier eval's markers: not done)
    start = time.perf_counter()
    if Path(llm_config.model).is_dir():
        report_stage(inputs=[llm_config.model])
    with LLM(llm_config, run.llm_cache) as llm:
        if llm.cache is not None:
            merge_cache_parts(llm.cache, run.root, "eval", log=log)
        model = ModelRef(model_label(config.model, run.root, config.name), config.model, llm.identity)
        record = provenance(config, device=llm_config.device if llm_config.backend == "hf" else None,
                            precision=llm_config.dtype if llm_config.backend == "hf" else None)
        records = run_tasks(llm, fmt, model, names, run, options, force=config.force, log=log, provenance=record)
    log("")
    log(table8({model.label: records}))
    log("")
    log(details(records))
    usage = {k: sum(r["usage"][k] for r in records) for k in ("prompt_tokens", "completion_tokens", "cost")}
    log(f"\n{len(records)} task(s) in {time.perf_counter() - start:.1f} s; tokens: {int(usage['prompt_tokens'])} prompt + "
        f"{int(usage['completion_tokens'])} completion; cost ${usage['cost']:.4f}; results in {run.eval}/{model_slug(model.label)}/")
    return records
