"""SLiC-HF: sequence likelihood calibration with human feedback (Zhao et al. 2023,
SLiC-HF: Sequence Likelihood Calibration with Human Feedback, eq. 1).

Per derived pair (w better than l), with log π the policy's sequence log-prob sums
(no reference model):

    loss = max(0, δ - log π(y_w|x) + log π(y_l|x))  -  λ · log π(y_ref|x)

Protocol: the paper's eq. 1 (no code released). The hinge asks the better response to be
more likely by a margin δ; the regulariser is the sequence log-likelihood (a sum over its
tokens) of y_ref, the SFT target, which drover reads from the Ranked record's `reference`
(the engine adds it as the rank -1 sequence). A record without one (RSO or HH-RLHF pairs)
is regularised toward its best response instead; with λ = 0 no target is needed at all.
The regulariser counts once per pair, so units stay pairs. λ = 0 gives the
plain hinge loss, which equals TRL's `hinge` DPO loss with β = 1/δ, scaled by δ, when the
reference log-probs are zero.
Deliberate, optional difference: `nll_per_token=true` divides the regulariser by the
reference's token count (as RRHF/PRO/Tuna's NLL terms), so λ means the same whatever the
lengths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from drover.train.objective import ObjectiveOutput, ObjectiveSpec, SequenceBatch
from drover.train.objectives.pairs import (mean_token_logps, nll_target, ordered_lists, preference_pairs,
                                          resolve_params)

if TYPE_CHECKING:
    import torch


@dataclass
class SLiCParams:
    delta: float = 1.0           # δ: required log-likelihood gap
    nll_weight: float = 0.1      # λ: weight of -log π(y_ref|x)
    nll_per_token: bool = False  # drover option: per-token mean instead of the paper's sequence sum


def slic_hinge(logp_w: "torch.Tensor", logp_l: "torch.Tensor", delta: float) -> "torch.Tensor":
    """Per-pair hinge (P,) from (P,) sequence log-probs of the better/worse response."""
    import torch

    return torch.relu(delta - logp_w + logp_l)


def slic_objective(batch: SequenceBatch, params: Any = None) -> ObjectiveOutput:
    p = resolve_params(SLiCParams, params)
    hi, lo = preference_pairs(batch)
    if len(hi) == 0:
        return ObjectiveOutput(batch.seq_logps.sum() * 0.0, 0, {})
    hinge = slic_hinge(batch.seq_logps[hi], batch.seq_logps[lo], p.delta)       # (P,)
    loss = hinge.sum()
    nll_sum = batch.seq_logps.new_zeros(())
    if p.nll_weight:
        index, _ = ordered_lists(batch)                          # (G, K)
        targets = nll_target(batch, index)                       # (G,) each record's reference (rank -1), else best
        row_group = batch.group[index[:, 0]]                     # (G,)
        pairs_per_record = (batch.group[hi][None, :] == row_group[:, None]).sum(dim=1)
        logps = mean_token_logps(batch) if p.nll_per_token else batch.seq_logps   # (N,)
        nll_sum = -(logps[targets] * pairs_per_record).sum()
        loss = loss + p.nll_weight * nll_sum
    gap = (batch.seq_logps[hi] - batch.seq_logps[lo]).detach()
    metrics = {"hinge": float(hinge.detach().sum()), "nll": float(nll_sum.detach()),
               "pair_accuracy": float((gap > 0).sum())}
    return ObjectiveOutput(loss, len(hi), metrics)


SPEC = ObjectiveSpec(
    name="slic", fn=slic_objective, data="ranked", wants_reference_text=True, min_responses=2, needs_scores=True,
    paper="Zhao et al. 2023, SLiC-HF: Sequence Likelihood Calibration with Human Feedback",
    formula="max(0, δ - log π(y_w) + log π(y_l)) + λ·NLL(best), no reference",
    params=SLiCParams,
)
