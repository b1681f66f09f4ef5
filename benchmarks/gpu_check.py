"""GPU check: drover's SFT, DPO and decode throughput on one CUDA device, MFU against its measured bf16 peak.

    python benchmarks/gpu_check.py               # a CUDA machine: < 8 minutes in all
    python benchmarks/gpu_check.py --cpu-smoke   # every step on a tiny model on CPU (a dry run, ~1 min)

Needs torch, transformers and drover only (no hub, no network: the model is built locally by
`drover.models.build_tiny`, the data is shipped with drover). flash-attn and vLLM are used when
installed: flash-attn joins the packed-attention candidates the engine times (`attention:
auto`), vLLM adds a decode row. Sections, each bounded by `--budget` seconds:

  matmul   bf16 (n x n) @ (n x n) GFLOP/s on this device: the MFU denominator
  sft      drover's engine, packed micro-batches, Code Alpaca conversations: target and input
           tokens/s, MFU = 6 x params x input tokens/s / bf16 peak, peak memory
  dpo      drover's engine, DPO on HH-RLHF pairs, reference log-probs included: pairs/s, MFU
  logprobs peak memory of target log-probs, full-vocabulary logits vs drover's chunks
  decode   greedy, 64 new tokens: drover's local engine vs HF `generate` at batch 1 and 16
           (and vLLM when installed): tokens/s

Prints one table and writes it as JSON to `--out` (default: gpu_check.json in the run folder).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dpo_throughput import pairs as hh_pairs            # noqa: E402  (benchmarks/ is not a package)
from sft_throughput import conversations                # noqa: E402


@dataclass
class Sizes:
    """Model and workload of a run: the GPU one fills an H100-class device for ~1 minute per section."""

    hidden: int
    layers: int
    max_length: int
    sft_examples: int
    sft_batch: int
    dpo_pairs: int
    dpo_batch: int
    matmul: int
    decode_prompts: int
    new_tokens: int
    logprob_rows: int
    logprob_vocab: int


GPU = Sizes(hidden=1024, layers=12, max_length=1024, sft_examples=2000, sft_batch=32, dpo_pairs=1024,
            dpo_batch=32, matmul=8192, decode_prompts=16, new_tokens=64, logprob_rows=32768, logprob_vocab=128_000)
SMOKE = Sizes(hidden=64, layers=2, max_length=256, sft_examples=16, sft_batch=4, dpo_pairs=8, dpo_batch=4,
              matmul=256, decode_prompts=2, new_tokens=4, logprob_rows=256, logprob_vocab=4096)


class Clock:
    """Wall time with the device drained first (CUDA runs asynchronously)."""

    def __init__(self, device):
        self.device = device

    def __call__(self) -> float:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()


def peak_memory_mib(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def train_section(objective: str, model_dir: Path, data: Path, sizes: Sizes, device, budget: float,
                  peak_gflops: float) -> dict:
    """Train with drover's engine until the data or the budget runs out; throughput and MFU."""
    from drover.config import from_dict
    from drover.models import load_tokenizer
    from drover.runs import RunDir
    from drover.train.batches import epoch_plan
    from drover.train.config import TrainConfig
    from drover.train.engine import Engine
    from drover.train.objectives import get_objective

    from drover.train.runner import prepare_examples

    dpo = objective == "dpo"
    batch = sizes.dpo_batch if dpo else sizes.sft_batch
    values = {"model": str(model_dir), "objective": objective, "data": [str(data)],
              "run_dir": tempfile.mkdtemp(prefix=f"gpu-check-{objective}-"), "max_length": sizes.max_length,
              "micro_batch_size": batch, "epochs": 1, "lr": 5e-7 if dpo else 2e-5, "warmup_ratio": 0.0,
              "mixed_precision": "bf16", "progress": False, "packing": True,
              "pack_tokens": (2 if dpo else 1) * batch * sizes.max_length // 2}
    if dpo:
        values["objective_params"] = {"beta": 0.1}
    config = from_dict(TrainConfig, values)
    spec = get_objective(objective)
    tokenizer = load_tokenizer(str(model_dir))
    run = RunDir(config.run_dir)
    examples, _, _ = prepare_examples(config, spec, tokenizer, run)
    clock = Clock(device)
    reset_peak(device)
    start = clock()
    engine = Engine(config, spec, examples, [], tokenizer, run)  # DPO: the reference pass runs here
    setup = clock() - start
    plan = epoch_plan(examples, config, 0)
    done = targets = tokens = 0
    loss = float("nan")
    train_start = clock()
    for ids in plan:
        stats = engine.step([engine.collate([examples[i] for i in ids]).to(device)])
        done, loss = done + len(ids), stats["loss"]
        targets, tokens = targets + stats["tokens"], tokens + stats["input_tokens"]
        if clock() - start > budget:
            break
    seconds = clock() - train_start
    from drover.train.flops import mfu

    out = {"section": objective, "steps": len(plan) if done == len(examples) else None, "records": done,
           "records_per_s": done / seconds, "target_tok_per_s": targets / seconds,
           "input_tok_per_s": tokens / seconds, "setup_s": setup, "train_s": seconds, "loss": loss,
           "mfu": mfu(engine.num_params, tokens, seconds, peak_gflops), "params": engine.num_params,
           "attention": engine.attention, "attention_times": engine.attention_times,
           "peak_mib": peak_memory_mib(device)}
    del engine
    return out


def logprob_section(sizes: Sizes, device) -> dict:
    from logprob_memory import measure

    hidden = sizes.hidden
    full = measure(sizes.logprob_rows, hidden, sizes.logprob_vocab, sizes.logprob_rows, device.type)
    chunked = measure(sizes.logprob_rows, hidden, sizes.logprob_vocab, 2048, device.type)
    return {"section": "logprobs", "rows": sizes.logprob_rows, "vocab": sizes.logprob_vocab,
            "full_peak_mib": full["peak_mib"], "chunked_peak_mib": chunked["peak_mib"],
            "same_sum": abs(full["sum_logp"] - chunked["sum_logp"]) <= 1e-3 * abs(full["sum_logp"]) + 1e-3}


def decode_section(model_dir: Path, sizes: Sizes, device, budget: float) -> dict:
    """Greedy decode tokens/s: drover's local engine and HF generate, batch 1 and batch 16."""
    import torch
    from transformers import AutoModelForCausalLM

    from drover.local.decode import GenerationItem, generate
    from drover.models import load_tokenizer

    tokenizer = load_tokenizer(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.bfloat16).to(device).eval()
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": c["messages"][0]["content"]}],
                                             add_generation_prompt=True, tokenize=False)
               for c in conversations(sizes.decode_prompts)]
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    clock = Clock(device)
    out: dict = {"section": "decode", "new_tokens": sizes.new_tokens}
    deadline = clock() + budget
    for batch in (1, min(16, len(ids))):
        items = [GenerationItem(prompt_ids=i, max_tokens=sizes.new_tokens) for i in ids[:batch]]
        list(generate(model, tokenizer, items[:1], batch_size=1))        # warm-up
        start = clock()
        made = sum(r.completion_tokens for _, r in generate(model, tokenizer, items, batch_size=batch))
        out[f"drover_tok_per_s_b{batch}"] = made / (clock() - start)
        out[f"hf_generate_tok_per_s_b{batch}"] = hf_generate_rate(model, tokenizer, ids[:batch], sizes, clock)
        if clock() > deadline:
            break
    if device.type == "cuda" and importable("vllm"):
        out["vllm_tok_per_s_b16"] = vllm_rate(model_dir, prompts[:16], sizes)
    return out


