"""Build a tiny randomly initialised causal LM + byte-level BPE tokenizer, in seconds.

    drover init-tiny runs/tiny                       # 2-layer Llama, hidden 64, vocab 4096
    drover init-tiny runs/tiny-big --hidden 256 --layers 4 --heads 8

The tokenizer is trained on text shipped with drover and carries the Tülu chat template
(<|system|>, <|user|>, <|assistant|>, EOS-terminated answers). Same arguments, same model.
Use it for tests and the CPU quickstart; it knows nothing until you train it.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Literal


@dataclass
class InitTinyConfig:
    """Every setting of `drover init-tiny` (`--config FILE.yaml`, `key=value` overrides)."""

    out: str = ""                          # output directory (created; loadable with AutoModelForCausalLM)
    hidden: int = 64
    layers: int = 2
    heads: int = 4                         # must divide hidden
    vocab: int = 4096                      # BPE vocabulary size
    seed: int = 0                          # seed of the random weights
    arch: Literal["llama", "qwen2"] = "llama"

    def validate(self) -> None:
        if not self.out:
            from drover.errors import ConfigError

            raise ConfigError("init-tiny: out: required (the directory to write the model to)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", nargs="?", help="output directory (created; loadable with AutoModelForCausalLM)")
    parser.add_argument("--config", help="YAML file of InitTinyConfig keys")
    parser.add_argument("--hidden", type=int, help="hidden size (default 64)")
    parser.add_argument("--layers", type=int, help="number of transformer layers (default 2)")
    parser.add_argument("--heads", type=int, help="attention heads; must divide --hidden (default 4)")
    parser.add_argument("--vocab", type=int, help="BPE vocabulary size (default 4096)")
    parser.add_argument("--seed", type=int, help="seed for the random weights (default 0)")
    parser.add_argument("--arch", choices=("llama", "qwen2"), help="architecture (default llama)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="InitTinyConfig overrides")


def run(args: argparse.Namespace) -> int:
    import time

    from drover.config import stage_config
    from drover.models import build_tiny

    names = ("out", "hidden", "layers", "heads", "vocab", "seed", "arch")
    config = stage_config(InitTinyConfig, args.config, {k: getattr(args, k) for k in names}, args.overrides,
                          where="drover init-tiny")
    start = time.perf_counter()
    out = build_tiny(config.out, hidden=config.hidden, layers=config.layers, heads=config.heads, vocab=config.vocab,
                     seed=config.seed, arch=config.arch)
    print(f"drover init-tiny: wrote a {config.layers}-layer {config.arch} (hidden {config.hidden}, vocab {config.vocab}) "
          f"with the tulu chat template to {out} in {time.perf_counter() - start:.1f}s")
    return 0
