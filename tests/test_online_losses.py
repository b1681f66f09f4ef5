"""Online algorithms: advantages and losses by hand, and equal to TRL 1.16's loss code."""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from drover.train.online.algorithm import Advantages, Current, Rollout, token_kl_k3
from drover.train.online.algorithms import ALGORITHMS, grpo, online_dpo, ppo, rloo


def rollout(rewards, old, ref, mask, group_size, values=None) -> Rollout:
    old = torch.tensor(old, dtype=torch.float32)
    n = old.shape[0]
    return Rollout(torch.tensor(mask, dtype=torch.bool), old, torch.tensor(ref, dtype=torch.float32),
                   None if values is None else torch.tensor(values, dtype=torch.float32),
                   torch.tensor(rewards, dtype=torch.float32), torch.arange(n) // group_size, group_size)


def test_registry_lists_every_algorithm_with_paper_and_params():
    assert ALGORITHMS.names() == ["grpo", "online-dpo", "ppo", "rloo"]
    for name in ALGORITHMS.names():
        spec = ALGORITHMS.get(name)
        assert spec.name == name and "20" in spec.paper and spec.params is not None


def test_k3_kl_by_hand():
    # r = ref - logp = -0.5: exp(-0.5) - (-0.5) - 1 = 0.1065306597
    kl = token_kl_k3(torch.tensor([-1.0]), torch.tensor([-1.5]))
    assert kl.item() == pytest.approx(math.exp(-0.5) + 0.5 - 1)


def test_grpo_advantages_by_hand():
    # group 1: rewards 1, 0 -> mean .5, unbiased std sqrt(.5) = .70711; group 2: tied -> 0
    r = rollout([1.0, 0.0, 0.5, 0.5], [[0.0]] * 4, [[0.0]] * 4, [[True]] * 4, 2)
    adv = grpo.advantages(r, grpo.GrpoParams()).advantages
    expected = 0.5 / (math.sqrt(0.5) + 1e-4)
    assert adv.tolist() == pytest.approx([expected, -expected, 0.0, 0.0], abs=1e-6)
    none = grpo.advantages(r, grpo.GrpoParams(scale_rewards="none")).advantages
    assert none.tolist() == pytest.approx([0.5, -0.5, 0.0, 0.0])


def test_grpo_loss_by_hand():
    # one sequence, 2 tokens (+ 1 padding); advantage 1; ratios e^0.1 (clipped at 1.2? no: 1.105) and e^0.5 (-> 1.2)
    r = rollout([0.0], [[-1.0, -2.0, 0.0]], [[-1.0, -2.0, 0.0]], [[True, True, False]], 1)
    cur = Current(torch.tensor([[-0.9, -1.5, 7.0]]))
    out = grpo.loss(cur, r, Advantages(torch.tensor([1.0])), grpo.GrpoParams(beta=0.1))
    kl1 = math.exp(-0.1) + 0.1 - 1     # ref - logp = -1 - (-0.9) = -0.1
    kl2 = math.exp(-0.5) + 0.5 - 1
    expected = -math.exp(0.1) - 1.2 + 0.1 * (kl1 + kl2)
    assert out.loss_sum.item() == pytest.approx(expected, rel=1e-6)
    assert float(out.units) == 2


def _trl_inputs(logps, old, ref, mask, adv):
    n, t = logps.shape
    return {"prompt_ids": torch.zeros((n, 1), dtype=torch.long), "prompt_mask": torch.ones((n, 1)),
            "completion_ids": torch.zeros((n, t), dtype=torch.long), "completion_mask": mask.float(),
            "advantages": adv, "old_per_token_logps": old, "ref_per_token_logps": ref, "old_logps": (old * mask).sum(1),
            "num_items_in_batch": mask.sum()}


def _fake_trainer(logps, **attrs):
    accelerator = SimpleNamespace(num_processes=1, reduce=lambda x, reduction="sum": x, gather=lambda x: x,
                                  gather_for_metrics=lambda x: x)
    base = dict(_get_per_token_logps_and_entropies=lambda *a, **k: (logps, torch.zeros_like(logps), None),
                aux_loss_enabled=False, top_entropy_quantile=1.0, off_policy_mask_threshold=None,
                importance_sampling_level="token", use_vllm=False, vllm_importance_sampling_correction=False,
                model=SimpleNamespace(training=True), current_gradient_accumulation_steps=1, accelerator=accelerator,
                _entropy_bonus_enabled=False, _metrics=defaultdict(lambda: defaultdict(list)),
                args=SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1))
    base.update(attrs)
    return SimpleNamespace(**base)