def hf_generate_rate(model, tokenizer, ids: list[list[int]], sizes: Sizes, clock) -> float:
    """HF `generate`, greedy, left-padded batch, exactly `new_tokens` per row."""
    import torch

    width = max(len(i) for i in ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.tensor([[pad] * (width - len(i)) + i for i in ids], device=model.device)
    mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids], device=model.device)
    kwargs = {"do_sample": False, "max_new_tokens": sizes.new_tokens, "min_new_tokens": sizes.new_tokens,
              "pad_token_id": pad}
    with torch.no_grad():
        model.generate(input_ids=input_ids[:1], attention_mask=mask[:1], **kwargs)  # warm-up
        start = clock()
        model.generate(input_ids=input_ids, attention_mask=mask, **kwargs)
    return len(ids) * sizes.new_tokens / (clock() - start)


def vllm_rate(model_dir: Path, prompts: list[str], sizes: Sizes) -> float:
    from vllm import LLM, SamplingParams

    llm = LLM(model=str(model_dir), dtype="bfloat16", gpu_memory_utilization=0.3, enforce_eager=False)
    params = SamplingParams(temperature=0.0, max_tokens=sizes.new_tokens, min_tokens=sizes.new_tokens)
    llm.generate(prompts[:1], params)
    start = time.perf_counter()
    outs = llm.generate(prompts, params)
    return sum(len(o.outputs[0].token_ids) for o in outs) / (time.perf_counter() - start)


def importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def report(rows: list[dict], peak: float, env: dict) -> str:
    lines = [f"device: {env['device']}; torch {env['torch']}, transformers {env['transformers']}; "
             f"flash-attn {'yes' if env['flash_attn'] else 'no'}, vLLM {'yes' if env['vllm'] else 'no'}",
             f"bf16 matmul peak (measured): {peak:,.0f} GFLOP/s", "",
             "| section | figure | MFU | peak memory MiB | notes |", "|---|---|---:|---:|---|"]
    for r in rows:
        if r["section"] in ("sft", "dpo"):
            figure = (f"{r['target_tok_per_s']:,.0f} target tok/s, {r['input_tok_per_s']:,.0f} input tok/s"
                      if r["section"] == "sft" else f"{r['records_per_s']:,.1f} pairs/s")
            lines.append(f"| {r['section']} | {figure} | {r['mfu']:.1%} | {r['peak_mib']:,.0f} | "
                         f"{r['params'] / 1e6:.0f}M params, attention {r['attention']}, loss {r['loss']:.4f}, "
                         f"setup {r['setup_s']:.1f} s |")
        elif r["section"] == "logprobs":
            lines.append(f"| logprobs | {r['rows']} rows x {r['vocab']} vocab | | "
                         f"{r['full_peak_mib']:,.0f} full / {r['chunked_peak_mib']:,.0f} chunked | "
                         f"same result: {r['same_sum']} |")
        elif r["section"] == "decode":
            rates = ", ".join(f"{k.replace('_tok_per_s_', ' ')}: {v:,.0f}" for k, v in r.items()
                              if "_tok_per_s_" in k)
            lines.append(f"| decode | {rates} tok/s | | | greedy, {r['new_tokens']} new tokens |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on CPU: check every step runs")
    parser.add_argument("--budget", type=float, default=0.0,
                        help="seconds per training/decode section (default: 75 on GPU, 20 with --cpu-smoke)")
    parser.add_argument("--out", default="", help="JSON results (default: gpu_check.json in a temporary folder)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    import transformers

    from drover.models import build_tiny
    from drover.train.flops import matmul_gflops

    if not args.cpu_smoke and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run with --cpu-smoke for a dry run on CPU", file=sys.stderr)
        return 2
    sizes = SMOKE if args.cpu_smoke else GPU
    budget = args.budget or (20.0 if args.cpu_smoke else 75.0)
    device = torch.device("cpu" if args.cpu_smoke else "cuda")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    began = time.perf_counter()
    env = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (smoke)",
           "torch": torch.__version__, "transformers": transformers.__version__,
           "flash_attn": importable("flash_attn"), "vllm": importable("vllm")}
    tmp = Path(tempfile.mkdtemp(prefix="drover-gpu-check-"))
    model_dir = build_tiny(tmp / "model", hidden=sizes.hidden, layers=sizes.layers, heads=max(1, sizes.hidden // 64))
    sft_data, dpo_data = tmp / "sft.jsonl", tmp / "dpo.jsonl"
    sft_data.write_text("".join(json.dumps(c) + "\n" for c in conversations(sizes.sft_examples)))
    dpo_data.write_text("".join(json.dumps(r) + "\n" for r in hh_pairs(sizes.dpo_pairs, 2 * sizes.max_length)))
    peak = matmul_gflops(device, torch.bfloat16, size=sizes.matmul, min_seconds=1.0 if device.type == "cuda" else 0.1)
    rows = [{"section": "matmul", "bf16_gflops": peak}]
    for section in ("sft", "dpo", "logprobs", "decode"):
        t0 = time.perf_counter()
        if section in ("sft", "dpo"):
            rows.append(train_section(section, model_dir, sft_data if section == "sft" else dpo_data, sizes,
                                      device, budget, peak))
        elif section == "logprobs":
            rows.append(logprob_section(sizes, device))
        else:
            rows.append(decode_section(model_dir, sizes, device, budget))
        rows[-1]["section_s"] = time.perf_counter() - t0
        print(f"gpu_check: {section} done in {rows[-1]['section_s']:.0f} s", file=sys.stderr)
    text = report(rows[1:], peak, env)
    print(text)
    print(f"\ntotal {time.perf_counter() - began:.0f} s")
    out = Path(args.out) if args.out else tmp / "gpu_check.json"
    out.write_text(json.dumps({"env": env, "results": rows}, indent=1, default=str))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
