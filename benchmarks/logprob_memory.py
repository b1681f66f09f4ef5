"""Peak memory of target log-probs: full-vocabulary logits at once vs drover's chunks.

    .venv/bin/python benchmarks/logprob_memory.py [--rows 8192] [--hidden 1024] [--vocab 32000] [--chunk 2048]

Forward + backward of `selective_log_softmax` (drover.local.logprobs) over `rows` target
positions, once with one chunk (the (rows, V) float32 logits and their gradient all alive:
what `log_softmax(lm_head(h))` costs) and once in chunks of `--chunk` rows (recomputed in
the backward pass). Each variant runs in a fresh process on CPU, so its peak RSS above the
inputs is the figure; on CUDA, `torch.cuda.max_memory_allocated` is (see gpu_check.py).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys


def measure(rows: int, hidden: int, vocab: int, chunk: int, device: str = "cpu") -> dict:
    """Peak MiB above the inputs of one forward + backward, and the summed log-probs (equal across chunks)."""
    import torch

    from drover.local.logprobs import selective_log_softmax

    torch.manual_seed(0)
    head = torch.nn.Linear(hidden, vocab, bias=False, device=device)
    h = torch.randn(rows, hidden, device=device, requires_grad=True)
    ids = torch.randint(0, vocab, (rows,), device=device)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out = selective_log_softmax(head, h, ids, chunk=chunk)
    out.sum().backward()
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"chunk": chunk, "peak_mib": peak / 2 ** 20, "sum_logp": float(out.sum()),
            "logits_mib": rows * vocab * 4 / 2 ** 20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8192)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--chunk", type=int, default=2048)
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        print("RESULT " + json.dumps(measure(args.rows, args.hidden, args.vocab, args.worker)))
        return
    print(f"{args.rows} target rows, hidden {args.hidden}, vocabulary {args.vocab}: full fp32 logits = "
          f"{args.rows * args.vocab * 4 / 2 ** 20:,.0f} MiB\n")
    print("| log-probs | chunk rows | peak MiB above inputs (forward + backward) | sum of log-probs |")
    print("|---|---:|---:|---:|")
    for label, chunk in (("all at once", args.rows), ("chunked", args.chunk)):
        proc = subprocess.run([sys.executable, __file__, "--rows", str(args.rows), "--hidden", str(args.hidden),
                               "--vocab", str(args.vocab), "--worker", str(chunk)], capture_output=True, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode or not lines:
            sys.exit(f"{label} failed: {proc.stderr[-2000:]}")
        r = json.loads(lines[-1][7:])
        print(f"| {label} | {chunk} | {r['peak_mib']:,.0f} | {r['sum_logp']:.2f} |")


if __name__ == "__main__":
    main()
