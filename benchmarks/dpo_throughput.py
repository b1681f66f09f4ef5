"""DPO throughput: drover's engine vs TRL's DPOTrainer on the same tiny Llama, data and settings.

    .venv/bin/python benchmarks/dpo_throughput.py [--pairs 128] [--max-length 256] [--batch 8] [--epochs 1]

Same model (a tiny Llama built by drover.models.build_tiny), same data (the shipped HH-RLHF
harmless-base test pairs, converted to Ranked with drover's `hh-rlhf` converter; only pairs
short enough that neither trainer truncates), same β (0.1), learning rate, batch size (pairs
per step), precision (bf16 autocast where the CPU computes bf16 natively, else fp32),
no gradient checkpointing, one process. TRL gets `ref_model=copy.deepcopy(model)` and
computes reference log-probs on the fly each step (its default); drover computes them
once before training (cached on disk, the reference then freed) - that pass is *included*
in drover's time. Each trainer runs in its own subprocess.

Printed: pairs/s (pairs x epochs / wall seconds, the fastest of --repeats interleaved runs),
pairs per CPU-second (with one torch thread, CPU time measures the work even when the
machine is shared), peak RSS, and both ratios.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from interleaved import fastest_runs

ROOT = Path(__file__).resolve().parents[1]
HH = ROOT / "src/drover/resources/data/hh_rlhf/harmless-base/test.jsonl.gz"


def pairs(n: int, max_chars: int) -> list[dict]:
    from drover.formats.driver import convert_records

    out = []
    for record in convert_records("hh-rlhf", HH):
        chars = sum(len(m.content) for m in record.messages) + max(len(r.content) for r in record.responses)
        if chars <= max_chars and len(record.pairs()) == 1:
            out.append(record.to_dict())
        if len(out) == n:
            break
    return out


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_drover(model_dir: str, data: str, args: argparse.Namespace) -> dict:
    from drover.config import from_dict
    from drover.models import load_tokenizer
    from drover.runs import RunDir
    from drover.train.batches import epoch_plan
    from drover.train.config import TrainConfig
    from drover.train.engine import Engine
    from drover.train.objectives import get_objective
    from drover.train.runner import prepare_examples

    config = from_dict(TrainConfig, {"model": model_dir, "objective": "dpo", "data": [data],
                                     "run_dir": tempfile.mkdtemp(), "max_length": args.max_length,
                                     "micro_batch_size": args.batch, "epochs": args.epochs, "lr": 5e-7,
                                     "warmup_ratio": 0.0, "mixed_precision": args.precision, "progress": False,
                                     "objective_params": {"beta": 0.1}})
    spec = get_objective("dpo")
    tokenizer = load_tokenizer(model_dir)
    run = RunDir(config.run_dir)
    examples, _, report = prepare_examples(config, spec, tokenizer, run)
    start, cpu = time.perf_counter(), cpu_seconds()
    engine = Engine(config, spec, examples, [], tokenizer, run)       # reference log-probs: once, here
    ref_seconds = time.perf_counter() - start
    steps = 0
    for epoch in range(args.epochs):
        for ids in epoch_plan(examples, config, epoch):
            engine.step([engine.collate([examples[i] for i in ids]).to(engine.accelerator.device)])
            steps += 1
    return {"seconds": time.perf_counter() - start, "cpu_seconds": cpu_seconds() - cpu,
            "reference_seconds": ref_seconds, "pairs": len(examples),
            "truncated": report.truncated, "steps": steps}


def run_trl(model_dir: str, data: str, args: argparse.Namespace) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    rows = []
    for line in Path(data).read_text().splitlines():
        r = json.loads(line)
        rows.append({"prompt": r["messages"],
                     "chosen": [{"role": "assistant", "content": r["responses"][0]["content"]}],
                     "rejected": [{"role": "assistant", "content": r["responses"][1]["content"]}]})
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = DPOConfig(output_dir=tempfile.mkdtemp(), max_length=args.max_length, beta=0.1,
                       per_device_train_batch_size=args.batch, num_train_epochs=args.epochs, learning_rate=5e-7,
                       lr_scheduler_type="linear", warmup_steps=0, bf16=args.precision == "bf16", use_cpu=True,
                       gradient_checkpointing=False, logging_steps=10_000, save_strategy="no", report_to=[],
                       dataloader_num_workers=0, seed=0, max_grad_norm=1.0, weight_decay=0.0)
    trainer = DPOTrainer(model=model, ref_model=copy.deepcopy(model), args=config,
                         train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    cpu = cpu_seconds()
    result = trainer.train()
    return {"seconds": result.metrics["train_runtime"], "cpu_seconds": cpu_seconds() - cpu, "pairs": len(rows),
            "steps": result.global_step}


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
    parser.add_argument("--pairs", type=int, default=128)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8, help="pairs per optimizer step")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--precision", choices=["auto", "no", "bf16"], default="auto")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per trainer (1: CPU time then measures work, not spinning; 0: torch's default)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="runs per trainer, interleaved; the fastest counts (robust to a shared machine)")
    parser.add_argument("--trainers", default="drover,trl")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.precision == "auto":
        from drover.train.engine import resolve_precision

        args.precision = resolve_precision("auto") or "no"
    if args.worker:
        return worker(args)

    from drover.models import build_tiny

    tmp = Path(tempfile.mkdtemp(prefix="drover-dpo-bench-"))
    model_dir = build_tiny(tmp / "model", hidden=args.hidden, layers=args.layers, heads=max(1, args.hidden // 64))
    data = tmp / "pairs.jsonl"
    rows = pairs(args.pairs, max_chars=2 * args.max_length)   # ~3 chars/token: nothing gets truncated
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    results = fastest_runs({
        name: [sys.executable, __file__, "--worker", name, "--model-dir", str(model_dir), "--data", str(data),
               "--max-length", str(args.max_length), "--batch", str(args.batch), "--epochs", str(args.epochs),
               "--threads", str(args.threads), "--precision", args.precision]
        for name in args.trainers.split(",")}, args.repeats)
    print(f"\nmodel: Llama {args.layers} layers x {args.hidden} hidden; {len(rows)} HH-RLHF harmless pairs, "
          f"max length {args.max_length}, batch {args.batch} pairs, {args.epochs} epoch(s), "
          f"precision {args.precision}, CPU threads {os.cpu_count()}\n")
    print("| trainer | pairs/s (wall) | pairs per CPU-s | time s | of which reference s | steps | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        rate = r["pairs"] * args.epochs / r["seconds"]
        per_cpu = r["pairs"] * args.epochs / r["cpu_seconds"]
        ref = f"{r['reference_seconds']:.1f}" if "reference_seconds" in r else "(every step)"
        print(f"| {name} | {rate:.2f} | {per_cpu:.2f} | {r['seconds']:.1f} | {ref} | {r['steps']} "
              f"| {r['peak_rss_mib']:,.0f} |")
    if "drover" in results and "trl" in results:
        d, t = results["drover"], results["trl"]
        print(f"\ndrover / TRL DPOTrainer pairs/s (wall, fastest of {args.repeats}): "
              f"{(d['pairs'] / d['seconds']) / (t['pairs'] / t['seconds']):.2f}x")
        print(f"drover / TRL DPOTrainer pairs per CPU-second: "
              f"{(d['pairs'] / d['cpu_seconds']) / (t['pairs'] / t['cpu_seconds']):.2f}x")


if __name__ == "__main__":
    main()
