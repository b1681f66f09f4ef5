"""Identity Preference Optimisation (Azar et al. 2023, A General Theoretical Paradigm
to Understand Learning from Human Preferences, eq. 17).

Protocol: the paper's eq. 17; equal to huggingface/trl `DPOTrainer._compute_loss` (trl 1.16,
loss_type "ipo", length-normalised as TRL) on the same log-probs (tests/test_objectives_losses.py).

Per derived pair (w better than l), with h = ρ(y_w) - ρ(y_l) and ρ the policy/reference
log-ratio,

    loss = (h - 1 / (2τ))²

a squared loss that regresses the log-ratio gap to a fixed target instead of pushing
it to infinity (DPO's overfitting on deterministic preferences). τ is called `beta`
as in TRL. With `length_normalise` (default) each ρ is divided by the response's
token count: TRL does this after confirming with the IPO authors that the paper's
results use the normalised form; set it false for the literal sequence-level formula.
Units are pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from drover.train.objective import ObjectiveOutput, ObjectiveSpec, SequenceBatch
from drover.train.objectives.dpo import log_ratios, implicit_reward_metrics
from drover.train.objectives.pairs import preference_pairs, resolve_params

if TYPE_CHECKING:
    import torch


@dataclass
class IPOParams:
    beta: float = 0.1              # τ: the target gap is 1/(2τ)
    length_normalise: bool = True  # per-token log-ratios (TRL, and the IPO authors' runs)


def ipo_loss(ratio_w: "torch.Tensor", ratio_l: "torch.Tensor", beta: float) -> "torch.Tensor":
    """Per-pair IPO loss (P,) from (P,) policy/reference log-ratios of chosen and rejected."""
    return (ratio_w - ratio_l - 1.0 / (2.0 * beta)) ** 2


def ipo_objective(batch: SequenceBatch, params: Any = None) -> ObjectiveOutput:
    p = resolve_params(IPOParams, params)
    ratio = log_ratios(batch, p.length_normalise)
    hi, lo = preference_pairs(batch)
    if len(hi) == 0:
        return ObjectiveOutput(batch.seq_logps.sum() * 0.0, 0, {})
    loss = ipo_loss(ratio[hi], ratio[lo], p.beta)
    return ObjectiveOutput(loss.sum(), len(hi), implicit_reward_metrics(p.beta * ratio[hi], p.beta * ratio[lo]))


SPEC = ObjectiveSpec(
    name="ipo", fn=ipo_objective, data="ranked", needs_reference=True, min_responses=2, needs_scores=True,
    paper="Azar et al. 2023, A General Theoretical Paradigm to Understand Learning from Human Preferences",
    formula="(h - 1/(2β))² on the log-ratio gap h",
    params=IPOParams,
)
