"""KTO: Model Alignment as Prospect Theoretic Optimization (Ethayarajh et al. 2024,
eq. 7-8), as TRL's KTOTrainer computes it.

Protocol: the paper's eq. 7-8; equal to huggingface/trl `KTOTrainer._compute_loss` (trl 1.16)
on the same log-probs, its KL sequences included (tests/test_objectives_kto_orpo_simpo_cpo.py).
Deliberate differences: z_0 is averaged per micro-batch, not across processes; the mismatched
sequences are scored in the policy's forward with detached values.

KTO learns from *unpaired* examples, each a response labelled desirable or undesirable.
With ρ(y) = log π(y|x) - log π_ref(y|x) (sequence log-prob sums) and z_0 the reference
point, an estimate of KL(π‖π_ref) that no gradient flows through,

    desirable:    loss = λ_D · (1 - σ(β · (ρ(y) - z_0)))
    undesirable:  loss = λ_U · (1 - σ(β · (z_0 - ρ(y))))

averaged over the labelled responses (the units). z_0 follows TRL: the mean of
ρ(y') over *mismatched* pairs (x, y') — each prompt followed by the responses of another
record (the engine's rank -2 sequences: the previous record's, TRL's rotation of
completions) — of the micro-batch, clamped at 0. TRL additionally averages it over
processes, and computes the mismatched log-probs without building a graph; drover
scores them in the same forward (their values are detached, so no gradient reaches
them).

Which responses are desirable (documented data contract):
- a record with one response is a labelled example: desirable when its score is
  ≥ `threshold`, else undesirable. The labelled formats (`drover convert --from
  unpaired`: `{"messages"|"prompt", "completion", "label": bool}`) store true/false
  as score 1/0, so the default threshold 0.5 reads them as labelled;
- a record with several responses (`label_by: rank`, default): its best (rank 0) is
  desirable and its worst (last) undesirable, the ones in between are not trained on;
  with `label_by: score` every scored response is labelled by the threshold instead
  (unscored ones are skipped). A record whose responses all tie is reported before
  training in either mode, as is a lone response without a score.
λ_D/λ_U balance unequal counts (the paper's eq. 8 asks λ_D·n_D/(λ_U·n_U) in [1, 4/3]).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from drover.train.objective import MISMATCHED_RANK, ObjectiveOutput, ObjectiveSpec, SequenceBatch
from drover.train.objectives.dpo import log_ratios
from drover.train.objectives.pairs import resolve_params

if TYPE_CHECKING:
    import torch

    from drover.records import Record


@dataclass
class KTOParams:
    beta: float = 0.1                 # β: KTO's (and TRL's) default
    desirable_weight: float = 1.0     # λ_D
    undesirable_weight: float = 1.0   # λ_U
    label_by: Literal["rank", "score"] = "rank"   # how several responses of one record are labelled
    threshold: float = 0.5            # score ≥ threshold is desirable (lone responses; label_by=score)


def kto_labels(batch: SequenceBatch, label_by: str, threshold: float) -> tuple["torch.Tensor", "torch.Tensor"]:
    """(desirable, undesirable): (N,) bool masks from the batch's structure (rank, scores, group)."""
    import torch

    trained = batch.rank >= 0
    counts = torch.bincount(batch.group[trained], minlength=int(batch.group.max()) + 1 if len(batch.group) else 0)
    size = counts[batch.group]                                                   # (N,) responses in the record
    lone = trained & (size == 1)
    scored = ~torch.isnan(batch.scores)
    by_score = trained & scored & (lone | (label_by == "score"))
    by_rank = trained & ~lone & (label_by == "rank")
    above = batch.scores >= threshold
    desirable = (by_score & above) | (by_rank & (batch.rank == 0))
    undesirable = (by_score & ~above) | (by_rank & (batch.rank == size - 1))
    return desirable, undesirable


def kl_estimate(ratio: "torch.Tensor", rank: "torch.Tensor") -> "torch.Tensor":
    """z_0: mean log-ratio of the mismatched sequences (rank -2), detached, clamped at 0."""
    mismatched = rank == MISMATCHED_RANK
    if not bool(mismatched.any()):
        return ratio.new_zeros(())
    return ratio[mismatched].detach().mean().clamp(min=0)


def kto_loss(ratio: "torch.Tensor", desirable: "torch.Tensor", undesirable: "torch.Tensor", kl: "torch.Tensor",
             p: KTOParams) -> "torch.Tensor":
    """(N,) per-sequence KTO loss (0 on unlabelled sequences) from (N,) policy/reference log-ratios."""
    import torch

    chosen = p.desirable_weight * (1 - torch.sigmoid(p.beta * (ratio - kl)))
    rejected = p.undesirable_weight * (1 - torch.sigmoid(p.beta * (kl - ratio)))
    return torch.where(desirable, chosen, torch.where(undesirable, rejected, torch.zeros_like(ratio)))


def kto_objective(batch: SequenceBatch, params: Any = None) -> ObjectiveOutput:
    p = resolve_params(KTOParams, params)
    ratio = log_ratios(batch, normalise=False)                                   # (N,)
    desirable, undesirable = kto_labels(batch, p.label_by, p.threshold)
    units = int((desirable | undesirable).sum())
    if units == 0:
        return ObjectiveOutput(batch.seq_logps.sum() * 0.0, 0, {})
    kl = kl_estimate(ratio, batch.rank)
    loss = kto_loss(ratio, desirable, undesirable, kl, p)
    # β(ρ - z_0), signed so that positive is right: up for desirable, down for undesirable
    margin = (p.beta * (ratio - kl)).detach() * (desirable.to(ratio.dtype) - undesirable.to(ratio.dtype))
    metrics = {"kl": float(kl) * units, "desirable": float(desirable.sum()),
               "reward_margin": float(margin.sum()), "reward_accuracy": float((margin > 0).sum())}
    return ObjectiveOutput(loss.sum(), units, metrics)


def kto_record_problem(record: "Record") -> str | None:
    """Records KTO cannot label (checked before training, with the other data checks)."""
    responses = getattr(record, "responses", [])
    if len(responses) == 1 and (responses[0].score is None or math.isnan(responses[0].score)):
        return "a lone response without a score (KTO labels it desirable when score ≥ threshold)"
    if len(responses) > 1 and not record.pairs():
        return "all response scores tied (no desirable/undesirable split)"
    return None


SPEC = ObjectiveSpec(
    name="kto", fn=kto_objective, data="ranked", needs_reference=True, min_responses=1, needs_mismatched=True,
    record_problem=kto_record_problem,
    paper="Ethayarajh et al. 2024, KTO: Model Alignment as Prospect Theoretic Optimization",
    formula="λ_D(1 - σ(β[ρ(y) - z_0])) desirable, λ_U(1 - σ(β[z_0 - ρ(y)])) undesirable; unpaired",
    params=KTOParams,
)
