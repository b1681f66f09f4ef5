"""Preference and ranking tuning of a policy on Ranked data: one engine, many objectives.

    drover tune --objective dpo --model runs/sft/model --data pairs.jsonl --run-dir runs/dpo
    drover tune --objective tuna --model runs/sft/model --data tuna_p.jsonl --run-dir runs/tuna_p lr=1e-5 objective_params.margin=0.1
    drover tune --objective ipo ... objective_params.beta=0.5 lr=1e-6

Objectives (each a pure loss in drover/train/objectives, formula and paper in its docstring):
  dpo     -log σ(β[(log π - log π_ref)(y_w) - (...)(y_l)])               Rafailov et al. 2023
  dpo-ln  DPO on per-token log-ratios                                     Tülu 3 (Lambert et al. 2024)
  ipo     (h - 1/(2β))² on the log-ratio gap h                            Azar et al. 2023
  slic    max(0, δ - log π(y_w) + log π(y_l)) + λ·NLL(best)               Zhao et al. 2023
  rrhf    Σ_{s_i<s_j} max(0, p_i - p_j) + NLL(best), p = mean log-prob     Yuan et al. 2023
  pro     Σ_k -log softmax_{j≥k}(p)_k + β·NLL(best)                       Song et al. 2023
  tuna    Σ_{j<k} max(0, v_k - v_j + m(k-j)) + λ·MLE(reference)           Li et al. 2023
          (objective_params.mle_on=all: MLE averaged over all candidates, as Tuna's released code)

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
}
TUNE_OBJECTIVES = tuple(DEFAULTS)
FRESH_FLAG = "--force"  # what a recipe passes when this stage's inputs or settings changed


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
    parser.add_argument("--objective", required=True, choices=TUNE_OBJECTIVES, help="the loss to train with")
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
    defaults = {**DEFAULTS[args.objective], "run_dir": f"runs/{args.objective}"}
    train(build_config(args, args.objective, defaults))
    return 0
