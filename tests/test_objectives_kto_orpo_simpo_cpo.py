"""KTO, ORPO, SimPO and CPO: hand-derived losses, and equality with TRL 1.16's own loss code
(KTOTrainer._compute_loss, ORPOTrainer / CPOTrainer.get_batch_loss_metrics) on the same inputs."""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from test_objectives_losses import NAN, make_batch, run, softplus_neg

from drover.errors import ConfigError
from drover.train.objective import MISMATCHED_RANK, SequenceBatch
from drover.train.objectives import get_objective

PAIR = [(0, 0, 1.0, -10.0, 5), (0, 1, 0.0, -12.0, 4)]   # mean token log-probs -2 and -3


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# --- hand-derived -----------------------------------------------------------------------

def test_simpo_by_hand():
    # β (p_w - p_l) - γ = 2 · (-2 + 3) - 1 = 1
    out = run("simpo", make_batch(PAIR), beta=2.0, gamma=1.0)
    assert out.units == 1 and out.loss_sum.item() == pytest.approx(softplus_neg(1.0))
    assert out.metrics["reward_margin"] == pytest.approx(2.0)
    # γ = 0: the length-normalised, reference-free sigmoid loss
    assert run("simpo", make_batch(PAIR), beta=0.5, gamma=0.0).loss_sum.item() == pytest.approx(softplus_neg(0.5))


def test_cpo_by_hand():
    # preference: -log σ(0.1 · (-10 + 12)); NLL of the chosen per token: 10 / 5 = 2
    batch = make_batch(PAIR)
    out = run("cpo", batch, beta=0.1, nll_weight=1.0)
    assert out.units == 1 and out.loss_sum.item() == pytest.approx(softplus_neg(0.2) + 2.0)
    assert out.metrics["nll"] == pytest.approx(2.0)
    assert run("cpo", make_batch(PAIR), beta=0.1, nll_weight=0.0).loss_sum.item() == pytest.approx(softplus_neg(0.2))
    out.loss_sum.backward()
    assert batch.token_logps.grad[0, 0] < 0 < batch.token_logps.grad[1, 0]   # chosen up, rejected down


def test_orpo_by_hand():
    # odds(y) = P / (1 - P) with P = e^{mean log-prob}: P_w = e^-2, P_l = e^-3
    p_w, p_l = math.exp(-2), math.exp(-3)
    log_or = math.log(p_w / (1 - p_w)) - math.log(p_l / (1 - p_l))
    out = run("orpo", make_batch(PAIR), odds_ratio_weight=0.1)
    assert out.units == 1
    assert out.loss_sum.item() == pytest.approx(2.0 - 0.1 * math.log(sigmoid(log_or)))
    assert out.metrics["log_odds_chosen"] == pytest.approx(log_or)
    assert run("orpo", make_batch(PAIR), odds_ratio_weight=0.0).loss_sum.item() == pytest.approx(2.0)


def test_orpo_stays_finite_when_a_response_is_certain():
    batch = make_batch([(0, 0, 1.0, 0.0, 3), (0, 1, 0.0, -3.0, 3)])   # P(y_w) = 1: infinite odds
    out = run("orpo", batch)
    assert math.isfinite(out.loss_sum.item())
    out.loss_sum.backward()
    assert torch.isfinite(batch.token_logps.grad).all()


def kto_rows():
    """Two labelled records (desirable, undesirable) and their mismatched sequences."""
    return [(0, 0, 1.0, -4.0, 2), (0, MISMATCHED_RANK, NAN, -9.0, 3),
            (1, 0, 0.0, -6.0, 3), (1, MISMATCHED_RANK, NAN, -5.0, 2)]


def test_kto_by_hand_with_the_mismatched_kl_estimate():
    # ρ = policy - reference: desirable 1.0, undesirable -0.5; mismatched 1.0 and 0.2 → z_0 = 0.6
    ref = [-5.0, -10.0, -5.5, -5.2]
    out = run("kto", make_batch(kto_rows(), ref=ref), beta=0.5)
    assert out.units == 2
    expected = (1 - sigmoid(0.5 * (1.0 - 0.6))) + (1 - sigmoid(0.5 * (0.6 + 0.5)))
    assert out.loss_sum.item() == pytest.approx(expected)
    assert out.metrics["kl"] / out.units == pytest.approx(0.6)
    assert out.metrics["desirable"] == 1 and out.metrics["reward_accuracy"] == 2
    # weights; and a negative KL estimate is clamped to 0 (mismatched ρ = -1 and -0.8)
    out = run("kto", make_batch(kto_rows(), ref=[-5.0, -8.0, -5.5, -4.2]), beta=0.5, desirable_weight=2.0,
              undesirable_weight=0.5)
    expected = 2.0 * (1 - sigmoid(0.5 * 1.0)) + 0.5 * (1 - sigmoid(0.5 * 0.5))
    assert out.loss_sum.item() == pytest.approx(expected)


