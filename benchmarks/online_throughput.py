"""Online RL throughput: drover's GRPO vs TRL 1.16's GRPOTrainer on the same tiny model and reward.

    .venv/bin/python benchmarks/online_throughput.py [--steps 8] [--prompts-per-step 4] [--group 4] [--max-new-tokens 32]

Same model (a tiny Llama built by drover.models.build_tiny), same prompts (the shipped
Self-Instruct seed instructions, chat-formatted with the model's template), same reward (the
fraction of a completion's characters that are digits: drover's `regex` reward in
`fraction` mode, and the same function handed to TRL), same settings: G completions per
prompt, prompts per optimizer step, completion length, temperature 1, β = 0.04, ε = 0.2,
DAPO token-level loss aggregation (TRL's default `loss_type`), constant lr, one optimizer
step per generation batch, precision (bf16 autocast where the CPU computes it natively, else
fp32), no gradient checkpointing, one process. Each trainer generates with its own engine
(drover's local decoding loop; TRL's `model.generate`). Each runs in its own subprocess,
interleaved, the fastest of --repeats kept.

Timed: the training loop only (drover's `OnlineTrainer.train`, TRL's `trainer.train()`), model
loading excluded for both; drover's includes its final checkpoint and model save.

Printed: completions (samples) per second and optimizer steps per second, both by wall clock
and per CPU-second (with one torch thread, CPU time measures the work even when the machine is
shared), and the drover / TRL ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from interleaved import add_harness_arguments, fastest_runs, parse_harness, tiny_model

ROOT = Path(__file__).resolve().parents[1]
SEEDS = ROOT / "src/drover/resources/data/alpaca/seed_tasks.jsonl"


def prompts(n: int) -> list[dict]:
    rows = [json.loads(line) for line in SEEDS.read_text().splitlines()[:n]]
    return [{"id": f"seed{i}", "messages": [{"role": "user", "content": r["instruction"]}]} for i, r in enumerate(rows)]


def digit_fraction(text: str) -> float:
    """The reward both trainers optimise (= drover's regex reward, pattern [0-9], mode fraction)."""
    return sum(ch.isdigit() for ch in text) / len(text) if text else 0.0


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_drover(model_dir: str, data: str, args: argparse.Namespace) -> dict:
    from drover.train.online.config import online_config
    from drover.train.online.loop import prepare_online

    config = online_config({
        "algorithm": "grpo", "prompts": [data], "steps": args.steps, "prompts_per_step": args.prompts_per_step,
        "samples_per_prompt": args.group, "max_new_tokens": args.max_new_tokens, "temperature": 1.0,
        "generation_batch_size": args.prompts_per_step * args.group,
        "algorithm_params": {"beta": 0.04, "epsilon_low": 0.2, "epsilon_high": 0.2},
        "rewards": [{"kind": "regex", "params": {"pattern": "[0-9]", "mode": "fraction"}}],
        "train": {"model": model_dir, "run_dir": tempfile.mkdtemp(), "lr": 1e-5, "schedule": "constant",
                  "micro_batch_size": args.prompts_per_step, "mixed_precision": args.precision, "progress": False,
                  "save_every": 0, "max_length": 1024}}, where="benchmark")
    trainer, _, key = prepare_online(config)      # model loading is outside the timed part, as for TRL
    start, cpu = time.perf_counter(), cpu_seconds()
    trainer.train(None, key)
    return {"seconds": time.perf_counter() - start, "cpu_seconds": cpu_seconds() - cpu,
            "samples": args.steps * args.prompts_per_step * args.group, "steps": args.steps}


def run_trl(model_dir: str, data: str, args: argparse.Namespace) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    rows = [{"prompt": json.loads(line)["messages"]} for line in Path(data).read_text().splitlines()]

    def reward(completions, **_):
        return [digit_fraction(c[0]["content"]) for c in completions]

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = GRPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=args.prompts_per_step * args.group,
                        gradient_accumulation_steps=1, num_generations=args.group,
                        max_completion_length=args.max_new_tokens, temperature=1.0, beta=0.04, epsilon=0.2,
                        loss_type="dapo", learning_rate=1e-5, lr_scheduler_type="constant", warmup_steps=0,
                        max_steps=args.steps, bf16=args.precision == "bf16", use_cpu=True,
                        gradient_checkpointing=False, logging_steps=10_000, save_strategy="no", report_to=[],
                        dataloader_num_workers=0, seed=0, max_grad_norm=1.0, weight_decay=0.0)
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=config, train_dataset=Dataset.from_list(rows),
                          processing_class=tokenizer)
    cpu = cpu_seconds()
    result = trainer.train()
    return {"seconds": result.metrics["train_runtime"], "cpu_seconds": cpu_seconds() - cpu,
            "samples": result.global_step * args.prompts_per_step * args.group, "steps": result.global_step}


def worker(args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out = run_drover(args.model_dir, args.data, args) if args.worker == "drover" else run_trl(args.model_dir, args.data, args)
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps (one generation batch each)")
    parser.add_argument("--prompts-per-step", type=int, default=4)
    parser.add_argument("--group", type=int, default=4, help="completions per prompt (G)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--trainers", default="drover,trl")
    add_harness_arguments(parser)
    args = parse_harness(parser)
    if args.worker:
        return worker(args)

    tmp, model_dir = tiny_model("drover-online-bench-", args.hidden, args.layers)
    data = tmp / "prompts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in prompts(args.steps * args.prompts_per_step)))
    results = fastest_runs({
        name: [sys.executable, __file__, "--worker", name, "--model-dir", str(model_dir), "--data", str(data),
               "--steps", str(args.steps), "--prompts-per-step", str(args.prompts_per_step), "--group", str(args.group),
               "--max-new-tokens", str(args.max_new_tokens), "--threads", str(args.threads),
               "--precision", args.precision]
        for name in args.trainers.split(",")}, args.repeats)
    print(f"\nmodel: Llama {args.layers} layers x {args.hidden} hidden; GRPO, {args.steps} steps x "
          f"{args.prompts_per_step} prompts x {args.group} completions of <= {args.max_new_tokens} tokens, "
          f"precision {args.precision}, torch threads {args.threads or 'default'}\n")
    print("| trainer | samples/s (wall) | samples per CPU-s | steps/s (wall) | steps per CPU-s | time s | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['samples'] / r['seconds']:.2f} | {r['samples'] / r['cpu_seconds']:.2f} "
              f"| {r['steps'] / r['seconds']:.3f} | {r['steps'] / r['cpu_seconds']:.3f} | {r['seconds']:.1f} "
              f"| {r['peak_rss_mib']:,.0f} |")
    if "drover" in results and "trl" in results:
        d, t = results["drover"], results["trl"]
        print(f"\ndrover / TRL GRPOTrainer samples/s (wall, fastest of {args.repeats}): "
              f"{(d['samples'] / d['seconds']) / (t['samples'] / t['seconds']):.2f}x")
        print(f"drover / TRL GRPOTrainer samples per CPU-second: "
              f"{(d['samples'] / d['cpu_seconds']) / (t['samples'] / t['cpu_seconds']):.2f}x")
        print(f"drover / TRL GRPOTrainer optimizer steps per CPU-second: "
              f"{(d['steps'] / d['cpu_seconds']) / (t['steps'] / t['cpu_seconds']):.2f}x")


if __name__ == "__main__":
    main()
