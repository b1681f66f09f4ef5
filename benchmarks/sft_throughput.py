"""SFT throughput: drover's engine vs TRL's SFTTrainer on the same tiny Llama, data and settings.

    .venv/bin/python benchmarks/sft_throughput.py [--examples 256] [--max-length 512] [--batch 8]

Same model (a ~17M-parameter Llama built by drover.models.build_tiny), same data (the shipped
Code Alpaca 2k sample as chat conversations: realistic, variable-length instructions), same
max length, batch size, learning rate and precision (bf16 autocast where the CPU computes bf16
natively, else fp32 for both), assistant-only
loss, gradient checkpointing off, one epoch. Each trainer runs in its own subprocess (peak
memory is the process's max RSS). TRL runs twice: with its defaults, and with
`group_by_length=True` (the transformers option closest to drover's default batching).

Printed per trainer: target (assistant) tokens/s, input tokens/s, peak RSS, and model FLOPs
utilisation = 6 * params * input tokens/s / the matmul rate (same dtype and threads) measured
by the same process just before and after training. The
machine may be shared: the ratio, measured in the same run, is the number to read.
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

from interleaved import fastest_runs

ROOT = Path(__file__).resolve().parents[1]
CODE_ALPACA = ROOT / "src/drover/resources/data/codealpaca/code_alpaca_2k.json"


def conversations(n: int) -> list[dict]:
    rows = [r for r in json.loads(CODE_ALPACA.read_text()) if r["output"].strip()][:n]  # a few answers are empty
    out = []
    for i, r in enumerate(rows):
        user = r["instruction"] + (f"\n\n{r['input']}" if r["input"].strip() else "")
        out.append({"id": f"ca-{i}", "messages": [{"role": "user", "content": user},
                                                   {"role": "assistant", "content": r["output"]}]})
    return out


def matmul_peak_gflops(dtype_name: str = "bfloat16", size: int = 1024, reps: int = 20) -> float:
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * size ** 3 * reps / (time.perf_counter() - start) / 1e9


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_drover(model_dir: str, data: str, args: argparse.Namespace) -> dict:
    from drover.config import from_dict
    from drover.models import load_tokenizer
    from drover.runs import RunDir
    from drover.train.batches import epoch_plan
    from drover.train.config import TrainConfig
    from drover.train.engine import Engine
    from drover.train.objectives import get_objective
    from drover.train.runner import prepare_examples

    config = from_dict(TrainConfig, {"model": model_dir, "data": [data], "run_dir": tempfile.mkdtemp(),
                                     "max_length": args.max_length, "micro_batch_size": args.batch, "epochs": 1,
                                     "lr": 2e-5, "mixed_precision": args.precision, "progress": False,
                                     "group_by_length": True, "packing": args.packing,
                                     "pack_tokens": args.batch * args.max_length // 2})
    spec = get_objective("sft")
    tokenizer = load_tokenizer(model_dir)
    examples, _, _ = prepare_examples(config, spec, tokenizer, RunDir(config.run_dir))
    engine = Engine(config, spec, examples, [], tokenizer, RunDir(config.run_dir))
    plan = epoch_plan(examples, config, 0)
    start = time.perf_counter()
    for ids in plan:
        engine.step([engine.collate([examples[i] for i in ids])])
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "target_tokens": sum(e.num_targets for e in examples),
            "input_tokens": sum(e.num_tokens for e in examples), "steps": len(plan),
            "params": sum(p.numel() for p in engine.model.parameters())}


def run_trl(model_dir: str, data: str, args: argparse.Namespace, group_by_length: bool) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    rows = [{"messages": json.loads(line)["messages"]} for line in Path(data).read_text().splitlines()]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = SFTConfig(output_dir=tempfile.mkdtemp(), max_length=args.max_length,
                       per_device_train_batch_size=args.batch, num_train_epochs=1, learning_rate=2e-5,
                       lr_scheduler_type="linear", warmup_steps=0.03, bf16=args.precision == "bf16", use_cpu=True,
                       gradient_checkpointing=False, assistant_only_loss=True, packing=False,
                       train_sampling_strategy="group_by_length" if group_by_length else "random", logging_steps=10_000, save_strategy="no", report_to=[],
                       dataloader_num_workers=0, seed=0, max_grad_norm=1.0, weight_decay=0.0)
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    ds = trainer.train_dataset
    target = sum(sum(1 for label in labels if label != -100) for labels in ds["labels"])  # already truncated
    inputs = sum(len(ids) for ids in ds["input_ids"])
    result = trainer.train()
    return {"seconds": result.metrics["train_runtime"], "target_tokens": target, "input_tokens": inputs,
            "steps": result.global_step, "params": sum(p.numel() for p in model.parameters())}


def worker(args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    peak = matmul_peak_gflops("bfloat16" if args.precision == "bf16" else "float32")
    if args.worker == "drover":
        out = run_drover(args.model_dir, args.data, args)
    else:
        out = run_trl(args.model_dir, args.data, args, group_by_length=args.worker == "trl-grouped")
    out["peak_rss_mib"] = peak_rss_mib()
    out["matmul_gflops"] = (peak + matmul_peak_gflops("bfloat16" if args.precision == "bf16" else "float32")) / 2
    print("RESULT " + json.dumps(out))


def worker_command(name: str, model_dir: Path, data: Path, args: argparse.Namespace) -> list[str]:
    """One trainer in a fresh process (its own peak memory, no shared caches)."""
    return [sys.executable, __file__, "--worker", name, "--model-dir", str(model_dir), "--data", str(data),
            "--examples", str(args.examples), "--max-length", str(args.max_length), "--batch", str(args.batch),
            "--threads", str(args.threads), "--precision", args.precision] + (["--packing"] if args.packing else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--packing", action="store_true", help="drover with packed micro-batches")
    parser.add_argument("--precision", choices=["auto", "no", "bf16"], default="auto",
                        help="both trainers: bf16 autocast or fp32 (auto: bf16 where the CPU computes it natively)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per trainer (alternating); the best is kept")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per trainer (0: torch's default)")
    parser.add_argument("--trainers", default="drover,trl,trl-grouped")
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

    tmp = Path(tempfile.mkdtemp(prefix="drover-bench-"))
    model_dir = build_tiny(tmp / "model", hidden=args.hidden, layers=args.layers, heads=args.hidden // 64)
    data = tmp / "data.jsonl"
    data.write_text("".join(json.dumps(c) + "\n" for c in conversations(args.examples)))
    rows = fastest_runs({name: worker_command(name, model_dir, data, args) for name in args.trainers.split(",")},
                        args.repeats)
    print(f"\nmodel: Llama {args.layers} layers x {args.hidden} hidden, "
          f"{next(iter(rows.values()))['params'] / 1e6:.1f}M params; {args.examples} Code Alpaca conversations, "
          f"max length {args.max_length}, batch {args.batch}, precision {args.precision}, "
          f"torch threads {args.threads or 'default'} of {os.cpu_count()} CPUs\n")
    print("| trainer | target tok/s | input tok/s | peak RSS MiB | matmul GFLOP/s | MFU | time s | steps |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        tps, ips = r["target_tokens"] / r["seconds"], r["input_tokens"] / r["seconds"]
        mfu = 6 * r["params"] * ips / (r["matmul_gflops"] * 1e9)
        print(f"| {name} | {tps:,.0f} | {ips:,.0f} | {r['peak_rss_mib']:,.0f} | {r['matmul_gflops']:.0f} | {mfu:.1%} "
              f"| {r['seconds']:.1f} "
              f"| {r['steps']} |")
    if "drover" in rows:
        base = rows["drover"]["target_tokens"] / rows["drover"]["seconds"]
        for name, r in rows.items():
            if name != "drover":
                print(f"\ndrover / {name} target-token throughput: {base / (r['target_tokens'] / r['seconds']):.2f}x")


if __name__ == "__main__":
    main()
