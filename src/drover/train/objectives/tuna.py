"""Tuna: instruction tuning with feedback from large language models (Li et al. 2023,
Tuna: Instruction Tuning using Feedback from Large Language Models, eq. 2-3).

Protocol: the paper's eq. 2-3 and microsoft/LMOps `tuna/src/train_tuna.py` (its loss;
`mle_on=all` reproduces the released code, `reference` the paper).

Per record with N responses ordered best first (positions 0..N-1) and
v = log p(r|i) / |r| (mean token log-prob),

    loss = Σ_{j<k} max(0, v_k - v_j + m·(k - j))  +  λ · MLE

the margin grows with the distance in the ranking, so responses far apart must be
separated more (as in BRIO). m = 0.1 and λ = 1.0 by default. Order comes from the
positions (Tuna's probabilistic and contextual rankings are orders, not scores).

`mle_on` chooses the MLE term:
  - `reference` (the paper): per-token NLL of the record's original response, the
    `reference` field, passed by the engine as the rank -1 sequence.
  - `all` (the released code): the token-level NLL averaged over *all* candidates of
    the record (one flattened cross-entropy), which also pulls up the likelihood of
    the worse responses. Kept to reproduce the released checkpoints.
Units are records; the metric `ranking_accuracy` is the fraction of pairs j<k with
v_j > v_k, averaged over records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from drover.train.objective import ObjectiveOutput, ObjectiveSpec, SequenceBatch
from drover.train.objectives.pairs import (mean_token_logps, nll_target, ordered_lists, position_pairs,
                                          ranking_accuracy_sum, resolve_params)

if TYPE_CHECKING:
    import torch


@dataclass
class TunaParams:
    margin: float = 0.1                               # m
    mle_weight: float = 1.0                           # λ
    mle_on: Literal["reference", "all"] = "reference"


def tuna_rank_loss(values: "torch.Tensor", margin: float) -> "torch.Tensor":
    """Σ_{j<k} max(0, v_k - v_j + m(k-j)) for one ranking; `values` (K,) best first."""
    import torch

    k = torch.arange(len(values), device=values.device)
    gaps = (k[None, :] - k[:, None]).to(values.dtype)                # (K, K): k - j
    hinge = torch.relu(values[None, :] - values[:, None] + margin * gaps)
    upper = torch.triu(torch.ones_like(hinge, dtype=torch.bool), diagonal=1)  # j < k
    return hinge[upper].sum()


def tuna_objective(batch: SequenceBatch, params: Any = None) -> ObjectiveOutput:
    import torch

    p = resolve_params(TunaParams, params)
    v = mean_token_logps(batch)                                      # (N,)
    index, valid = ordered_lists(batch)                              # (G, K)
    if index.shape[0] == 0:
        return ObjectiveOutput(batch.seq_logps.sum() * 0.0, 0, {})
    rows = [index[g][valid[g]] for g in range(index.shape[0])]       # each record's sequences, best first
    rank_loss = sum(tuna_rank_loss(v[row], p.margin) for row in rows)
    if p.mle_on == "reference":
        mle = -v[nll_target(batch, index)]                           # (G,) per-token NLL of the reference
    else:                                                            # one cross-entropy over all candidates
        tokens = batch.seq_lengths.to(v.dtype)
        mle = torch.stack([-batch.seq_logps[row].sum() / tokens[row].sum().clamp(min=1) for row in rows])
    loss = rank_loss + p.mle_weight * mle.sum()
    hi, lo = position_pairs(index, valid)
    metrics = {"rank_loss": float(rank_loss.detach()), "mle": float(mle.detach().sum()),
               "ranking_accuracy": ranking_accuracy_sum(v, batch.group, hi, lo)}
    return ObjectiveOutput(loss, index.shape[0], metrics)


SPEC = ObjectiveSpec(
    name="tuna", fn=tuna_objective, data="ranked", needs_reference_text=True, min_responses=2,
    paper="Li et al. 2023, Tuna: Instruction Tuning using Feedback from Large Language Models",
    formula="Σ_{j<k} max(0, v_k - v_j + m(k-j)) + λ·MLE(reference)",
    params=TunaParams,
)
