"""SFT throughput: drover's engine vs TRL's SFTTrainer at its best settings, same model, data and settings.

    .venv/bin/python benchmarks/sft_throughput.py [--examples 256] [--max-length 512] [--batch 8] [--threads 1]

Same model (a ~17M-parameter Llama built by drover.models.build_tiny), same data (the shipped
Code Alpaca 2k sample as chat conversations: realistic, variable-length instructions), same
max length, batch size, learning rate and precision (bf16 autocast where the CPU computes bf16
natively, else fp32 for all), assistant-only loss, gradient checkpointing off, one epoch.
Trainers (each in its own subprocess, interleaved, fastest of --repeats kept):

  drover             length-grouped padded micro-batches (drover's default)
  drover-packed      the same batches, each packed into one padding-free row, attention kernel
                     picked by measurement (`attention: auto`): its loss must equal drover's
  trl-padding-free   SFTConfig(padding_free=True): the batch flattened into one row (TRL then
                     needs max_length=None: the few conversations over --max-length stay whole)
  trl-packing        SFTConfig(packing=True): best-fit-decreasing packing into max-length rows
  trl-grouped        SFTConfig(train_sampling_strategy="group_by_length")

(Liger kernels are Triton, GPU only.) Printed per trainer: target (assistant) tokens per
CPU-second and per wall second, peak RSS, and model FLOPs utilisation = 6 * params * input
tokens / CPU-second / the matmul GFLOP per CPU-second measured by the same process before and
after training (drover.train.flops). With one torch thread per trainer (the default), CPU
time measures the work even while other jobs share the machine: read the per-CPU-second
ratios. The final loss is printed so that equal work can be checked.
"""


from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from interleaved import add_harness_arguments, fastest_runs, parse_harness, tiny_model

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


TRAINERS = ("drover", "drover-packed", "trl-padding-free", "trl-packing", "trl-grouped")


def matmul_per_cpu_second(precision: str) -> float:
    """GFLOP per CPU-second of a bf16 (or fp32) matmul in this process: the MFU denominator."""
    import torch

    from drover.train.flops import matmul_gflops

    return matmul_gflops("cpu", torch.bfloat16 if precision == "bf16" else torch.float32, clock=time.process_time)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_drover(model_dir: str, data: str, args: argparse.Namespace, packing: bool) -> dict:
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
                                     "group_by_length": True, "packing": packing,
                                     "pack_tokens": args.batch * args.max_length})
    setup_cpu = time.process_time()
    spec = get_objective("sft")
    tokenizer = load_tokenizer(model_dir)
    examples, _, _ = prepare_examples(config, spec, tokenizer, RunDir(config.run_dir))
    # packed or not, the same length-grouped batches of --batch conversations and the same lr schedule
    plan = epoch_plan(examples, dataclasses.replace(config, packing=False), 0)
    config = dataclasses.replace(config, max_steps=len(plan))
    engine = Engine(config, spec, examples, [], tokenizer, RunDir(config.run_dir))
    start, cpu = time.perf_counter(), time.process_time()
    for ids in plan:
        stats = engine.step([engine.collate([examples[i] for i in ids])])
    return {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu,
            "target_tokens": sum(e.num_targets for e in examples),
            "input_tokens": sum(e.num_tokens for e in examples), "steps": len(plan),
            "params": engine.num_params, "loss": stats["loss"], "attention": engine.attention,
            "setup_cpu_seconds": cpu - setup_cpu}


def run_trl(model_dir: str, data: str, args: argparse.Namespace, setting: str) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    rows = [{"messages": json.loads(line)["messages"]} for line in Path(data).read_text().splitlines()]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    # TRL refuses padding_free without packing unless nothing needs truncating (max_length=None)
    max_length = None if setting == "trl-padding-free" else args.max_length
    config = SFTConfig(output_dir=tempfile.mkdtemp(), max_length=max_length,
                       per_device_train_batch_size=args.batch, num_train_epochs=1, learning_rate=2e-5,
                       lr_scheduler_type="linear", warmup_steps=0.03, bf16=args.precision == "bf16", use_cpu=True,
                       gradient_checkpointing=False, assistant_only_loss=True,
                       packing=setting == "trl-packing", padding_free=setting == "trl-padding-free",
                       train_sampling_strategy="group_by_length" if setting == "trl-grouped" else "random",
                       logging_steps=1, save_strategy="no", report_to=[],
                       dataloader_num_workers=0, seed=0, max_grad_norm=1.0, weight_decay=0.0)
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    ds = trainer.train_dataset
    # assistant tokens (already truncated); packed rows keep the per-token assistant masks
    column = "labels" if "labels" in ds.column_names else "assistant_masks"
    target = sum(sum(1 for m in masks if m not in (0, -100)) for masks in ds[column])
    inputs = sum(len(ids) for ids in ds["input_ids"])
    cpu = time.process_time()
    result = trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"seconds": result.metrics["train_runtime"], "cpu_seconds": time.process_time() - cpu,
            "target_tokens": target, "input_tokens": inputs, "steps": result.global_step,
            "params": sum(p.numel() for p in model.parameters()), "loss": losses[-1] if losses else None}


