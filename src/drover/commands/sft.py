"""Supervised fine-tuning on Conversation JSONL: loss on assistant tokens only, full or LoRA.

    drover sft --model runs/tiny --data runs/x/data/answers.jsonl --run-dir runs/x-sft
    drover sft --config sft-tulu model=PATH data=[a.jsonl,b.jsonl] lr=1e-5
    drover sft --config sft-alpaca model=PATH data=[a.jsonl] lora.enabled=true mixed_precision=no

`--config NAME` takes a shipped training config (recipes/train/NAME.yaml: sft-tulu,
sft-alpaca) or any YAML path. Defaults are Tülu's (2 epochs, lr 2e-5, 3% linear warmup
then linear decay, max length 2048, AdamW without weight decay, clipping at 1.0); every
key is in `drover.train.config.TrainConfig`. Mixtures say what a number means:
`mixture={answers: {count: 1000}, alpaca: {fraction: 0.5}}`.

A run directory that holds a checkpoint resumes from it: re-run the same command after a
crash. A resume under settings that would change what is already trained (lr, data, seed,
a schedule the done steps were not taken under...) is refused with one line naming what
changed, before anything is written; `--force` starts fresh instead. The final model goes to <run-dir>/model (Hugging Face format, with tokenizer and
chat template); metrics to <run-dir>/log.jsonl.

Multi-GPU / multi-node (the same code; configs in recipes/accelerate/):

    accelerate launch --config_file recipes/accelerate/zero3.yaml -m drover sft --config recipes/train/sft-tulu.yaml
    (also ddp.yaml, zero2.yaml, zero3-offload.yaml, fsdp.yaml)
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

FRESH_FLAG = "--force"  # what a recipe passes when this stage's inputs or settings changed


def add_training_arguments(parser: argparse.ArgumentParser, default_run_dir: str) -> None:
    """Flags shared by every training command (sft, reward, tune)."""
    parser.add_argument("overrides", nargs="*", help="key=value config overrides (e.g. lr=1e-5 lora.enabled=true)")
    parser.add_argument("--config", help="a YAML file of TrainConfig keys (e.g. recipes/train/sft-tulu.yaml)")
    parser.add_argument("--model", help="base model directory")
    parser.add_argument("--data", action="append", help="training JSONL file or dataset name (repeatable)")
    parser.add_argument("--run-dir", help=f"run directory (default {default_run_dir})")
    parser.add_argument("--resume", help="resume from this checkpoint or run directory")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--force", action="store_true",
                        help="start fresh: replace the run directory's checkpoints, model and log instead of resuming")


def config_from_args(args: argparse.Namespace, objective: str, default_run_dir: str) -> Any:
    """A validated TrainConfig from --config, flags and key=value overrides (later wins)."""
    from drover.config import load_config
    from drover.train.config import TrainConfig

    flags = [f"objective={objective}"] if objective else []
    if args.model:
        flags.append(f"model={args.model}")
    if args.data:
        flags.append("data=[" + ",".join(f'"{d}"' for d in args.data) + "]")
    if args.run_dir:
        flags.append(f"run_dir={args.run_dir}")
    if args.resume:
        flags.append(f"resume_from={args.resume}")
    if args.no_progress:
        flags.append("progress=false")
    if getattr(args, "force", False):
        flags.append("force=true")
    config = load_config(TrainConfig, shipped_config(args.config), flags + list(args.overrides))
    if not args.run_dir and not args.config and "run_dir=" not in " ".join(args.overrides):
        config.run_dir = default_run_dir
    if not config.model:
        from drover.errors import ConfigError

        raise ConfigError("no model: give --model PATH (or `model:` in the config)")
    return config


def shipped_config(name_or_path: str | None) -> str | None:
    """A YAML path, or the name of a training config shipped in recipes/train/."""
    if not name_or_path or Path(name_or_path).exists():
        return name_or_path
    shipped = Path(__file__).resolve().parents[1] / "resources" / "recipes" / "train" / f"{name_or_path}.yaml"
    return str(shipped) if shipped.is_file() else name_or_path


def run_training(config: Any) -> Path:
    """Train with any objective (drover reward/tune call this too); returns the model directory."""
    from drover.train.runner import run_training as _run

    return _run(config)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_training_arguments(parser, "runs/sft")


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args, "sft", "runs/sft")
    run_training(config)
    return 0
