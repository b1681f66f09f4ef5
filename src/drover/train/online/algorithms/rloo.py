"""RLOO: REINFORCE Leave-One-Out (Ahmadian et al. 2024, "Back to Basics", arXiv:2402.14740;
Kool et al. 2019).

A sequence-level method: each response is one action. Its reward is the score minus β times
the summed log-ratio to the reference (KL in the reward, as RLHF's PPO), and its baseline is
the mean reward of the *other* G-1 responses to the same prompt:

    r_i = s_i - β Σ_t (log π_old - log π_ref)(y_i,t),   Â_i = r_i - (Σ_{j≠i} r_j) / (G-1)
    L = mean_i -min(ρ_i Â_i, clip(ρ_i, 1-ε_low, 1+ε_high) Â_i),   ρ_i = π(y_i) / π_old(y_i)

(sequence-level ratio of the summed log-probs), as TRL 1.16's `RLOOTrainer`; the loss
equals its `_compute_loss` on the same inputs (tests/test_online_losses.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from drover.train.objective import ObjectiveOutput
from drover.train.online.algorithm import Advantages, AlgorithmSpec, Current, Rollout, batch_mean_std
from drover.train.online.algorithms.grpo import clipped_surrogate


@dataclass
class RlooParams:
    beta: float = 0.05              # KL coefficient in the reward (TRL's default)
    epsilon_low: float = 0.2
    epsilon_high: float = 0.2
    normalize_advantages: bool = False  # whiten over the batch (TRL option)


def advantages(rollout: Rollout, params: RlooParams) -> Advantages:
    mask = rollout.mask.to(rollout.old_logps.dtype)
    kl = ((rollout.old_logps - rollout.ref_logps) * mask).sum(-1)   # (N,)
    r = rollout.rewards - params.beta * kl
    grouped = r.view(-1, rollout.group_size)
    baseline = (grouped.sum(dim=1, keepdim=True) - grouped) / (rollout.group_size - 1)
    adv = (grouped - baseline).reshape(-1)
    kept = rollout.mask.any(dim=-1)   # responses trained on (the loop leaves unjudged groups out)
    if params.normalize_advantages:
        mean, std = batch_mean_std(adv, rollout.world_sum, kept)
        adv = (adv - mean) / (std + 1e-4)
    return Advantages(adv, metrics={"seq_kl": float(batch_mean_std(kl, rollout.world_sum, kept)[0])})


def loss(current: Current, rollout: Rollout, adv: Advantages, params: RlooParams) -> ObjectiveOutput:
    mask = rollout.mask.to(current.logps.dtype)
    kept = rollout.mask.any(dim=-1).to(mask.dtype)
    logps = (current.logps * mask).sum(-1)
    old = (rollout.old_logps * mask).sum(-1)
    ratio = torch.exp(logps - old)
    per_seq = clipped_surrogate(ratio, adv.advantages, params.epsilon_low, params.epsilon_high) * kept
    kl = ((current.logps - rollout.ref_logps) * mask).sum(-1)
    return ObjectiveOutput(per_seq.sum(), float(kept.sum()), {"seq_kl": float(kl.detach().sum())})


SPEC = AlgorithmSpec("rloo", advantages, loss, RlooParams, min_group_size=2,
                     paper="Ahmadian et al. 2024, Back to Basics: REINFORCE (arXiv:2402.14740)")
