"""Train a pairwise reward model on Ranked data (GPT-4 technical report §3.2).

    drover reward --model runs/sft/model --data comparisons.jsonl --run-dir runs/rm eval_fraction=0.05 eval_every=50

A causal LM backbone with a scalar head is trained with -log σ(r(x, y_h) - r(x, y_l))
over the C(K,2) pairs with s_h > s_l of every record (ties skipped);
`objective_params.margin` adds Llama 2's score-difference margin and
`objective_params.centering` the reward-centering term. The held-out split's pairwise
accuracy (`eval_accuracy`) is logged every `eval_every` steps to RUN/log.jsonl and
printed at the end. Score or re-rank responses with the trained model: `drover rerank`.
"""

from __future__ import annotations

import argparse

from drover.commands.tune import FRESH_FLAG, add_common_arguments, build_config, train  # noqa: F401 (recipes read it)

# InstructGPT/GPT-4-style reward models train for one epoch (more overfits, Ouyang et al. 2022).
DEFAULTS = {"lr": 1e-5, "epochs": 1, "warmup_ratio": 0.03, "run_dir": "runs/reward"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)


def run(args: argparse.Namespace) -> int:
    train(build_config(args, "reward", DEFAULTS))
    return 0
