"""Decoding speed: drover's local engine vs transformers' `generate`, and `drover serve` under load.

    .venv/bin/python benchmarks/decode_throughput.py [--hidden 384 --layers 6] [--new-tokens 64]
        [--dtype float32 bfloat16] [--repeats 2] [--baseline-src /path/to/older/drover/src]
        [--requests 32 --gap 0.02]

Same model (a Llama built by drover.models.build_tiny: ~17M parameters by default; `--hidden
64 --layers 2` is the test model), same prompts (shipped Code Alpaca instructions, mixed
lengths), greedy, `--new-tokens` new tokens, one thread, in each `--dtype` (drover, HF and
the baseline all load the model in that dtype; serve keeps the checkpoint's fp32). Each
measurement runs in its own subprocess, alternating with the others, fastest of `--repeats`
(benchmarks/interleaved.py); `--no-serve` leaves the serve rows out.

* decode: tokens/s at batch 1 and 16 for drover and for HF `generate` (batch 16: one
  left-padded batch), with greedy texts compared (drover at batch 1 and 16 vs HF alone);
* serve: `drover serve` on 127.0.0.1, `--requests` completions sent `--gap` seconds apart
  (staggered arrivals, bounded count, a 300 s cap); requests/s and generated tokens/s.

`--baseline-src` adds the same drover measurements with another drover tree on PYTHONPATH
(e.g. the commit before this engine) — "today's" numbers for the ratio. Printed per row:
wall tokens/s, tokens per CPU-second (time.process_time: the figure that stays stable when
other jobs share the machine) and peak RSS. `decode_check()` is the entry point for a GPU
check (benchmarks/gpu_check.py): the decode rows on one device, in this process.
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


def prompts(tokenizer, count: int) -> list[list[int]]:
    rows = json.loads(CODE_ALPACA.read_text())[:count]
    return [tokenizer(r["instruction"])["input_ids"] for r in rows]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _load(model_dir: str, device: str, dtype: str = "float32"):
    from drover.models import load_model, load_tokenizer

    tok = load_tokenizer(model_dir)
    tok.padding_side = "left"
    return load_model(model_dir, dtype=dtype, device=device), tok


def measure_decode(model, tok, engine: str, batch: int, new_tokens: int, count: int) -> dict:
    """Tokens generated, wall and CPU seconds for `count` prompts (after one warm-up batch)."""
    import torch

    ids = prompts(tok, count)
    device = next(model.parameters()).device

    def drover_run(chunk):
        try:
            from drover.local.decode import GenerationItem, generate
        except ModuleNotFoundError:  # a --baseline-src tree from before the engine moved to drover.local
            from drover.infer.generation import GenerationItem, generate

        items = [GenerationItem(prompt_ids=p, max_tokens=new_tokens) for p in chunk]
        got = dict(generate(model, tok, items, batch_size=batch))
        return [got[i].choices[0].text for i in range(len(chunk))], sum(r.completion_tokens for r in got.values())

    def hf_run(chunk):
        enc = tok.pad({"input_ids": chunk}, return_tensors="pt").to(device)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        new = out[:, enc["input_ids"].shape[1]:]
        eos = set(tok.all_special_ids) & {tok.eos_token_id}
        texts, n = [], 0
        for row in new.tolist():
            end = next((k for k, t in enumerate(row) if t in eos), len(row))
            texts.append(tok.decode(row[:end], skip_special_tokens=True))
            n += end
        return texts, n

    run = drover_run if engine == "drover" else hf_run
    run(ids[:batch])  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    texts, tokens = [], 0
    for start in range(0, count, batch):
        t, n = run(ids[start:start + batch])
        texts += t
        tokens += n
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"tokens": tokens, "seconds": wall, "cpu_seconds": cpu, "tok_s": tokens / wall,
            "tok_cpu_s": tokens / cpu, "texts": texts, "rss_mib": peak_rss_mib()}


def measure_serve(model_dir: str, requests: int, gap: float, new_tokens: int) -> dict:
    """`drover serve` in this process on 127.0.0.1; `requests` completions sent `gap` s apart."""
    import threading
    import urllib.request

    from drover.infer.server import serve_in_thread
    from drover.models import load_tokenizer

    texts = [json.loads(CODE_ALPACA.read_text())[i]["instruction"] for i in range(requests)]
    load_tokenizer(model_dir)
    results: list[dict | None] = [None] * requests
    with serve_in_thread(model_dir, model_name="tiny", max_batch_size=16) as url:
        def send(i: int) -> None:
            body = json.dumps({"model": "tiny", "prompt": texts[i], "max_tokens": new_tokens, "temperature": 0}).encode()
            req = urllib.request.Request(f"{url}/completions", data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=300) as resp:
                results[i] = json.loads(resp.read())

        send(0)  # warm-up
        wall, cpu = time.perf_counter(), time.process_time()
        threads = []
        for i in range(requests):
            threads.append(threading.Thread(target=send, args=(i,), daemon=True))
            threads[-1].start()
            time.sleep(gap)
        deadline = time.monotonic() + 300
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    done = [r for r in results if r is not None]
    tokens = sum(r["usage"]["completion_tokens"] for r in done)
    return {"requests": len(done), "tokens": tokens, "seconds": wall, "cpu_seconds": cpu,
            "req_s": len(done) / wall, "req_cpu_s": len(done) / cpu, "tok_s": tokens / wall,
            "texts": [r["choices"][0]["text"] for r in done], "rss_mib": peak_rss_mib()}


def decode_check(model_dir: str | None = None, device: str = "cuda", new_tokens: int = 64,
                 count: int = 32, dtype: str = "float32") -> dict:
    """For benchmarks/gpu_check.py: drover vs HF `generate` at batch 1 and 16 on `device`, in
    this process (builds the 17M model if no `model_dir`); returns the rows and ratios."""
    if model_dir is None:
        from drover.models import build_tiny

        model_dir = str(build_tiny(Path(tempfile.mkdtemp()) / "model", hidden=384, layers=6, heads=6))
    model, tok = _load(model_dir, device, dtype)
    rows = {}
    for batch in (1, 16):
        for engine in ("drover", "hf"):
            n = count if batch == 16 else max(4, count // 8)
            rows[f"{engine}_b{batch}"] = measure_decode(model, tok, engine, batch, new_tokens, n)
    ratios = {f"b{b}": rows[f"drover_b{b}"]["tok_s"] / rows[f"hf_b{b}"]["tok_s"] for b in (1, 16)}
    alone = rows["hf_b1"]["texts"]
    identical = {f"b{b}": rows[f"drover_b{b}"]["texts"][:len(alone)] == alone for b in (1, 16)}
    for row in rows.values():
        row.pop("texts")
    return {"device": device, "dtype": dtype, "rows": rows, "ratio_vs_hf_generate": ratios,
            "greedy_identical_to_hf_alone": identical}


def worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(1)
    if args.job == "serve":
        result = measure_serve(args.model_dir, args.requests, args.gap, args.new_tokens)
    else:
        engine, batch = args.job.split(":")
        model, tok = _load(args.model_dir, "cpu", args.dtype[0])
        result = measure_decode(model, tok, engine, int(batch), args.new_tokens, args.count)
    print("RESULT " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--count", type=int, default=32, help="prompts per decode measurement (batch 1 uses 1/4)")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--gap", type=float, default=0.02, help="seconds between request arrivals")
    parser.add_argument("--dtype", nargs="+", choices=["float32", "bfloat16"], default=["float32"],
                        help="weights' dtype of every decode row (one set of rows per dtype)")
    parser.add_argument("--no-serve", dest="serve", action="store_false", help="leave the serve rows out")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--baseline-src", default=None, help="another drover src/ to measure as the baseline")
    parser.add_argument("--job", default=None)
    parser.add_argument("--model-dir", default=None)
    args = parser.parse_args()
    if args.job:
        return worker(args)

    from drover.models import build_tiny

    tmp = Path(tempfile.mkdtemp(prefix="drover-decode-bench-"))
    model_dir = build_tiny(tmp / "model", hidden=args.hidden, layers=args.layers, heads=max(1, args.hidden // 64))
    base = [sys.executable, __file__, "--model-dir", str(model_dir), "--new-tokens", str(args.new_tokens),
            "--requests", str(args.requests), "--gap", str(args.gap)]
    trees = {"drover": str(ROOT / "src")}
    if args.baseline_src:
        trees["before"] = args.baseline_src
    commands: dict[str, list[str]] = {}
    for dtype in args.dtype:
        typed = [*base, "--dtype", dtype]
        for batch, count in ((1, max(4, args.count // 4)), (16, args.count)):
            for tree in trees:
                commands[f"{tree} {dtype} b{batch}"] = ["env", f"PYTHONPATH={trees[tree]}", "OMP_NUM_THREADS=1",
                                                        *typed, "--job", f"drover:{batch}", "--count", str(count)]
            commands[f"hf-generate {dtype} b{batch}"] = [*typed, "--job", f"hf:{batch}", "--count", str(count)]
    for tree in trees if args.serve else ():
        commands[f"{tree} serve"] = ["env", f"PYTHONPATH={trees[tree]}", "OMP_NUM_THREADS=1", *base, "--job", "serve"]
    load = os.getloadavg()[0]
    best = fastest_runs(commands, args.repeats)
    print(f"\nload average at start {load:.1f} on {os.cpu_count()} cores; one thread per worker; "
          f"fastest of {args.repeats}; {args.hidden}x{args.layers} Llama, {args.new_tokens} new tokens, greedy")
    print(f"{'row':26} {'tok/s':>8} {'tok/CPU-s':>10} {'req/s':>7} {'req/CPU-s':>9} {'RSS MiB':>8}")
    for name, r in best.items():
        print(f"{name:26} {r['tok_s']:8.0f} {r['tokens'] / r['cpu_seconds']:10.0f} "
              f"{r.get('req_s', float('nan')):7.2f} {r.get('req_cpu_s', float('nan')):9.2f} {r['rss_mib']:8.0f}")
    for dtype in args.dtype:
        for batch in (1, 16):
            d, h = best.get(f"drover {dtype} b{batch}"), best.get(f"hf-generate {dtype} b{batch}")
            if d and h:
                print(f"{dtype} batch {batch}: drover/HF generate {d['tok_s'] / h['tok_s']:.2f}x wall, "
                      f"{(d['tokens'] / d['cpu_seconds']) / (h['tokens'] / h['cpu_seconds']):.2f}x per CPU-second")
            b = best.get(f"before {dtype} b{batch}")
            if d and b:
                print(f"{dtype} batch {batch}: drover/before {d['tok_s'] / b['tok_s']:.2f}x wall, "
                      f"{(d['tokens'] / d['cpu_seconds']) / (b['tokens'] / b['cpu_seconds']):.2f}x per CPU-second, "
                      f"greedy texts identical: {d['texts'] == b['texts']}")
        alone = best.get(f"hf-generate {dtype} b1", {}).get("texts")
        for batch in (1, 16):
            if alone and best.get(f"drover {dtype} b{batch}"):
                same = best[f"drover {dtype} b{batch}"]["texts"][:len(alone)] == alone
                print(f"{dtype}: drover batch {batch} greedy texts identical to HF generate on each prompt alone: {same}")
    if best.get("drover serve") and best.get("before serve"):
        d, b = best["drover serve"], best["before serve"]
        print(f"serve: {d['req_s'] / b['req_s']:.2f}x requests/s wall, {d['req_cpu_s'] / b['req_cpu_s']:.2f}x per "
              f"CPU-second; texts identical: {d['texts'] == b['texts']}")


if __name__ == "__main__":
    main()