def test_kto_labels_ranked_records_by_rank_or_by_score():
    rows = [(0, 0, 9.0, -1.0, 1), (0, 1, 6.0, -1.0, 1), (0, 2, 2.0, -1.0, 1)]
    ref = [-1.5, -1.0, -0.5]                                      # ρ = 0.5, 0, -0.5; no mismatched: z_0 = 0
    out = run("kto", make_batch(rows, ref=ref), beta=1.0)         # best desirable, worst undesirable
    assert out.units == 2
    assert out.loss_sum.item() == pytest.approx(2 * (1 - sigmoid(0.5)))
    out = run("kto", make_batch(rows, ref=ref), beta=1.0, label_by="score", threshold=5.0)   # 9, 6 ≥ 5
    assert out.units == 3 and out.metrics["desirable"] == 2
    assert out.loss_sum.item() == pytest.approx((1 - sigmoid(0.5)) + 0.5 + (1 - sigmoid(0.5)))


def test_kto_gradient_skips_the_mismatched_sequences():
    batch = make_batch(kto_rows(), ref=[-5.0, -10.0, -5.5, -5.2])
    run("kto", batch).loss_sum.backward()
    grad = batch.token_logps.grad
    assert grad[0, 0] < 0 < grad[2, 0]                            # desirable up, undesirable down
    assert grad[1].abs().sum() == 0 and grad[3].abs().sum() == 0


def test_kto_units_come_from_structure_alone():
    batch = make_batch(kto_rows(), ref=[0.0] * 4)
    zeros = make_batch([(g, r, s, 0.0, n) for g, r, s, _, n in kto_rows()], ref=[0.0] * 4)
    assert run("kto", batch).units == run("kto", zeros).units == 2


@pytest.mark.parametrize("name,params", [("kto", {"label": 1}), ("kto", {"label_by": "scores"}),
                                         ("orpo", {"lambda": 1}), ("simpo", {"gama": 1}), ("cpo", {"alpha": 1})])
def test_unknown_parameter_is_a_config_error(name, params):
    with pytest.raises(ConfigError, match=next(iter(params))):
        get_objective(name).fn(make_batch(PAIR, ref=[0.0, 0.0]), params)


@pytest.mark.parametrize("name", ["kto", "orpo", "simpo", "cpo"])
def test_each_declares_its_paper_params_and_needs(name):
    import sys

    spec = get_objective(name)
    assert spec.paper and "2024" in spec.paper and spec.formula and spec.params is not None
    doc = sys.modules[spec.fn.__module__].__doc__
    assert "loss" in doc and "2024" in doc and "TRL" in doc
    assert spec.data == "ranked" and not spec.scalar_head and not spec.needs_reference_text
    assert spec.needs_reference == (name == "kto") and spec.needs_mismatched == (name == "kto")
    assert spec.min_responses == (1 if name == "kto" else 2)


# --- against TRL ------------------------------------------------------------------------

def token_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """drover's view of (B, L, V) logits and (B, L) labels (-100 untrained): (B, L-1) target
    log-probs and mask, as the engine computes them (token t+1 predicted at position t)."""
    target = labels[:, 1:]
    mask = target != -100
    logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, target.clamp(min=0)[..., None])[..., 0]
    return logp * mask, mask


def pairs_batch(chosen: tuple, rejected: tuple) -> SequenceBatch:
    """B records of (chosen, rejected) sequences from (token_logps, mask) of each."""
    (tc, mc), (tr, mr) = chosen, rejected
    b, t = tc.shape
    tok = torch.stack([tc, tr], dim=1).reshape(2 * b, t)
    mask = torch.stack([mc, mr], dim=1).reshape(2 * b, t)
    return SequenceBatch(token_logps=tok, token_mask=mask, seq_logps=tok.sum(-1), seq_lengths=mask.sum(-1),
                         group=torch.arange(b).repeat_interleave(2), rank=torch.tensor([0, 1] * b),
                         scores=torch.tensor([1.0, 0.0] * b, dtype=torch.float64))


