"""Preference and ranking tuning of a policy on Ranked data: one engine, many objectives.

    drover tune --objective dpo --model runs/sft/model --data pairs.jsonl --run-dir runs/dpo
    drover tune --objective tuna --model runs/sft/model --data tuna_p.jsonl --run-dir runs/tuna_p lr=1e-5 objective_params.margin=0.1
    drover tune --objective ipo ... objective_params.beta=0.5 lr=1e-6
    drover convert --from unpaired labelled.jsonl kto.jsonl && drover tune --objective kto --data kto.jsonl ...
    drover tune --objective simpo ... objective_params.beta=2.5 objective_params.gamma=1.4

Objectives: listed below with their loss and paper (from the objective registry; each
is a pure loss in drover/train/objectives, formula and paper in its docstring).
KTO trains on unpaired labelled responses: convert them with
`drover convert --from unpaired` (or give Ranked records: best = desirable, worst =
undesirable; objective_params.label_by=score labels by score ≥ threshold).

RSO (Liu et al. 2023): `drover rerank --select rso` writes pairs sampled from the
reward-tilted policy; train on them here with --objective dpo or slic.

Objectives that need a reference model compute its log-probs once before training and
cache them in the run directory (reused across epochs and resumes). Every TrainConfig
key can be set in --config or as key=value; objective parameters are
`objective_params.NAME=VALUE`.
"""

from __future__ import annotations

import argparse
from typing import Any

# Starting points per objective (a key in --config or key=value wins). DPO family:
# Tülu 2 DPO (lr 5e-7, 3 epochs, warmup 0.1); Tuna: Tuna_p (lr 1e-5, 1 epoch).
DEFAULTS: dict[str, dict[str, Any]] = {
    "dpo": {"lr": 5e-7, "epochs": 3, "warmup_ratio": 0.1},
    "dpo-ln": {"lr": 5e-7, "epochs": 3, "warmup_ratio": 0.1},
    "ipo": {"lr": 5e-7, "epochs": 3, "warmup_ratio": 0.1},
    "slic": {"lr": 1e-6, "epochs": 1},
    "rrhf": {"lr": 1e-6, "epochs": 1},
    "pro": {"lr": 1e-6, "epochs": 1},
    "tuna": {"lr": 1e-5, "epochs": 1},
    # KTO, CPO: TRL's KTOConfig / CPOConfig learning rate; SimPO: the paper's 5e-7-1e-6 range;
    # ORPO trains from the base model (it includes the SFT term): the paper's 5e-6
    "kto": {"lr": 1e-6, "epochs": 1, "warmup_ratio": 0.1},
    "orpo": {"lr": 5e-6, "epochs": 1, "warmup_ratio": 0.1},
    "simpo": {"lr": 5e-7, "epochs": 1, "warmup_ratio": 0.1},
    "cpo": {"lr": 1e-6, "epochs": 1, "warmup_ratio": 0.1},
}
FRESH_FLAG = "--force"  # what a recipe passes when this stage's inputs or settings changed


def tune_objectives() -> list[str]:
    """Every registered objective that tunes a policy on Ranked data (the reward model
    has its own command)."""
    from drover.train.objectives import OBJECTIVES

    specs = {name: OBJECTIVES.get(name) for name in OBJECTIVES.names()}
    return [name for name, spec in specs.items() if spec.data == "ranked" and not spec.scalar_head]


def objectives_help() -> str:
    """The epilog of `drover tune --help`: each objective, its loss and its paper."""
    from drover.train.objectives import get_objective

    lines = ["objectives:"]
    for name in tune_objectives():
        spec = get_objective(name)
        lines.append(f"  {name:<7} {spec.formula}")
        lines.append(f"  {'':<7}   {spec.paper}")
    return "\n".join(lines)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments `drover tune`, `drover reward` and `drover expert-iterate` share."""
    parser.add_argument("--config", help="YAML with TrainConfig keys (a recipe stage's config)")
    parser.add_argument("--model", help="the model to start from (local directory)")
    parser.add_argument("--data", action="append", help="a Ranked JSONL file or dataset name (repeat for more)")
    parser.add_argument("--eval-data", action="append", help="a held-out Ranked JSONL file (repeatable)")
    parser.add_argument("--run-dir", help="where checkpoints, logs and the final model go")
    parser.add_argument("--force", action="store_true", default=None,
                        help="start fresh: replace the run directory's checkpoints, model and log instead of resuming")
    parser.add_argument("overrides", nargs="*", help="TrainConfig key=value overrides (e.g. lr=1e-6 epochs=1)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--objective", required=True, choices=tune_objectives(), help="the loss to train with")
    parser.epilog = objectives_help()
    add_common_arguments(parser)


def build_config(args: argparse.Namespace, objective: str, defaults: dict[str, Any]) -> Any:
    """TrainConfig from: per-objective defaults < --config YAML < flags < key=value overrides."""
    from drover.config import from_dict, merge_overrides, read_yaml
    from drover.train.config import TrainConfig

    data: dict[str, Any] = dict(defaults)
    if args.config:
        data.update(read_yaml(args.config))
    data["objective"] = objective
    flags = {"model": args.model, "data": args.data, "eval_data": args.eval_data, "run_dir": args.run_dir,
             "force": getattr(args, "force", None)}
    data.update({k: v for k, v in flags.items() if v})
    data = merge_overrides(data, list(args.overrides or []))
    return from_dict(TrainConfig, data, where=args.config or "command line")


def train(config: Any) -> Any:
    """Run the engine (it prints the one-screen summary); returns the final model directory."""
    from drover.train.runner import run_training

    return run_training(config)


def run(args: argparse.Namespace) -> int:
    defaults = {**DEFAULTS.get(args.objective, {}), "run_dir": f"runs/{args.objective}"}
    train(build_config(args, args.objective, defaults))
    return 0
