"""Contrastive Preference Optimization (Xu et al. 2024, Contrastive Preference
Optimization: Pushing the Boundaries of LLM Performance in Machine Translation, eq. 3-6).

Protocol: the paper's eq. 3-6; equal to huggingface/trl `CPOTrainer.get_batch_loss_metrics`
(trl 1.16, loss_type "sigmoid", `cpo_alpha`) on the same log-probs when chosen lengths are equal
(tests/test_objectives_kto_orpo_simpo_cpo.py). Deliberate difference: the NLL is a per-response
token mean (TRL: a mean over all chosen tokens of the batch).

DPO's sigmoid loss with the reference dropped (π_ref taken as uniform, which the paper
shows upper-bounds the DPO loss), plus a behaviour-cloning NLL on the preferred
response that keeps the policy on the data; per derived pair (w better than l), with
log π the policy's sequence log-prob sums:

    loss = -log σ(β · (log π(y_w|x) - log π(y_l|x)))  +  α · NLL(y_w|x)

NLL is the per-token mean of the chosen response (TRL's CPOTrainer averages the
cross-entropy over the chosen tokens; drover averages per response, so a pair weighs
the same whatever its length — equal when the chosen responses have equal lengths).
α is TRL's `cpo_alpha` (default 1, as the paper's L_prefer + L_NLL). α = 0 gives
TRL's CPO `sigmoid` loss alone. Units are pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from drover.train.objective import ObjectiveOutput, ObjectiveSpec, SequenceBatch
from drover.train.objectives.dpo import dpo_loss, implicit_reward_metrics
from drover.train.objectives.pairs import mean_token_nll, preference_pairs, resolve_params


@dataclass
class CPOParams:
    beta: float = 0.1         # β: temperature of the preference term (the paper uses 0.1)
    nll_weight: float = 1.0   # α: weight of the per-token NLL on the chosen response (TRL's cpo_alpha)


def cpo_objective(batch: SequenceBatch, params: Any = None) -> ObjectiveOutput:
    p = resolve_params(CPOParams, params)
    hi, lo = preference_pairs(batch)
    if len(hi) == 0:
        return ObjectiveOutput(batch.seq_logps.sum() * 0.0, 0, {})
    logp_w, logp_l = batch.seq_logps[hi], batch.seq_logps[lo]                      # (P,)
    zeros = logp_w.new_zeros(len(hi))
    prefer = dpo_loss(logp_w, logp_l, zeros, zeros, p.beta)                        # (P,)
    nll = mean_token_nll(batch, hi)                                                # (P,)
    loss = prefer.sum() + p.nll_weight * nll.sum()
    metrics = {"preference_loss": float(prefer.detach().sum()), "nll": float(nll.detach().sum()),
               **implicit_reward_metrics(p.beta * logp_w, p.beta * logp_l)}
    return ObjectiveOutput(loss, len(hi), metrics)


SPEC = ObjectiveSpec(
    name="cpo", fn=cpo_objective, data="ranked", min_responses=2, needs_scores=True,
    paper="Xu et al. 2024, Contrastive Preference Optimization: Pushing the Boundaries of LLM Performance in "
          "Machine Translation",
    formula="-log σ(β[log π(y_w) - log π(y_l)]) + α·NLL(y_w), no reference",
    params=CPOParams,
)
