"""Online DPO (Guo et al. 2024, "Direct Language Model Alignment from Online AI Feedback",
arXiv:2402.04792; TRL's OnlineDPOTrainer).

Each step the *current* policy samples G >= 2 responses per prompt; the reward spec (a
reward model, or a judge's rating: online AI feedback) labels the best one chosen and the
worst one rejected, and the policy takes a DPO step on those fresh pairs (Rafailov et al.
2023, eq. 7, the same `dpo_loss` as offline DPO):

    loss = -log σ(β [(log π - log π_ref)(y_w) - (log π - log π_ref)(y_l)])

Prompts whose responses all score the same give no pair. "Advantages" here are the labels:
+1 on the chosen response, -1 on the rejected one, 0 elsewhere; units are pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from drover.train.objective import ObjectiveOutput
from drover.train.objectives.dpo import dpo_loss, implicit_reward_metrics
from drover.train.online.algorithm import Advantages, AlgorithmSpec, Current, Rollout


@dataclass
class OnlineDpoParams:
    beta: float = 0.1


def advantages(rollout: Rollout, params: OnlineDpoParams) -> Advantages:
    grouped = rollout.rewards.view(-1, rollout.group_size)
    labels = torch.zeros_like(grouped)
    best, worst = grouped.argmax(dim=1), grouped.argmin(dim=1)
    rows = torch.arange(grouped.shape[0])
    has_pair = grouped.max(dim=1).values > grouped.min(dim=1).values
    labels[rows[has_pair], best[has_pair]] = 1.0
    labels[rows[has_pair], worst[has_pair]] = -1.0
    return Advantages(labels.reshape(-1), metrics={"pairs": float(has_pair.sum())})


def loss(current: Current, rollout: Rollout, adv: Advantages, params: OnlineDpoParams) -> ObjectiveOutput:
    mask = rollout.mask.to(current.logps.dtype)
    ratio = ((current.logps - rollout.ref_logps) * mask).sum(-1)      # (N,) log π/π_ref per response
    chosen = torch.nonzero(adv.advantages > 0).squeeze(-1)
    rejected = torch.nonzero(adv.advantages < 0).squeeze(-1)          # same group order as `chosen`
    if chosen.numel() == 0:
        return ObjectiveOutput(current.logps.sum() * 0.0, 0, {})
    zeros = ratio.new_zeros(chosen.numel())
    losses = dpo_loss(ratio[chosen], ratio[rejected], zeros, zeros, params.beta)
    return ObjectiveOutput(losses.sum(), float(chosen.numel()),
                           implicit_reward_metrics(params.beta * ratio[chosen], params.beta * ratio[rejected]))


SPEC = AlgorithmSpec("online-dpo", advantages, loss, OnlineDpoParams, min_group_size=2, at_sampling_temperature=False,
                     paper="Guo et al. 2024, Online AI Feedback (arXiv:2402.04792); DPO: Rafailov et al. 2023")