def _random_case(seed: int, n: int = 6, t: int = 5):
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand((n, t), generator=g) * 3
    logps = old + torch.randn((n, t), generator=g) * 0.3        # some ratios beyond the clip range
    ref = old + torch.randn((n, t), generator=g) * 0.2
    lengths = torch.tensor([5, 3, 4, 1, 5, 2])
    mask = torch.arange(t)[None, :] < lengths[:, None]
    rewards = torch.rand(n, generator=g)
    return logps, old, ref, mask, rewards


@pytest.mark.parametrize("seed", [0, 1])
def test_grpo_equals_trl(seed):
    from trl import GRPOTrainer

    logps, old, ref, mask, rewards = _random_case(seed)
    params = grpo.GrpoParams(beta=0.04, epsilon_low=0.2, epsilon_high=0.28)
    r = Rollout(mask, old, ref, None, rewards, torch.arange(6) // 3, 3)
    adv = grpo.advantages(r, params)
    ours = grpo.loss(Current(logps), r, adv, params)
    fake = _fake_trainer(logps, beta=0.04, loss_type="dapo", epsilon_low=0.2, epsilon_high=0.28,
                         max_completion_length=5)
    theirs = GRPOTrainer._compute_loss(fake, None, _trl_inputs(logps, old, ref, mask, adv.advantages))
    assert (ours.loss_sum / ours.units).item() == pytest.approx(theirs.item(), rel=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_rloo_equals_trl(seed):
    from trl import RLOOTrainer

    logps, old, ref, mask, rewards = _random_case(seed)
    params = rloo.RlooParams(beta=0.05, epsilon_low=0.2, epsilon_high=0.2)
    r = Rollout(mask, old, ref, None, rewards, torch.arange(6) // 3, 3)
    adv = rloo.advantages(r, params)
    ours = rloo.loss(Current(logps), r, adv, params)
    fake = _fake_trainer(logps, beta=0.05, epsilon_low=0.2, epsilon_high=0.2)
    theirs = RLOOTrainer._compute_loss(fake, None, _trl_inputs(logps, old, ref, mask, adv.advantages))
    assert (ours.loss_sum / ours.units).item() == pytest.approx(theirs.item(), rel=1e-5)


def test_rloo_advantages_by_hand():
    # no KL: baselines (0 + .5)/2, (1 + .5)/2, (1 + 0)/2 -> advantages .75, -.75, 0
    r = rollout([1.0, 0.0, 0.5], [[-1.0]] * 3, [[-1.0]] * 3, [[True]] * 3, 3)
    assert rloo.advantages(r, rloo.RlooParams(beta=0.0)).advantages.tolist() == pytest.approx([0.75, -0.75, 0.0])
    # KL in the reward: sequence 0's log-ratio sum is .5 -> its reward 1 - .1 * .5 = .95
    r = rollout([1.0, 0.0, 0.5], [[-0.5], [-1.0], [-1.0]], [[-1.0]] * 3, [[True]] * 3, 3)
    adv = rloo.advantages(r, rloo.RlooParams(beta=0.1)).advantages
    assert adv.tolist() == pytest.approx([0.95 - 0.25, 0.0 - (0.95 + 0.5) / 2, 0.5 - (0.95 + 0.0) / 2])


def test_gae_by_hand():
    # rewards [0, 1], values [.5, .2], γ = 1, λ = .5: δ1 = 1 - .2 = .8, A1 = .8;
    # δ0 = 0 + .2 - .5 = -.3, A0 = -.3 + .5 * .8 = .1; returns A + V = [.6, 1.0]
    adv, ret = ppo.gae(torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([[0.5, 0.2, 9.0]]),
                       torch.tensor([[True, True, False]]), gamma=1.0, lam=0.5)
    assert adv.tolist()[0] == pytest.approx([0.1, 0.8, 0.0])
    assert ret.tolist()[0] == pytest.approx([0.6, 1.0, 0.0])
    # γ = .9, λ = 1: A1 = 1 - .2 = .8; A0 = 0 + .9*.2 - .5 + .9 * .8 = .4
    adv, _ = ppo.gae(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.2]]), torch.tensor([[True, True]]), 0.9, 1.0)
    assert adv.tolist()[0] == pytest.approx([0.4, 0.8])


