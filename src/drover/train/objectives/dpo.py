"""Direct Preference Optimization, and its length-normalised variant.

Protocol: the paper's eq. 7; equal to huggingface/trl `DPOTrainer._compute_loss` (trl 1.16,
loss_type "sigmoid"; "sigmoid_norm" for dpo-ln) on the same log-probs (tests/test_objectives_losses.py).

DPO (Rafailov et al. 2023, eq. 7), per derived pair (w better than l):

    ρ(y)  = log π(y|x) - log π_ref(y|x)                 (sequence log-prob sums)
    loss  = -log σ(β · (ρ(y_w) - ρ(y_l)))

β·ρ(y) is the "implicit reward"; the metrics report its margin β(ρ_w - ρ_l) and the
fraction of pairs where it ranks w above l (TRL's `rewards/margins`, `rewards/accuracies`).

Length-normalised DPO (`dpo-ln`; Lambert et al. 2024, Tülu 3 §5, eq. 6; TRL's
`sigmoid_norm`) divides each ρ by the response's token count, which removes DPO's
pull toward longer responses; its β is per token, so its default is larger (Tülu 3
uses β = 5).

Units are pairs; a record with K responses gives its C(K,2) pairs with s_w > s_l.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from drover.train.objective import ObjectiveOutput, ObjectiveSpec, SequenceBatch
from drover.train.objectives.pairs import preference_pairs, resolve_params

if TYPE_CHECKING:
    import torch


@dataclass
class DPOParams:
    beta: float = 0.1   # strength of the KL tie to the reference (Rafailov et al. use 0.1-0.5)


@dataclass
class DPOLNParams:
    beta: float = 5.0   # per-token β (Tülu 3's length-normalised DPO)


def dpo_loss(policy_w: "torch.Tensor", policy_l: "torch.Tensor", ref_w: "torch.Tensor", ref_l: "torch.Tensor",
             beta: float) -> "torch.Tensor":
    """Per-pair DPO loss (P,) from the (P,) log-probs of chosen/rejected under policy and reference."""
    import torch.nn.functional as F

    return -F.logsigmoid(beta * ((policy_w - ref_w) - (policy_l - ref_l)))


def log_ratios(batch: SequenceBatch, normalise: bool) -> "torch.Tensor":
    if batch.ref_seq_logps is None:
        raise ValueError("DPO needs reference log-probs (batch.ref_seq_logps is None)")
    ratio = batch.seq_logps - batch.ref_seq_logps.to(batch.seq_logps.dtype)      # (N,)
    if normalise:
        ratio = ratio / batch.seq_lengths.clamp(min=1).to(ratio.dtype)
    return ratio


def implicit_reward_metrics(reward_w: "torch.Tensor", reward_l: "torch.Tensor") -> dict[str, float]:
    """Sums over pairs (the engine averages): margin, accuracy, chosen and rejected rewards."""
    margin = (reward_w - reward_l).detach()
    return {
        "reward_margin": float(margin.sum()),
        "reward_accuracy": float((margin > 0).sum()),
        "reward_chosen": float(reward_w.detach().sum()),
        "reward_rejected": float(reward_l.detach().sum()),
    }


def _pairwise(batch: SequenceBatch, beta: float, normalise: bool) -> ObjectiveOutput:
    ratio = log_ratios(batch, normalise)
    hi, lo = preference_pairs(batch)
    if len(hi) == 0:
        return ObjectiveOutput(batch.seq_logps.sum() * 0.0, 0, {})
    zeros = ratio.new_zeros(len(hi))
    loss = dpo_loss(ratio[hi], ratio[lo], zeros, zeros, beta)
    return ObjectiveOutput(loss.sum(), len(hi), implicit_reward_metrics(beta * ratio[hi], beta * ratio[lo]))


def dpo_objective(batch: SequenceBatch, params: Any = None) -> ObjectiveOutput:
    return _pairwise(batch, resolve_params(DPOParams, params).beta, normalise=False)


def dpo_ln_objective(batch: SequenceBatch, params: Any = None) -> ObjectiveOutput:
    return _pairwise(batch, resolve_params(DPOLNParams, params).beta, normalise=True)


SPEC = ObjectiveSpec(
    name="dpo", fn=dpo_objective, data="ranked", needs_reference=True, min_responses=2, needs_scores=True,
    paper="Rafailov et al. 2023, Direct Preference Optimization: Your Language Model is Secretly a Reward Model",
    formula="-log σ(β[(log π - log π_ref)(y_w) - (log π - log π_ref)(y_l)])",
    params=DPOParams,
)

LN_SPEC = ObjectiveSpec(
    name="dpo-ln", fn=dpo_ln_objective, data="ranked", needs_reference=True, min_responses=2, needs_scores=True,
    paper="Lambert et al. 2024, Tülu 3 (length-normalized DPO); Rafailov et al. 2023",
    formula="DPO on per-token log-ratios",
    params=DPOLNParams,
)
