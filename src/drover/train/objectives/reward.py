"""Pairwise (Bradley-Terry) reward-model loss on a scalar head.

Protocol: InstructGPT eq. 1, in the form of huggingface/trl `RewardTrainer.compute_loss`
(trl 1.16: the optional `margin` column, `center_rewards_coefficient`); checked on
hand-derived values (tests/test_objectives_losses.py).

Ouyang et al. 2022 (InstructGPT, eq. 1) and OpenAI 2023 (GPT-4 technical report,
§3.2): for every derived pair (h better than l) of a record,

    loss = -log σ(r_h - r_l - margin · (s_h - s_l))          (margin: Touvron et al. 2023, Llama 2)
         + centering · (r_h + r_l)²                           (Eisenstein et al. 2023; TRL's
                                                               `center_rewards_coefficient` form)

The margin term asks for a larger reward gap where the scores differ more; it is off
(0) by default and ignored for unscored records. Centering keeps the reward's mean
near zero, so rewards of different runs are comparable. Units are pairs: a record
with K scored responses contributes its C(K,2) pairs with s_h > s_l (ties skipped).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from drover.train.objective import ObjectiveOutput, ObjectiveSpec, SequenceBatch
from drover.train.objectives.pairs import preference_pairs, resolve_params

if TYPE_CHECKING:
    import torch


@dataclass
class RewardParams:
    margin: float = 0.0      # weight of the score difference subtracted from the reward gap
    centering: float = 0.0   # weight of the (r_h + r_l)² auxiliary loss


def reward_pair_loss(r_h: "torch.Tensor", r_l: "torch.Tensor", score_gap: "torch.Tensor | None" = None,
                     margin: float = 0.0, centering: float = 0.0) -> "torch.Tensor":
    """Per-pair loss, shape (P,) from rewards (P,) of the better and worse response.

    `score_gap` (P,) is s_h - s_l (NaN for unscored records: no margin there).
    """
    import torch
    import torch.nn.functional as F

    gap = r_h - r_l
    if margin and score_gap is not None:
        gap = gap - margin * torch.nan_to_num(score_gap, nan=0.0)
    loss = -F.logsigmoid(gap)
    if centering:
        loss = loss + centering * (r_h + r_l) ** 2
    return loss


def reward_objective(batch: SequenceBatch, params: Any = None) -> ObjectiveOutput:
    p = resolve_params(RewardParams, params)
    if batch.rewards is None:
        raise ValueError("the reward objective needs a scalar head (batch.rewards is None)")
    rewards = batch.rewards.float().reshape(-1)                         # (N,)
    hi, lo = preference_pairs(batch)                                    # (P,), (P,)
    if len(hi) == 0:
        return ObjectiveOutput(rewards.sum() * 0.0, 0, {})
    r_h, r_l = rewards[hi], rewards[lo]
    loss = reward_pair_loss(r_h, r_l, batch.scores[hi] - batch.scores[lo], p.margin, p.centering)
    gap = (r_h - r_l).detach()
    metrics = {
        "accuracy": float((gap > 0).sum()),
        "reward_gap": float(gap.sum()),
        "reward_mean": float(((r_h + r_l) / 2).detach().sum()),
    }
    return ObjectiveOutput(loss.sum(), len(hi), metrics)


SPEC = ObjectiveSpec(
    name="reward",
    fn=reward_objective,
    data="ranked",
    scalar_head=True,
    min_responses=2,
    needs_scores=True,
    paper="Ouyang et al. 2022, Training language models to follow instructions with human feedback (eq. 1); "
          "OpenAI 2023, GPT-4 Technical Report §3.2",
    formula="-log σ(r(y_w) - r(y_l)) on a scalar head (Bradley-Terry)",
    params=RewardParams,
)
