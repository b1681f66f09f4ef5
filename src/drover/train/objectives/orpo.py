"""ORPO: Monolithic Preference Optimization without Reference Model (Hong et al. 2024,
eq. 2-7).

Protocol: the paper's eq. 2-7; the odds-ratio term equals huggingface/trl
`ORPOTrainer.get_batch_loss_metrics` (trl 1.16) on the same inputs
(tests/test_objectives_kto_orpo_simpo_cpo.py). Deliberate difference: the NLL is the paper's,
over response tokens per response (TRL also counts prompt tokens and averages over the batch).

SFT and preference alignment in one loss: the NLL of the chosen response plus a term
that raises the odds of the chosen response over the rejected one. ORPO defines the
likelihood as the length-normalised P(y|x) = exp(log π(y|x) / |y|) (eq. 4), so with
p(y) = log π(y|x) / |y| and odds(y) = P / (1 - P),

    log OR = log odds(y_w) - log odds(y_l) = (p_w - p_l) - (log(1 - e^{p_w}) - log(1 - e^{p_l}))
    loss   = NLL(y_w|x)  -  λ · log σ(log OR)

per derived pair (w better than l). No reference model. NLL is the per-token mean of
the chosen response (the paper's L_SFT, eq. 2). TRL's ORPOTrainer computes the same
odds-ratio term (its `beta` is λ), but its NLL runs over the prompt tokens too and
averages over all chosen tokens of the batch; the two agree when the prompt is a single
token and the chosen responses have equal lengths. Units are pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from drover.train.objective import ObjectiveOutput, ObjectiveSpec, SequenceBatch
from drover.train.objectives.dpo import implicit_reward_metrics
from drover.train.objectives.pairs import mean_token_logps, mean_token_nll, preference_pairs, resolve_params

if TYPE_CHECKING:
    import torch

LOG_HALF = -0.6931471805599453   # log(1/2): where log(1 - e^x) switches form (Mächler 2012)


@dataclass
class ORPOParams:
    odds_ratio_weight: float = 0.1   # λ: weight of the odds-ratio term (the paper's λ = 0.1; TRL's beta)


def log1mexp(x: "torch.Tensor") -> "torch.Tensor":
    """log(1 - e^x) for x < 0, accurate near 0 (expm1) and far below it (log1p)."""
    import torch

    return torch.where(x < LOG_HALF, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def log_odds_ratio(avg_w: "torch.Tensor", avg_l: "torch.Tensor") -> "torch.Tensor":
    """(P,) log odds(y_w) - log odds(y_l) from (P,) average token log-probs (all < 0)."""
    return (avg_w - avg_l) - (log1mexp(avg_w) - log1mexp(avg_l))


def orpo_objective(batch: SequenceBatch, params: Any = None) -> ObjectiveOutput:
    import torch.nn.functional as F

    p = resolve_params(ORPOParams, params)
    hi, lo = preference_pairs(batch)
    if len(hi) == 0:
        return ObjectiveOutput(batch.seq_logps.sum() * 0.0, 0, {})
    # a log-prob of exactly 0 (P = 1) has infinite odds: keep it just below
    v = mean_token_logps(batch).clamp(max=-1e-6)                                 # (N,)
    log_or = log_odds_ratio(v[hi], v[lo])                                          # (P,)
    ratio = F.logsigmoid(log_or)                                                   # (P,)
    nll = mean_token_nll(batch, hi)                                                # (P,)
    loss = nll.sum() - p.odds_ratio_weight * ratio.sum()
    metrics = {"nll": float(nll.detach().sum()), "log_odds_ratio": float(ratio.detach().sum()),
               "log_odds_chosen": float(log_or.detach().sum()),
               **implicit_reward_metrics(p.odds_ratio_weight * v[hi], p.odds_ratio_weight * v[lo])}
    return ObjectiveOutput(loss, len(hi), metrics)


SPEC = ObjectiveSpec(
    name="orpo", fn=orpo_objective, data="ranked", min_responses=2, needs_scores=True,
    paper="Hong et al. 2024, ORPO: Monolithic Preference Optimization without Reference Model",
    formula="NLL(y_w) - λ·log σ(log odds(y_w) - log odds(y_l)), length-normalised, no reference",
    params=ORPOParams,
)
