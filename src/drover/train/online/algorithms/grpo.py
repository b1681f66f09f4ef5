"""GRPO: Group Relative Policy Optimization (Shao et al. 2024, DeepSeekMath, arXiv:2402.03300).

No value model: a response's advantage is its reward normalised within its prompt's group
of G samples, Â_i = (r_i - mean_j r_j) / (std_j r_j + 1e-4) (unbiased std, as TRL), given to
every token of the response. The loss is PPO's clipped surrogate per token plus β times the
k3 estimate of KL(π || π_ref) per token:

    L = Σ_tokens [ -min(ρ_t Â, clip(ρ_t, 1-ε_low, 1+ε_high) Â) + β·KL_t ] / (tokens in the batch)

with ρ_t = π(y_t)/π_old(y_t). The token-sum over the whole batch's token count is DAPO's
aggregation (Yu et al. 2025) and TRL 1.16's default `loss_type="dapo"`; it equals TRL's
`GRPOTrainer._compute_loss` on the same inputs (tests/test_online_losses.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from drover.train.objective import ObjectiveOutput
from drover.train.online.algorithm import Advantages, AlgorithmSpec, Current, Rollout, batch_mean_std, token_kl_k3


@dataclass
class GrpoParams:
    beta: float = 0.04              # KL coefficient (DeepSeekMath 0.04; TRL's default is 0)
    epsilon_low: float = 0.2
    epsilon_high: float = 0.2       # DAPO's clip-higher raises this (0.28)
    scale_rewards: Literal["group", "batch", "none"] = "group"  # Dr. GRPO: "none"


def group_std(x: torch.Tensor, size: int) -> torch.Tensor:
    """Unbiased std within consecutive groups of `size`, repeated per member: (N,) -> (N,)."""
    return x.view(-1, size).std(dim=1).repeat_interleave(size)


def group_mean(x: torch.Tensor, size: int) -> torch.Tensor:
    return x.view(-1, size).mean(dim=1).repeat_interleave(size)


def advantages(rollout: Rollout, params: GrpoParams) -> Advantages:
    r, g = rollout.rewards, rollout.group_size
    adv = r - group_mean(r, g)
    if params.scale_rewards == "group":
        adv = adv / (group_std(r, g) + 1e-4)
    elif params.scale_rewards == "batch":
        adv = adv / (batch_mean_std(r, rollout.world_sum, rollout.mask.any(dim=-1))[1] + 1e-4)
    return Advantages(adv)


def clipped_surrogate(ratio: torch.Tensor, adv: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """-min(ρA, clip(ρ, 1-low, 1+high)A), elementwise (PPO's clipped objective, negated)."""
    return -torch.min(ratio * adv, torch.clamp(ratio, 1 - low, 1 + high) * adv)


def loss(current: Current, rollout: Rollout, adv: Advantages, params: GrpoParams) -> ObjectiveOutput:
    mask = rollout.mask.to(current.logps.dtype)
    ratio = torch.exp(current.logps - rollout.old_logps)
    per_token = clipped_surrogate(ratio, adv.advantages.unsqueeze(1), params.epsilon_low, params.epsilon_high)
    kl = token_kl_k3(current.logps, rollout.ref_logps)
    if params.beta:
        per_token = per_token + params.beta * kl
    clipped = ((ratio - 1).abs() > min(params.epsilon_low, params.epsilon_high)).to(mask.dtype)
    return ObjectiveOutput((per_token * mask).sum(), mask.sum(),
                           {"loss_kl": float((kl.detach() * mask).sum()), "clip_fraction": float((clipped * mask).sum())})


SPEC = AlgorithmSpec("grpo", advantages, loss, GrpoParams, min_group_size=2,
                     paper="Shao et al. 2024, DeepSeekMath (arXiv:2402.03300)")
