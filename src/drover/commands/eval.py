"""Benchmarks: MMLU, GSM, BBH, TydiQA, Codex-Eval (HumanEval), ToxiGen, TruthfulQA, Super-NI,
Unnatural Instructions.

Writes RUN/eval/<task>.json (metrics, breakdown, settings, usage, time) and
RUN/eval/<task>.examples.jsonl (the exact prompt, prediction and reference per example),
skips tasks already done with the same settings, and prints a table like Table 8 of the
Tülu paper. Groups: mmlu, gsm, bbh, tydiqa, codex, truthfulqa, superni, tulu (the Tülu
columns), shipped (everything whose data ships). Override a task setting with
-o TASK.KEY=VALUE (or -o KEY=VALUE for every task that has it), e.g. -o codex_pass1.n=5.

examples:
  drover eval --model runs/demo/checkpoints/final --tasks mmlu,gsm --limit 20
  drover eval --model http://127.0.0.1:8000/v1#tiny --tasks bbh_cot --chat-format none
  drover eval --model openai:gpt-4 --tasks gsm_cot,tydiqa --data-dir ~/data/tydiqa --chat-format model

sharded (N GPUs or nodes; the merge equals an unsharded run):
  drover eval --model runs/demo/checkpoints/final --tasks gsm --shard 0/2 &   # one per GPU
  drover eval --model runs/demo/checkpoints/final --tasks gsm --shard 1/2 &
  wait; drover eval --model runs/demo/checkpoints/final --tasks gsm          # merges, writes results
  accelerate launch --num_processes 2 -m drover eval --model ... --tasks gsm  # shards itself, rank 0 merges
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="a local model directory, http://host:port/v1#MODEL (e.g. drover serve), or openai:MODEL")
    parser.add_argument("--tasks", default="shipped", help="comma-separated tasks or groups (default: shipped)")
    parser.add_argument("--limit", type=int, default=None,
                        help="examples per subject/task/language/group for grouped benchmarks, in total otherwise")
    parser.add_argument("--chat-format", default="tulu", choices=("tulu", "model", "none"),
                        help="tulu: drover's Tülu template; model: the model's own; none: raw text (base models)")
    parser.add_argument("--run-dir", default="runs/eval", help="run directory (results go to RUN/eval/)")
    parser.add_argument("--data-dir", default=None, help="data for tydiqa / superni / unnatural (not shipped)")
    parser.add_argument("--toxigen-classifier", default=None, help="sequence-classification model dir for toxigen")
    parser.add_argument("--truthfulqa-judge", default=None,
                        help="judge LLM spec for truthfulqa_gen, or truth=SPEC,info=SPEC")
    parser.add_argument("--seed", type=int, default=42, help="seed of every subsample")
    parser.add_argument("-o", "--option", action="append", default=[], metavar="[TASK.]KEY=VALUE",
                        help="override a task setting (repeatable)")
    parser.add_argument("--batch-size", type=int, default=None, help="local model batch size")
    parser.add_argument("--force", action="store_true", help="re-run tasks that are already done")
    parser.add_argument("--shard", default=None, metavar="I/N",
                        help="answer only shard I of N of the requests (into RUN/shards/eval/); a later run "
                             "without --shard merges the parts (default under accelerate launch: RANK/WORLD_SIZE)")


def run(args: argparse.Namespace) -> int:
    from drover.config import parse_override
    from drover.errors import ConfigError
    from drover.errors import did_you_mean
    from drover.evaluate.registry import TASKS, expand_tasks
    from drover.evaluate.task import EvalOptions

    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be >= 1 (leave it out for each task's default), got {args.limit}")
    if args.batch_size is not None and args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise ConfigError(f"--data-dir {args.data_dir}: directory not found")
    names = expand_tasks(args.tasks)
    overrides: dict[str, dict[str, object]] = {}
    for item in args.option:
        path, value = parse_override(item)
        if len(path) == 1:
            overrides.setdefault("*", {})[path[0]] = value
        elif len(path) == 2:
            if path[0] not in TASKS:
                raise ConfigError(f"-o {item}: unknown task {path[0]!r}{did_you_mean(path[0], TASKS.names())}")
            overrides.setdefault(path[0], {})[path[1]] = value
        else:
            raise ConfigError(f"-o {item}: expected KEY=VALUE or TASK.KEY=VALUE")
    import dataclasses

    known = {f.name for name in TASKS.names() for f in dataclasses.fields(TASKS.get(name).Settings)}
    for key in overrides.get("*", {}):
        if key not in known:
            raise ConfigError(f"-o {key}=...: no task has a setting {key!r}"
                              f"{did_you_mean(key, known)}; known: {', '.join(sorted(known))}")
    options = EvalOptions(limit=args.limit, chat_format=args.chat_format, data_dir=args.data_dir, seed=args.seed,
                          toxigen_classifier=args.toxigen_classifier, truthfulqa_judge=args.truthfulqa_judge,
                          overrides=overrides)
    from drover.evaluate.runner import evaluate
    from drover.shards import Shard, use_local_gpu

    shard = Shard.resolve(args.shard)
    launched = shard is not None and not args.shard  # under accelerate launch / torchrun: rank 0 merges
    if launched:
        use_local_gpu()
    evaluate(args.model, names, args.run_dir, options, force=args.force, batch_size=args.batch_size, shard=shard,
             merge_after=launched and shard.index == 0)
    return 0
