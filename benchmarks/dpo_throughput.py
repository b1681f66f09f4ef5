"""DPO throughput: drover's engine vs TRL's DPOTrainer at its best setting, same model, data and settings.

    .venv/bin/python benchmarks/dpo_throughput.py [--pairs 128] [--max-length 256] [--batch 8] [--epochs 1]

Same model (a tiny Llama built by drover.models.build_tiny), same data (the shipped HH-RLHF
harmless-base test pairs, converted to Ranked with drover's `hh-rlhf` converter; only pairs
short enough that neither trainer truncates), same β (0.1), learning rate, batch size (pairs
per step), precision (bf16 autocast where the CPU computes bf16 natively, else fp32),
no gradient checkpointing, one process, one torch thread. Trainers:

  drover           reference log-probs once before training (cached, the reference then freed),
                   length-grouped padded micro-batches
  drover-packed    the same batches, each packed into one padding-free row (attention kernel
                   picked by measurement): its loss must equal drover's
  trl-precompute   DPOConfig(precompute_ref_log_probs=True): TRL's best, the reference pass once
  trl              TRL's default, reference forward every step (not run unless named)

Every reference pass is *included* in the time. Printed: pairs per CPU-second (with one torch
thread, CPU time measures the work even when the machine is shared), pairs/s (wall), MFU per
CPU-second (6 x params x policy tokens + 2 x params x reference tokens, over the matmul GFLOP
per CPU-second the same process measures, drover.train.flops), peak RSS, final loss, ratios.
"""


from __future__ import annotations

import argparse
import dataclasses
import copy
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from interleaved import add_harness_arguments, fastest_runs, parse_harness, tiny_model

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


TRAINERS = ("drover", "drover-packed", "trl-precompute")


def cpu_seconds() -> float:
    return time.process_time()


def run_drover(model_dir: str, data: str, args: argparse.Namespace, packing: bool) -> dict:
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
                                     "objective_params": {"beta": 0.1}, "packing": packing,
                                     "pack_tokens": 2 * args.batch * args.max_length})
    spec = get_objective("dpo")
    tokenizer = load_tokenizer(model_dir)
    run = RunDir(config.run_dir)
    examples, _, report = prepare_examples(config, spec, tokenizer, run)
    # packed or not, the same length-grouped batches and the same lr schedule
    plans = [epoch_plan(examples, dataclasses.replace(config, packing=False), e) for e in range(args.epochs)]
    config = dataclasses.replace(config, max_steps=sum(len(p) for p in plans))
    start, cpu = time.perf_counter(), cpu_seconds()
    engine = Engine(config, spec, examples, [], tokenizer, run)       # reference log-probs: once, here
    ref_seconds = time.perf_counter() - start
    steps = 0
    for epoch in range(args.epochs):
        for ids in plans[epoch]:
            stats = engine.step([engine.collate([examples[i] for i in ids]).to(engine.accelerator.device)])
            steps += 1
    tokens = sum(len(s.input_ids) for e in examples for s in e.sequences)
    return {"seconds": time.perf_counter() - start, "cpu_seconds": cpu_seconds() - cpu,
            "reference_seconds": ref_seconds, "pairs": len(examples), "tokens": tokens,
            "params": engine.num_params, "loss": stats["loss"], "attention": engine.attention,
            "truncated": report.truncated, "steps": steps}


def run_trl(model_dir: str, data: str, args: argparse.Namespace, precompute: bool) -> dict:
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
                       gradient_checkpointing=False, save_strategy="no", report_to=[],
                       dataloader_num_workers=0, seed=0, max_grad_norm=1.0, weight_decay=0.0,
                       precompute_ref_log_probs=precompute, logging_steps=1)
    trainer = DPOTrainer(model=model, ref_model=copy.deepcopy(model), args=config,
                         train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    ds = trainer.train_dataset
    # prompt + chosen and prompt + rejected: the prompt is run once with each response
    tokens = sum(2 * len(p) + len(c) + len(r) for p, c, r in zip(ds["prompt_ids"], ds["chosen_ids"],
                                                                  ds["rejected_ids"]))
    start, cpu = time.perf_counter(), cpu_seconds()
    result = trainer.train()  # with precompute_ref_log_probs the reference pass runs in here
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"seconds": time.perf_counter() - start, "cpu_seconds": cpu_seconds() - cpu, "pairs": len(rows),
            "steps": result.global_step, "tokens": tokens, "params": sum(p.numel() for p in model.parameters()),
            "loss": losses[-1] if losses else None}


def worker(args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from drover.train.flops import matmul_gflops

    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    peak = matmul_gflops("cpu", dtype, clock=time.process_time)
    if args.worker.startswith("drover"):
        out = run_drover(args.model_dir, args.data, args, packing=args.worker == "drover-packed")
    else:
        out = run_trl(args.model_dir, args.data, args, precompute=args.worker == "trl-precompute")
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["matmul_gflops"] = (peak + matmul_gflops("cpu", dtype, clock=time.process_time)) / 2
    print("RESULT " + json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=128)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8, help="pairs per optimizer step")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--trainers", default=",".join(TRAINERS), help=f"of {', '.join(TRAINERS)}, trl")
    add_harness_arguments(parser)
    args = parse_harness(parser)
    if args.worker:
        return worker(args)

    tmp, model_dir = tiny_model("drover-dpo-bench-", args.hidden, args.layers)
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
    print("| trainer | pairs per CPU-s | pairs/s (wall) | MFU (per CPU-s) | CPU s | of which reference s (wall) "
          "| steps | peak RSS MiB | final loss | attention |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")

    def per_cpu(r: dict) -> float:
        return r["pairs"] * args.epochs / r["cpu_seconds"]

    def mfu(r: dict) -> float:
        # policy forward + backward (6 FLOPs/param/token) each epoch, the reference forward (2) once
        flops = (6 * args.epochs + 2) * r["params"] * r["tokens"]
        return flops / r["cpu_seconds"] / (r["matmul_gflops"] * 1e9)

    for name, r in results.items():
        ref = f"{r['reference_seconds']:.1f}" if "reference_seconds" in r else (
            "(in training)" if name == "trl-precompute" else "(every step)")
        loss = f"{r['loss']:.4f}" if r.get("loss") is not None else "-"
        print(f"| {name} | {per_cpu(r):.2f} | {r['pairs'] * args.epochs / r['seconds']:.2f} | {mfu(r):.1%} "
              f"| {r['cpu_seconds']:.1f} | {ref} | {r['steps']} | {r['peak_rss_mib']:,.0f} | {loss} "
              f"| {r.get('attention', '-')} |")
    ours = {n: r for n, r in results.items() if n.startswith("drover")}
    theirs = {n: r for n, r in results.items() if not n.startswith("drover")}
    if ours and theirs:
        a, b = max(ours, key=lambda n: per_cpu(ours[n])), max(theirs, key=lambda n: per_cpu(theirs[n]))
        print(f"\nbest drover ({a}) / best TRL ({b}): {per_cpu(ours[a]) / per_cpu(theirs[b]):.2f}x pairs per "
              f"CPU-second, {mfu(ours[a]) / mfu(theirs[b]):.2f}x MFU (fastest of {args.repeats})")
    print(f"load average during the run (1/5/15 min): {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