def worker(args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    peak = matmul_per_cpu_second(args.precision)
    if args.worker.startswith("drover"):
        out = run_drover(args.model_dir, args.data, args, packing=args.worker == "drover-packed")
    else:
        out = run_trl(args.model_dir, args.data, args, args.worker)
    out["peak_rss_mib"] = peak_rss_mib()
    out["matmul_gflops"] = (peak + matmul_per_cpu_second(args.precision)) / 2
    print("RESULT " + json.dumps(out))


def worker_command(name: str, model_dir: Path, data: Path, args: argparse.Namespace) -> list[str]:
    """One trainer in a fresh process (its own peak memory, no shared caches)."""
    return [sys.executable, __file__, "--worker", name, "--model-dir", str(model_dir), "--data", str(data),
            "--examples", str(args.examples), "--max-length", str(args.max_length), "--batch", str(args.batch),
            "--threads", str(args.threads), "--precision", args.precision]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--trainers", default=",".join(TRAINERS))
    add_harness_arguments(parser)
    args = parse_harness(parser)
    if args.worker:
        return worker(args)

    tmp, model_dir = tiny_model("drover-bench-", args.hidden, args.layers)
    data = tmp / "data.jsonl"
    data.write_text("".join(json.dumps(c) + "\n" for c in conversations(args.examples)))
    rows = fastest_runs({name: worker_command(name, model_dir, data, args) for name in args.trainers.split(",")},
                        args.repeats)
    print(f"\nmodel: Llama {args.layers} layers x {args.hidden} hidden, "
          f"{next(iter(rows.values()))['params'] / 1e6:.1f}M params; {args.examples} Code Alpaca conversations, "
          f"max length {args.max_length}, batch {args.batch}, precision {args.precision}, "
          f"torch threads {args.threads or 'default'} of {os.cpu_count()} CPUs\n")
    print("| trainer | target tok per CPU-s | target tok/s (wall) | MFU (per CPU-s) | matmul GFLOP per CPU-s "
          "| peak RSS MiB | CPU s | steps | final loss | attention |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for name, r in rows.items():
        per_cpu = r["target_tokens"] / r["cpu_seconds"]
        mfu = 6 * r["params"] * r["input_tokens"] / r["cpu_seconds"] / (r["matmul_gflops"] * 1e9)
        loss = f"{r['loss']:.4f}" if r.get("loss") is not None else "-"
        print(f"| {name} | {per_cpu:,.0f} | {r['target_tokens'] / r['seconds']:,.0f} | {mfu:.1%} "
              f"| {r['matmul_gflops']:.0f} | {r['peak_rss_mib']:,.0f} | {r['cpu_seconds']:.1f} | {r['steps']} "
              f"| {loss} | {r.get('attention', '-')} |")
    ours = {n: r for n, r in rows.items() if n.startswith("drover")}
    theirs = {n: r for n, r in rows.items() if not n.startswith("drover")}
    if ours and theirs:
        def rate(r: dict) -> float:
            return r["target_tokens"] / r["cpu_seconds"]

        def mfu(r: dict) -> float:
            return r["input_tokens"] / r["cpu_seconds"] / r["matmul_gflops"]

        best_ours = max(ours, key=lambda n: rate(ours[n]))
        best_theirs = max(theirs, key=lambda n: rate(theirs[n]))
        print(f"\nbest drover ({best_ours}) / best TRL ({best_theirs}): "
              f"{rate(ours[best_ours]) / rate(theirs[best_theirs]):.2f}x target tokens per CPU-second, "
              f"{mfu(ours[best_ours]) / mfu(theirs[best_theirs]):.2f}x MFU")
    print(f"load average during the run (1/5/15 min): {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
