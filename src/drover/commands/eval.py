"""Benchmarks: MMLU, GSM, BBH, TydiQA, Codex-Eval (HumanEval), ToxiGen, TruthfulQA, Super-NI,
Unnatural Instructions.

Writes RUN/eval/<model>/<task>.json (metrics, breakdown, settings, usage, time,
provenance) and RUN/eval/<model>/<task>.examples.jsonl (the exact prompt, prediction and
reference per example), one folder per model (--name, default: the model directory
relative to the run), so base and tuned results sit side by side. A task is skipped only
when its result was computed from the same model content, data and settings; and it
prints a table like Table 8 of the Tülu paper. Groups: mmlu, gsm, bbh, tydiqa, codex, truthfulqa, superni, tulu (the Tülu
columns), shipped (everything whose data ships). Override a task setting with
-o TASK.KEY=VALUE (or -o KEY=VALUE for every task that has it), e.g. -o codex_pass1.n=5.

examples:
  drover eval --model runs/demo/checkpoints/final --tasks mmlu,gsm --limit 20
  drover eval --model http://127.0.0.1:8000/v1#tiny --tasks bbh_cot --chat-format none
  drover eval --model openai:gpt-4 --tasks gsm_cot,tydiqa --data-dir ~/data/tydiqa --chat-format model
  drover eval --config eval.yaml limit=20 name=base    # any EvalConfig key

sharded (N GPUs or nodes; the merge equals an unsharded run):
  drover eval --model runs/demo/checkpoints/final --tasks gsm --shard 0/2 &   # one per GPU
  drover eval --model runs/demo/checkpoints/final --tasks gsm --shard 1/2 &
  wait; drover eval --model runs/demo/checkpoints/final --tasks gsm          # merges, writes results
  accelerate launch --num_processes 2 -m drover eval --model ... --tasks gsm  # shards itself, rank 0 merges
"""

from __future__ import annotations

import argparse

FRESH_FLAG = "--force"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file of EvalConfig keys (drover/evaluate/config.py)")
    parser.add_argument("--model",
                        help="a local model directory, http://host:port/v1#MODEL (e.g. drover serve), or openai:MODEL")
    parser.add_argument("--name", help="the model's label in results and the report "
                                       "(default: the model directory relative to the run directory)")
    parser.add_argument("--tasks", help="comma-separated tasks or groups (default: shipped)")
    parser.add_argument("--limit", type=int,
                        help="examples per subject/task/language/group for grouped benchmarks, in total otherwise")
    parser.add_argument("--chat-format", choices=("auto", "tulu", "model", "none"),
                        help="auto (default): the model's own template if its tokenizer has one, else Tülu's; "
                             "tulu: drover's Tülu template; model: the model's own; none: raw text (base models)")
    parser.add_argument("--run-dir", help="run directory (results go to RUN/eval/<model>/; default runs/eval)")
    parser.add_argument("--data-dir", help="data for tydiqa / superni / unnatural (not shipped)")
    parser.add_argument("--toxigen-classifier", help="sequence-classification model dir for toxigen")
    parser.add_argument("--truthfulqa-judge", help="judge LLM spec for truthfulqa_gen, or truth=SPEC,info=SPEC")
    parser.add_argument("--seed", type=int, help="seed of every subsample (default 42)")
    parser.add_argument("-o", "--option", action="append", default=[], metavar="[TASK.]KEY=VALUE",
                        help="override a task setting (repeatable)")
    parser.add_argument("--batch-size", type=int, help="local model batch size")
    parser.add_argument("--force", action="store_true", default=None, help="re-run tasks that are already done")
    parser.add_argument("--shard", default=None, metavar="I/N",
                        help="answer only shard I of N of the requests (into RUN/shards/eval/); a later run "
                             "without --shard merges the parts (default under accelerate launch: RANK/WORLD_SIZE)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="EvalConfig overrides (win over flags)")


def config_from_args(args: argparse.Namespace):
    """The resolved EvalConfig: --config file, then flags, then key=value overrides."""
    from drover.config import parse_override, stage_config
    from drover.evaluate.config import EvalConfig

    flags = {"model": args.model, "name": args.name, "tasks": args.tasks, "limit": args.limit,
             "chat_format": args.chat_format, "run_dir": args.run_dir, "data_dir": args.data_dir,
             "toxigen_classifier": args.toxigen_classifier, "truthfulqa_judge": args.truthfulqa_judge,
             "seed": args.seed, "batch_size": args.batch_size, "force": args.force, "shard": args.shard,
             "options": {".".join(path): value for path, value in map(parse_override, args.option)} or None}
    return stage_config(EvalConfig, args.config, flags, args.overrides, where="drover eval")


def run(args: argparse.Namespace) -> int:
    from drover.evaluate.runner import evaluate
    from drover.shards import Shard, use_local_gpu

    config = config_from_args(args)
    config.task_overrides()  # every -o checked before any model is loaded
    shard = Shard.resolve(config.shard)
    launched = shard is not None and not config.shard  # under accelerate launch / torchrun: rank 0 merges
    if launched:
        use_local_gpu()
    evaluate(config, shard=shard, merge_after=launched and shard.index == 0)
    return 0