def random_pairs(b=4, length=9, vocab=11, rejected_lengths=(8, 3, 6, 5), seed=0):
    """Logits and token ids of B chosen/rejected sequences: one prompt token, then the response
    (chosen all of one length, so TRL's batch-token mean NLL is the mean of per-response means)."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(2 * b, length, vocab, generator=gen, dtype=torch.float64) * 2
    ids = torch.randint(1, vocab, (2 * b, length), generator=gen)
    attention = torch.ones(2 * b, length, dtype=torch.long)
    for i, n in enumerate(rejected_lengths):             # right padding of the rejected responses
        attention[b + i, 1 + n:] = 0
        ids[b + i, 1 + n:] = 0
    labels = ids.masked_fill(attention == 0, -100)
    labels[:, 0] = -100                                  # the prompt
    return logits, ids, attention, labels


def trl_pair_loss(trainer_cls, logits, ids, attention, labels, **settings):
    """The real TRL get_batch_loss_metrics (with its concatenated_forward, get_batch_logps and
    loss function) on a stand-in trainer whose model returns the given logits."""
    b = ids.shape[0] // 2
    batch = {"chosen_input_ids": ids[:b], "chosen_attention_mask": attention[:b], "chosen_labels": labels[:b],
             "rejected_input_ids": ids[b:], "rejected_attention_mask": attention[b:], "rejected_labels": labels[b:]}

    def model(input_ids, attention_mask=None, **kwargs):
        assert torch.equal(input_ids, ids)
        return SimpleNamespace(logits=logits)

    trainer = SimpleNamespace(is_encoder_decoder=False, padding_value=0, pad_token_id=0, aux_loss_enabled=False,
                              label_smoothing=0.0, alpha=0.0,
                              accelerator=SimpleNamespace(device="cpu", gather_for_metrics=lambda x: x), **settings)
    trainer.concatenated_inputs = trainer_cls.concatenated_inputs
    trainer.get_batch_logps = trainer_cls.get_batch_logps
    for method in ("concatenated_forward", "cpo_loss", "odds_ratio_loss"):
        if hasattr(trainer_cls, method):
            setattr(trainer, method, functools.partial(getattr(trainer_cls, method), trainer))
    return trainer_cls.get_batch_loss_metrics(trainer, model, batch)


@pytest.mark.parametrize("loss_type,name,settings,params", [
    ("sigmoid", "cpo", {"beta": 0.3, "cpo_alpha": 1.0}, {"beta": 0.3, "nll_weight": 1.0}),
    ("sigmoid", "cpo", {"beta": 0.3, "cpo_alpha": 0.0}, {"beta": 0.3, "nll_weight": 0.0}),
    ("simpo", "simpo", {"beta": 2.0, "simpo_gamma": 0.7, "cpo_alpha": 0.0}, {"beta": 2.0, "gamma": 0.7}),
])
def test_matches_trl_cpo_trainer(loss_type, name, settings, params):
    from trl.experimental.cpo.cpo_trainer import CPOTrainer

    logits, ids, attention, labels = random_pairs()
    expected, metrics = trl_pair_loss(CPOTrainer, logits, ids, attention, labels, loss_type=loss_type, **settings)
    b = ids.shape[0] // 2
    batch = pairs_batch(token_logps(logits[:b], labels[:b]), token_logps(logits[b:], labels[b:]))
    out = run(name, batch, **params)
    assert (out.loss_sum / out.units).item() == pytest.approx(expected.item(), rel=1e-9)
    assert out.metrics["reward_margin"] / out.units == pytest.approx(metrics["rewards/margins"], rel=1e-9)
    assert out.metrics["reward_accuracy"] / out.units == pytest.approx(metrics["rewards/accuracies"])


def test_matches_trl_orpo_trainer():
    from trl.experimental.orpo.orpo_trainer import ORPOTrainer

    logits, ids, attention, labels = random_pairs(seed=1)
    expected, metrics = trl_pair_loss(ORPOTrainer, logits, ids, attention, labels, beta=0.25)
    b = ids.shape[0] // 2
    batch = pairs_batch(token_logps(logits[:b], labels[:b]), token_logps(logits[b:], labels[b:]))
    out = run("orpo", batch, odds_ratio_weight=0.25)
    # TRL computes the odds ratio in float32
    assert (out.loss_sum / out.units).item() == pytest.approx(expected.item(), rel=1e-6)
    assert out.metrics["log_odds_chosen"] / out.units == pytest.approx(metrics["log_odds_chosen"], rel=1e-5)
    assert out.metrics["log_odds_ratio"] / out.units == pytest.approx(metrics["log_odds_ratio"], rel=1e-5)
    assert out.metrics["nll"] / out.units == pytest.approx(metrics["nll_loss"], rel=1e-9)


@pytest.mark.parametrize("labels,kl_offset", [
    ([True, False, True, False, False], 0.0),     # mismatched log-ratios < 0 on average: z_0 clamped to 0
    ([True, True, True, False, True], -10.0),     # the reference finds them unlikely: z_0 > 0
    ([True] * 5, -10.0), ([False] * 5, -10.0),      # a batch of one label only (review of #15: agrees)
    ([True] * 4, 0.0), ([False] * 4, -3.0),
])
def test_matches_trl_kto_trainer(labels, kl_offset):
    """TRL's KTOTrainer._compute_loss on precomputed reference log-probs, with its KL
    sequences (x_i, y_{i-1}); drover's batch holds the same sequences as rank -2."""
    from trl.trainer.kto_trainer import KTOTrainer

    gen = torch.Generator().manual_seed(len(labels) + sum(labels))
    b, t = len(labels), 6
    arange = torch.arange(t)

    def sequences():
        lengths = torch.randint(1, t + 1, (b,), generator=gen)
        mask = arange[None] < lengths[:, None]
        return -torch.rand(b, t, generator=gen, dtype=torch.float64) * 3 * mask, mask

    (tok, mask), (kl_tok, kl_mask) = sequences(), sequences()
    ref = -torch.rand(b, generator=gen, dtype=torch.float64) * 8
    ref_kl = -torch.rand(b, generator=gen, dtype=torch.float64) * 8 + kl_offset
    beta, weights = 0.2, (1.0, 1.33)

    completion_mask = torch.cat([torch.zeros(b, 1, dtype=torch.long), mask.long()], dim=1)       # (B, T+1)
    kl_ids = torch.zeros(b, t + 1, dtype=torch.long)

    def model(input_ids, **kwargs):
        per_token = kl_tok if input_ids is kl_ids else tok
        return SimpleNamespace(log_probs=per_token, entropy=torch.zeros_like(per_token),
                               mean_logits=torch.zeros_like(per_token))

    trainer = SimpleNamespace(
        model=SimpleNamespace(training=True), calculate_KL=True, precompute_ref_logps=True, loss_type="kto",
        beta=beta, desirable_weight=weights[0], undesirable_weight=weights[1], aux_loss_enabled=False,
        accelerator=SimpleNamespace(device="cpu", gather_for_metrics=lambda x: x),
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)}, _total_train_tokens=0, _tp_size=1)
    trainer._compute_kl_logps = functools.partial(KTOTrainer._compute_kl_logps, trainer)
    inputs = {"input_ids": torch.zeros(b, t + 1, dtype=torch.long), "attention_mask": torch.ones(b, t + 1),
              "completion_mask": completion_mask, "KL_input_ids": kl_ids, "KL_attention_mask": torch.ones(b, t + 1),
              "KL_completion_mask": completion_mask, "label": torch.tensor(labels), "ref_logps": ref,
              "ref_KL_logps": ref_kl}
    expected = KTOTrainer._compute_loss(trainer, model, inputs, False)

    # drover: record i = its labelled response (score 1/0) then its mismatched sequence
    rows = torch.stack([tok, kl_tok], dim=1).reshape(2 * b, t)
    row_mask = torch.stack([mask, kl_mask], dim=1).reshape(2 * b, t)
    batch = SequenceBatch(
        token_logps=rows, token_mask=row_mask, seq_logps=rows.sum(-1), seq_lengths=row_mask.sum(-1),
        group=torch.arange(b).repeat_interleave(2), rank=torch.tensor([0, MISMATCHED_RANK] * b),
        scores=torch.tensor([[1.0 if y else 0.0, NAN] for y in labels], dtype=torch.float64).reshape(-1),
        ref_seq_logps=torch.stack([ref, ref_kl], dim=1).reshape(-1))
    out = run("kto", batch, beta=beta, desirable_weight=weights[0], undesirable_weight=weights[1])
    assert out.units == b
    assert (out.loss_sum / out.units).item() == pytest.approx(expected.item(), rel=1e-9)
    assert out.metrics["kl"] / out.units == pytest.approx(trainer._metrics["train"]["kl"][0], rel=1e-9)
    assert (out.metrics["kl"] > 0) == (kl_offset < 0)
