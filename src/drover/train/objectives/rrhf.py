"""RRHF: Rank Responses to align language models with Human Feedback (Yuan et al.
2023, eq. 2-4).

Protocol: GanjinZero/RRHF `train.py` (RRHFTrainer.rrhf_loss, sft_loss, compute_loss):
length-normalised log-probs, hinge over score-ordered pairs, per-token NLL of the best response.

Per record with K scored responses, p_i = log π(y_i|x) / |y_i| (length-normalised),

    loss = Σ_{s_i < s_j} max(0, p_i - p_j)  +  λ · NLL(y_best|x)

the ranking term penalises every pair where the worse response is more likely than
the better one; the fine-tuning term is the per-token NLL of the highest-scored
response (RRHF's code also averages it per token). Ties give no pair. Units are
records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from drover.train.objective import ObjectiveOutput, ObjectiveSpec, SequenceBatch
from drover.train.objectives.pairs import (mean_token_logps, ordered_lists, preference_pairs,
                                          ranking_accuracy_sum, resolve_params)

if TYPE_CHECKING:
    import torch


@dataclass
class RRHFParams:
    nll_weight: float = 1.0   # λ: RRHF weighs L_rank and L_ft equally


def rrhf_rank_loss(p_better: "torch.Tensor", p_worse: "torch.Tensor") -> "torch.Tensor":
    """Per-pair ranking term (P,) from (P,) length-normalised log-probs."""
    import torch

    return torch.relu(p_worse - p_better)


def rrhf_objective(batch: SequenceBatch, params: Any = None) -> ObjectiveOutput:
    p = resolve_params(RRHFParams, params)
    v = mean_token_logps(batch)                                  # (N,)
    index, _ = ordered_lists(batch)                              # (G, K)
    if index.shape[0] == 0:
        return ObjectiveOutput(batch.seq_logps.sum() * 0.0, 0, {})
    hi, lo = preference_pairs(batch)
    rank_term = rrhf_rank_loss(v[hi], v[lo])
    nll = -v[index[:, 0]]                                        # (G,) best response per record
    loss = rank_term.sum() + p.nll_weight * nll.sum()
    metrics = {"rank_loss": float(rank_term.detach().sum()), "nll": float(nll.detach().sum()),
               "ranking_accuracy": ranking_accuracy_sum(v, batch.group, hi, lo)}
    return ObjectiveOutput(loss, index.shape[0], metrics)


SPEC = ObjectiveSpec(
    name="rrhf", fn=rrhf_objective, data="ranked", min_responses=2, needs_scores=True,
    paper="Yuan et al. 2023, RRHF: Rank Responses to Align Language Models with Human Feedback without tears",
    formula="Σ_{s_i<s_j} max(0, p_i - p_j) + λ·NLL(best), p = mean token log-prob",
    params=RRHFParams,
)
