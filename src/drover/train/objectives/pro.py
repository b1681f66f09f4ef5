"""PRO: Preference Ranking Optimization (Song et al. 2023, Preference Ranking
Optimization for Human Alignment, eq. 6-9).

Protocol: the paper's eq. 6-9 (AlibabaResearch/DAMO-ConvAI
`PRO/train/utils/process_manager.py`, its training loss). Deliberate difference: T is a
constant; the paper's reward-difference-dependent temperature is not implemented.

Per record with responses y_1 ≻ y_2 ≻ ... ≻ y_n (best first) and length-normalised
scores π_k = log π(y_k|x) / (|y_k| · T),

    loss = Σ_{k=1}^{n-1} -log( exp(π_k) / Σ_{j≥k} exp(π_j) )  +  β · NLL(y_1|x)

a Plackett-Luce likelihood of the whole ranking: at every step the best remaining
response should win a softmax against all worse ones. T is a constant temperature
(the paper's reward-difference temperature is not implemented); NLL is the per-token
mean on the best response. The order is the record's order (best first), so ties
keep the stored order. Units are records.
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
class PROParams:
    temperature: float = 1.0  # T: divides the length-normalised log-probs
    sft_weight: float = 0.05  # β: weight of the per-token NLL on the best response


def pro_list_loss(values: "torch.Tensor") -> "torch.Tensor":
    """Listwise loss (scalar) of one ranking; `values` (K,) best first."""
    import torch

    loss = values.new_zeros(())
    for k in range(len(values) - 1):
        loss = loss + torch.logsumexp(values[k:], dim=0) - values[k]
    return loss


def pro_objective(batch: SequenceBatch, params: Any = None) -> ObjectiveOutput:
    p = resolve_params(PROParams, params)
    v = mean_token_logps(batch)                                  # (N,)
    index, valid = ordered_lists(batch)                          # (G, K)
    if index.shape[0] == 0:
        return ObjectiveOutput(batch.seq_logps.sum() * 0.0, 0, {})
    scaled = v / p.temperature
    rank_loss = sum(pro_list_loss(scaled[index[g][valid[g]]]) for g in range(index.shape[0]))
    nll = -v[index[:, 0]]                                        # (G,)
    loss = rank_loss + p.sft_weight * nll.sum()
    hi, lo = preference_pairs(batch)
    metrics = {"rank_loss": float(rank_loss.detach()), "nll": float(nll.detach().sum()),
               "ranking_accuracy": ranking_accuracy_sum(v, batch.group, hi, lo)}
    return ObjectiveOutput(loss, index.shape[0], metrics)


SPEC = ObjectiveSpec(
    name="pro", fn=pro_objective, data="ranked", min_responses=2, needs_scores=True,
    paper="Song et al. 2023, Preference Ranking Optimization for Human Alignment",
    formula="Σ_k -log softmax_{j≥k}(p)_k + β·NLL(best)",
    params=PROParams,
)
