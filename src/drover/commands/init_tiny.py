"""Build a tiny randomly initialised causal LM + byte-level BPE tokenizer, in seconds.

    drover init-tiny runs/tiny                       # 2-layer Llama, hidden 64, vocab 4096
    drover init-tiny runs/tiny-big --hidden 256 --layers 4 --heads 8

The tokenizer is trained on text shipped with drover and carries the Tülu chat template
(<|system|>, <|user|>, <|assistant|>, EOS-terminated answers). Same arguments, same model.
Use it for tests and the CPU quickstart; it knows nothing until you train it.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", help="output directory (created; loadable with AutoModelForCausalLM)")
    parser.add_argument("--hidden", type=int, default=64, help="hidden size (default 64)")
    parser.add_argument("--layers", type=int, default=2, help="number of transformer layers (default 2)")
    parser.add_argument("--heads", type=int, default=4, help="attention heads; must divide --hidden (default 4)")
    parser.add_argument("--vocab", type=int, default=4096, help="BPE vocabulary size (default 4096)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the random weights (default 0)")
    parser.add_argument("--arch", default="llama", choices=("llama", "qwen2"), help="architecture (default llama)")


def run(args: argparse.Namespace) -> int:
    import time

    from drover.models import build_tiny

    start = time.perf_counter()
    out = build_tiny(args.out, hidden=args.hidden, layers=args.layers, heads=args.heads, vocab=args.vocab,
                     seed=args.seed, arch=args.arch)
    print(f"drover init-tiny: wrote a {args.layers}-layer {args.arch} (hidden {args.hidden}, vocab {args.vocab}) "
          f"with the tulu chat template to {out} in {time.perf_counter() - start:.1f}s")
    return 0
