"""PPO for RLHF (Schulman et al. 2017, arXiv:1707.06347; Ziegler et al. 2019, arXiv:1909.08593;
Ouyang et al. 2022, arXiv:2203.02155), as TRL's PPOTrainer computes it.

A value head on the policy's backbone estimates V(s_t) before each response token. The
reward is per token: the KL penalty against the frozen reference on every token, plus the
sequence's score on its last token (the EOS):

    r_t = -β (log π_old - log π_ref)(y_t) + [t = last] s
    δ_t = r_t + γ V_{t+1} - V_t,    Â_t = Σ_k (γλ)^k δ_{t+k}   (GAE, Schulman et al. 2016; V after EOS = 0)
    R_t = Â_t + V_t  (value targets);  Â whitened over the batch's response tokens

    L = Σ_t [ max(-Â ρ, -Â clip(ρ, 1±ε)) + c_v · ½ max((V - R)², (clip(V, V_old ± ε_v) - R)²) ] / tokens

(clipped policy and value losses; TRL's `masked_mean` over the batch when it is one micro-batch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from drover.train.objective import ObjectiveOutput
from drover.train.online.algorithm import Advantages, AlgorithmSpec, Current, Rollout, batch_mean_std


@dataclass
class PpoParams:
    kl_coef: float = 0.05           # β of the per-token KL penalty (TRL's default)
    gamma: float = 1.0
    lam: float = 0.95
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    whiten_advantages: bool = True


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and returns for (N, T) right-padded responses.

    Positions past a response's end have mask 0: their value counts as 0 (terminal), so
    padding never leaks into the advantages of real tokens."""
    m = mask.to(values.dtype)
    values = values * m
    n, t = rewards.shape
    adv = torch.zeros_like(rewards)
    last = torch.zeros(n, dtype=rewards.dtype, device=rewards.device)
    for k in reversed(range(t)):
        next_value = values[:, k + 1] if k + 1 < t else torch.zeros_like(last)
        delta = rewards[:, k] + gamma * next_value - values[:, k]
        last = (delta + gamma * lam * last) * m[:, k]
        adv[:, k] = last
    return adv, adv + values


def whiten(x: torch.Tensor, mask: torch.Tensor, world_sum: Any = lambda t: t) -> torch.Tensor:
    """(x - mean) / std over the masked entries of the whole step, all processes (unbiased
    variance, as TRL's masked_whiten)."""
    mean, std = batch_mean_std(x, world_sum, mask)
    return (x - mean) * torch.rsqrt(std ** 2 + 1e-8) * mask.to(x.dtype)


def token_rewards(rollout: Rollout, kl_coef: float) -> torch.Tensor:
    """(N, T): -β·log-ratio on every response token, plus the score on the last one."""
    mask = rollout.mask.to(rollout.old_logps.dtype)
    rewards = -kl_coef * (rollout.old_logps - rollout.ref_logps) * mask
    last = rollout.mask.sum(-1).clamp(min=1) - 1
    return rewards.index_put((torch.arange(rewards.shape[0]), last), rollout.rewards, accumulate=True)


def advantages(rollout: Rollout, params: PpoParams) -> Advantages:
    if rollout.values is None:
        raise ValueError("ppo needs values from the value head")
    adv, returns = gae(token_rewards(rollout, params.kl_coef), rollout.values, rollout.mask, params.gamma, params.lam)
    if params.whiten_advantages:
        adv = whiten(adv, rollout.mask, rollout.world_sum)
    return Advantages(adv, returns)


def loss(current: Current, rollout: Rollout, adv: Advantages, params: PpoParams) -> ObjectiveOutput:
    if current.values is None or rollout.values is None or adv.returns is None:
        raise ValueError("ppo needs values from the value head")
    mask = rollout.mask.to(current.logps.dtype)
    ratio = torch.exp(current.logps - rollout.old_logps)
    a = adv.advantages
    pg = torch.max(-a * ratio, -a * torch.clamp(ratio, 1 - params.cliprange, 1 + params.cliprange))
    v_clipped = rollout.values + torch.clamp(current.values - rollout.values, -params.cliprange_value,
                                             params.cliprange_value)
    vf = 0.5 * torch.max((current.values - adv.returns) ** 2, (v_clipped - adv.returns) ** 2)
    total = ((pg + params.vf_coef * vf) * mask).sum()
    return ObjectiveOutput(total, mask.sum(), {"policy_loss": float((pg.detach() * mask).sum()),
                                               "value_loss": float((vf.detach() * mask).sum())})


SPEC = AlgorithmSpec("ppo", advantages, loss, PpoParams, value_head=True,
                     paper="Schulman et al. 2017 (arXiv:1707.06347); RLHF: Ouyang et al. 2022 (arXiv:2203.02155)")
