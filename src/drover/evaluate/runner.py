"""Run benchmark tasks into a run directory and print the Tülu Table-8-style table.

Per task it writes `RUN/eval/<task>.json`:

    {"task", "kind": "benchmark", "model", "metrics": {name: float}, "primary_metric",
     "higher_is_better", "title", "breakdown": {...}, "settings": {...}, "n_examples",
     "examples_file": "eval/<task>.examples.jsonl",
     "usage": {"prompt_tokens", "completion_tokens", "cost"}, "time_s"}

and `RUN/eval/<task>.examples.jsonl` (id, the exact prompt, prediction, reference,
score/correct per example). A task whose JSON exists with the same model and settings
is skipped (resume); an interrupted task re-runs from the LLM cache, paying nothing twice.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from drover.atomic import write_json
from drover.evaluate.prompting import PromptFormatter, prompt_text
from drover.evaluate.registry import TASKS
from drover.evaluate.task import EvalContext, EvalOptions, Task
from drover.records import write_jsonl
from drover.runs import RunDir


def task_settings(task: Task, options: EvalOptions) -> dict[str, Any]:
    """Everything that determines a task's result, as recorded (and compared on resume)."""
    settings = dataclasses.asdict(task.settings(options))
    settings["chat_format"] = options.chat_format
    settings["seed"] = options.seed
    for name in getattr(task, "uses", ()):
        settings[name] = getattr(options, name)
    return json.loads(json.dumps(settings, default=str))


def _usage(llm: Any) -> dict[str, float]:
    stats = getattr(llm, "stats", None)
    if stats is None:
        return {"prompt_tokens": 0, "completion_tokens": 0, "cost": 0.0}
    return {"prompt_tokens": stats.prompt_tokens, "completion_tokens": stats.completion_tokens, "cost": stats.cost}


def _load(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def run_tasks(llm: Any, fmt: PromptFormatter, model: str, names: list[str], run: RunDir, options: EvalOptions,
              force: bool = False, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run (or skip, when done with the same settings) each task; returns their result records."""
    run.ensure()
    results = []
    for name in names:
        task = TASKS.get(name)
        settings = task.settings(options)
        recorded = task_settings(task, options)
        path = run.eval / f"{name}.json"
        previous = _load(path)
        if (not force and previous is not None and previous.get("model") == model
                and {k: v for k, v in (previous.get("settings") or {}).items() if k != "run_info"} == recorded):
            log(f"eval {name}: done already with the same settings ({path}); skipping")
            results.append(previous)
            continue
        log(f"eval {name}: running")
        before = _usage(llm)
        start = time.perf_counter()
        ctx = EvalContext(llm, fmt, options, cache_path=run.llm_cache)
        result = task.run(ctx, settings)
        elapsed = time.perf_counter() - start
        after = _usage(llm)
        for judge in ctx.judges:  # judge models' tokens and cost belong to this task too
            after = {k: after[k] + v for k, v in _usage(judge).items()}
        examples_file = f"eval/{name}.examples.jsonl"
        write_jsonl(run.root / examples_file, [{**e, "prompt": prompt_text(e["prompt"])} if "prompt" in e else e
                                               for e in result.examples])
        record = {
            "task": name,
            "kind": "benchmark",
            "title": task.title,
            "model": model,
            "metrics": {k: float(v) for k, v in result.metrics.items()},
            "primary_metric": task.primary_metric,
            "higher_is_better": task.higher_is_better,
            "breakdown": result.breakdown,
            # What was learned while running (e.g. shots dropped) is kept apart from what is compared.
            "settings": {**recorded, "run_info": result.extra_settings} if result.extra_settings else recorded,
            "n_examples": len(result.examples),
            "examples_file": examples_file,
            "usage": {k: after[k] - before[k] for k in after},
            "time_s": round(elapsed, 3),
        }
        write_json(path, record)
        run.log("eval", task=name, metrics=record["metrics"], time_s=record["time_s"])
        log(f"eval {name}: {task.primary_metric} = {record['metrics'].get(task.primary_metric, float('nan')):.2f} "
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
        metrics = ", ".join(f"{k}={v:.2f}" for k, v in r["metrics"].items())
        tokens = int(r["usage"]["prompt_tokens"] + r["usage"]["completion_tokens"])
        rows.append([r["task"], metrics, str(r["n_examples"]), f"{r['time_s']:.1f}", str(tokens)])
    return _grid(headers, rows)


def _grid(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep] + [line(r) for r in rows])


def evaluate(model: str, names: list[str], run_dir: str | Path, options: EvalOptions, force: bool = False,
             batch_size: int | None = None, log: Callable[[str], None] = print, shard: Any = None,
             merge_after: bool = False) -> list[dict[str, Any]]:
    """`drover eval`: open the model through the LLM client, run the tasks, print the tables.

    `shard` (a `drover.shards.Shard`): only answer that shard's requests into its cache
    part (`drover.evaluate.shard`), then, with `merge_after` (rank 0 under a launcher),
    wait for the other shards and merge. Without a shard, shard parts found in the run
    directory are merged into its cache first.
    """
    from drover.llm.client import LLM
    from drover.llm.config import LLMConfig
    from drover.shards import cache_part, merge_cache_parts, shard_dir, wait_for

    overrides = {"batch_size": batch_size} if batch_size else {}
    config = LLMConfig.from_spec(model, **overrides)
    run = RunDir(run_dir).ensure()
    fmt = PromptFormatter.for_llm(config, options.chat_format)
    if shard is not None:
        from drover.evaluate.shard import JOB, run_shard

        with LLM(config, cache_part(run.root, JOB, shard)) as llm:
            run_shard(llm, fmt, names, run, options, shard, log=log)
        if not merge_after:
            return []
        wait_for(shard_dir(run.root, JOB), shard.count, log=log)
    start = time.perf_counter()
    with LLM(config, run.llm_cache) as llm:
        if llm.cache is not None:
            merge_cache_parts(llm.cache, run.root, "eval", log=log)
        records = run_tasks(llm, fmt, model, names, run, options, force=force, log=log)
    log("")
    log(table8({model: records}))
    log("")
    log(details(records))
    usage = {k: sum(r["usage"][k] for r in records) for k in ("prompt_tokens", "completion_tokens", "cost")}
    log(f"\n{len(records)} task(s) in {time.perf_counter() - start:.1f} s; tokens: {int(usage['prompt_tokens'])} prompt + "
        f"{int(usage['completion_tokens'])} completion; cost ${usage['cost']:.4f}; results in {run.eval}/")
    return records