def test_ppo_token_rewards_by_hand():
    # KL penalty -β(old - ref) per token; the score lands on each sequence's last real token
    r = rollout([2.0, 3.0], [[-1.0, -1.0], [-0.5, 0.0]], [[-1.5, -1.0], [-0.5, 0.0]], [[True, True], [True, False]], 1)
    rewards = ppo.token_rewards(r, kl_coef=0.1)
    assert rewards.flatten().tolist() == pytest.approx([-0.05, 2.0, 3.0, 0.0])


def test_ppo_loss_by_hand():
    # one token: A = 1 (unwhitened), ratio e^0.5 = 1.6487 -> clipped at 1.2: pg = max(-1.6487, -1.2) = -1.2
    # value 0.9 vs old 0.5 (clip ±0.2 -> 0.7), return 1.0: vf = .5 * max(.01, .09) = .045
    r = rollout([1.0], [[-1.0]], [[-1.0]], [[True]], 1, values=[[0.5]])
    cur = Current(torch.tensor([[-0.5]]), torch.tensor([[0.9]]))
    adv = Advantages(torch.tensor([[1.0]]), torch.tensor([[1.0]]))
    out = ppo.loss(cur, r, adv, ppo.PpoParams(vf_coef=0.1))
    assert out.loss_sum.item() == pytest.approx(-1.2 + 0.1 * 0.045)
    assert out.metrics["value_loss"] == pytest.approx(0.045)


def test_ppo_whiten_by_hand():
    # masked values 1, 2, 3: mean 2, unbiased var 1 -> -1, 0, 1; the padded slot stays 0
    x = ppo.whiten(torch.tensor([[1.0, 2.0], [3.0, 50.0]]), torch.tensor([[True, True], [True, False]]))
    assert x.flatten().tolist() == pytest.approx([-1.0, 0.0, 1.0, 0.0], abs=1e-6)


def test_online_dpo_pairs_and_loss_by_hand():
    # group 0: best = 1, worst = 0; group 1: all tied -> no pair
    r = rollout([0.1, 0.9, 0.5, 0.5, 0.5, 0.5], [[0.0]] * 6, [[-1.0], [-1.0], [0.0], [0.0], [0.0], [0.0]],
                [[True]] * 6, 3)
    adv = online_dpo.advantages(r, online_dpo.OnlineDpoParams())
    assert adv.advantages.tolist() == [-1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    # log-ratios: chosen -0.5 - (-1) = .5, rejected -2 - (-1) = -1: -log σ(.1 * 1.5)
    cur = Current(torch.tensor([[-2.0], [-0.5], [0.0], [0.0], [0.0], [0.0]]))
    out = online_dpo.loss(cur, r, adv, online_dpo.OnlineDpoParams(beta=0.1))
    assert out.loss_sum.item() == pytest.approx(-math.log(1 / (1 + math.exp(-0.15))))
    assert float(out.units) == 1
