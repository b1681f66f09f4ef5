"""The contract between the online loop and every algorithm (GRPO, RLOO, PPO, online DPO).

Each step the loop samples `G` responses for each of `P` prompts (N = P*G sequences,
consecutive per prompt) and scores them; then it asks the algorithm, in two pure calls:

1. `advantages(rollout, params) -> Advantages`: learning signals from rewards, old and
   reference log-probs (and values): group-normalised rewards (GRPO), leave-one-out
   baselines (RLOO), GAE over per-token KL-penalised rewards (PPO), +1/-1 on the chosen /
   rejected response of each prompt (online DPO). No gradient flows here.
2. `loss(current, rollout, adv, params) -> ObjectiveOutput`: on a slice of whole prompt
   groups, with the policy's current per-token log-probs (and values) under grad.
   As for offline objectives (`drover.train.objective`), `loss_sum` is divided by the
   units (tokens, sequences, pairs) of the whole update, summed first from a
   structure-only call, so how the batch is split into micro-batches never matters;
   `units` must depend only on masks and the advantages, never on the log-probs.

Shapes: N sequences, T = most response tokens of any sequence (responses end in EOS).
Nothing in the loop branches on the algorithm's name; what an algorithm needs it declares
in its `AlgorithmSpec`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from drover.train.objective import ObjectiveOutput


@dataclass
class Rollout:
    """One step's samples, scored; every tensor has leading dimension N (or N, T).

    mask:        (N, T) bool, True on response tokens (EOS included)
    old_logps:   (N, T) log-probs of the response tokens under the policy that sampled them
    ref_logps:   (N, T) the same under the frozen reference
    values:      (N, T) value-head estimates V(s_t) before each token (value-head algorithms), else None
    rewards:     (N,)   the reward spec's total per response
    group:       (N,)   prompt index 0..P-1 within the step
    group_size:  G, responses per prompt
    world_sum:   sums a tensor over every process of the step (identity on one process): this
                 process holds only its share of the prompt groups, so a statistic of the
                 whole batch (PPO's whitening, batch-scaled rewards) must go through it
                 (`batch_mean_std`); per-group ones need not, groups never straddle processes
    """

    mask: "torch.Tensor"
    old_logps: "torch.Tensor"
    ref_logps: "torch.Tensor"
    values: "torch.Tensor | None"
    rewards: "torch.Tensor"
    group: "torch.Tensor"
    group_size: int
    world_sum: Callable[["torch.Tensor"], "torch.Tensor"] = lambda x: x

    def select(self, rows: "torch.Tensor") -> "Rollout":
        """The sequences `rows` (whole prompt groups), renumbered from group 0."""
        group = self.group[rows]
        return Rollout(self.mask[rows], self.old_logps[rows], self.ref_logps[rows],
                       None if self.values is None else self.values[rows], self.rewards[rows],
                       group - group.min(), self.group_size, self.world_sum)


@dataclass
class Advantages:
    """advantages: (N,) per sequence or (N, T) per token; returns: (N, T) value targets (PPO)."""

    advantages: "torch.Tensor"
    returns: "torch.Tensor | None" = None
    metrics: dict[str, float] | None = None   # means over the step, logged as is

    def select(self, rows: "torch.Tensor") -> "Advantages":
        return Advantages(self.advantages[rows], None if self.returns is None else self.returns[rows])


@dataclass
class Current:
    """The policy's outputs under grad: logps (N, T) and, with a value head, values (N, T)."""

    logps: "torch.Tensor"
    values: "torch.Tensor | None" = None


@dataclass(frozen=True)
class AlgorithmSpec:
    name: str
    advantages: Callable[[Rollout, Any], Advantages]
    loss: Callable[[Current, Rollout, Advantages, Any], "ObjectiveOutput"]
    params: type                    # dataclass of the algorithm's parameters (config `algorithm_params`)
    paper: str = ""                 # shown in `drover rl --help`
    value_head: bool = False        # train a value head on the policy's backbone (PPO)
    min_group_size: int = 1         # responses per prompt it needs (GRPO/RLOO baselines, DPO pairs)
    # log-probs (policy and reference) of softmax(logits / sampling temperature): the policy-gradient
    # methods score samples under the distribution that drew them (TRL's GRPO, RLOO and PPO); DPO's
    # implicit reward is the model's own log-ratio at temperature 1 (TRL's OnlineDPOTrainer)
    at_sampling_temperature: bool = True


def batch_mean_std(x: "torch.Tensor", world_sum: Callable[["torch.Tensor"], "torch.Tensor"],
                   mask: "torch.Tensor | None" = None) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Mean and unbiased std of `x`'s (masked) entries over the whole step, every process's
    share included (two passes: the sums, then the squared deviations from the global mean).
    A single entry has std 0 (not 0/0 = NaN: whitening it gives 0, not NaN weights)."""
    import torch

    m = torch.ones_like(x) if mask is None else mask.to(x.dtype)
    n = world_sum(m.sum())
    mean = world_sum((x * m).sum()) / n.clamp(min=1)
    var = world_sum((((x - mean) ** 2) * m).sum()) / (n - 1).clamp(min=1)
    return mean, var.sqrt()


def masked_sum(x: "torch.Tensor", mask: "torch.Tensor") -> "torch.Tensor":
    return (x * mask).sum()


def token_kl_k3(logps: "torch.Tensor", ref_logps: "torch.Tensor") -> "torch.Tensor":
    """Per-token KL(π || π_ref) estimate k3 = exp(r) - r - 1 with r = log π_ref - log π
    (Schulman 2020, "Approximating KL divergence"): unbiased, always >= 0. (N, T)."""
    import torch

    r = ref_logps - logps
    return torch.exp(r) - r - 1
