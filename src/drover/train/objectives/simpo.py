"""SimPO: Simple Preference Optimization with a Reference-Free Reward (Meng et al. 2024,
eq. 6).

Protocol: the paper's eq. 6; equal to huggingface/trl `CPOTrainer.get_batch_loss_metrics`
(trl 1.16, loss_type "simpo", cpo_alpha 0) on the same log-probs
(tests/test_objectives_kto_orpo_simpo_cpo.py). No deliberate difference.

The implicit reward is the *average* log-prob of a response, β/|y| · log π(y|x), which
is what generation ranks by and removes DPO's length bias; a target margin γ asks the
chosen reward to exceed the rejected one by at least γ. Per derived pair (w better
than l), with p(y) = log π(y|x) / |y|:

    loss = -log σ(β · (p(y_w) - p(y_l)) - γ)

No reference model. This equals TRL's CPOTrainer with loss_type="simpo",
cpo_alpha=0 (its `simpo_gamma` is γ). Defaults follow the paper's ranges (β 2.0-2.5,
γ 0.3-1.6; γ/β ≈ 0.5). Units are pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from drover.train.objective import ObjectiveOutput, ObjectiveSpec, SequenceBatch
from drover.train.objectives.dpo import implicit_reward_metrics
from drover.train.objectives.pairs import mean_token_logps, preference_pairs, resolve_params

if TYPE_CHECKING:
    import torch


@dataclass
class SimPOParams:
    beta: float = 2.0    # β: scale of the average log-prob reward
    gamma: float = 1.0   # γ: target reward margin


def simpo_loss(avg_w: "torch.Tensor", avg_l: "torch.Tensor", beta: float, gamma: float) -> "torch.Tensor":
    """Per-pair SimPO loss (P,) from (P,) length-normalised log-probs of chosen and rejected."""
    import torch.nn.functional as F

    return -F.logsigmoid(beta * (avg_w - avg_l) - gamma)


def simpo_objective(batch: SequenceBatch, params: Any = None) -> ObjectiveOutput:
    p = resolve_params(SimPOParams, params)
    hi, lo = preference_pairs(batch)
    if len(hi) == 0:
        return ObjectiveOutput(batch.seq_logps.sum() * 0.0, 0, {})
    v = mean_token_logps(batch)                                                   # (N,)
    loss = simpo_loss(v[hi], v[lo], p.beta, p.gamma)
    return ObjectiveOutput(loss.sum(), len(hi), implicit_reward_metrics(p.beta * v[hi], p.beta * v[lo]))


SPEC = ObjectiveSpec(
    name="simpo", fn=simpo_objective, data="ranked", min_responses=2, needs_scores=True,
    paper="Meng et al. 2024, SimPO: Simple Preference Optimization with a Reference-Free Reward",
    formula="-log σ(β[p(y_w) - p(y_l)] - γ), p = mean token log-prob, no reference",
    params=SimPOParams,
)
