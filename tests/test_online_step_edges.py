"""What one online step may learn from (review of issue #15): a judge that fails gives no reward,
never a guessed one (its prompt group is left out exactly, counted as `unjudged`, null in
rewards.jsonl); a step with nothing to learn leaves the weights; a one-token batch whitens to 0,
not NaN; a non-finite loss is never applied."""

from __future__ import annotations

import json

import pytest
from online_helpers import write_prompts
import torch

from drover.train.online.algorithm import Current, Rollout
from drover.train.online.algorithms import ALGORITHMS
from drover.train.online.loop import OnlineTrainer

PARAMS = {"grpo": {"beta": 0.04}, "rloo": {"beta": 0.05, "normalize_advantages": True}, "ppo": {},
          "online-dpo": {}, "grpo-batch": {"scale_rewards": "batch"}}


def _case(seed: int, n: int = 6, t: int = 4, g: int = 2) -> tuple[Rollout, Current]:
    gen = torch.Generator().manual_seed(seed)
    mask = torch.ones(n, t, dtype=torch.bool)
    mask[1, 2:] = False
    mask[4, 1:] = False
    old = -torch.rand(n, t, generator=gen) * 3
    ref = old - torch.rand(n, t, generator=gen) * 0.3
    values = torch.randn(n, t, generator=gen)
    rewards = torch.tensor([1.0, 0.0, 0.3, float("nan"), 0.5, 2.0])   # group 1 has an unjudged response
    current = Current(old + torch.randn(n, t, generator=gen) * 0.1, values + torch.randn(n, t, generator=gen) * 0.1)
    return Rollout(mask, old, ref, values, rewards, torch.arange(n) // g, g), current


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_an_unjudged_group_is_left_out_exactly(name):
    from drover.config import from_dict

    spec = ALGORITHMS.get(name.removesuffix("-batch"))
    params = from_dict(spec.params, PARAMS[name], where="test")
    full, current = _case(0)
    dropped = OnlineTrainer.drop_unjudged(full)
    keep = torch.tensor([0, 1, 4, 5])
    alone = dropped.select(keep)
    alone.mask, alone.rewards = full.mask[keep].clone(), full.rewards[keep].clone()
    a = spec.loss(current, dropped, spec.advantages(dropped, params), params)
    b = spec.loss(Current(current.logps[keep], current.values[keep]), alone, spec.advantages(alone, params), params)
    assert float(a.units) == float(b.units) > 0
    assert float(a.loss_sum) == pytest.approx(float(b.loss_sum), rel=1e-5, abs=1e-7)
    assert not torch.isnan(a.loss_sum)


def test_a_failing_judge_is_counted_and_trains_nothing_of_its_group(tiny_model_dir, tmp_path, monkeypatch):
    import drover.llm.client as client
    from drover.completions import Choice, Completion
    from drover.train.online.config import online_config
    from drover.train.online.loop import run_online

    class Judge:   # rates 7, but its endpoint fails on every request about item 1
        def run(self, requests, desc="", total=None):
            return [Completion(choices=[], error="HTTP 500 after 6 retries") if "item 1" in r.messages[-1][1]
                    else Completion(choices=[Choice(text="7\nfine")]) for r in requests]

    monkeypatch.setattr(client, "LLM", lambda config, cache: Judge())
    prompts = write_prompts(tmp_path / "p.jsonl", 2)
    cfg = online_config({"algorithm": "grpo", "prompts": [str(prompts)], "steps": 1, "prompts_per_step": 2,
                         "samples_per_prompt": 2, "max_new_tokens": 3,
                         "rewards": [{"kind": "judge", "params": {"llm": "openai:judge"}}],
                         "train": {"model": str(tiny_model_dir), "run_dir": str(tmp_path / "r"), "progress": False,
                                   "save_every": 0}}, where="test")
    run_online(cfg, echo=False)
    rows = [json.loads(line) for line in (tmp_path / "r" / "rewards.jsonl").read_text().splitlines()]
    assert {r["prompt_id"]: r["reward"] for r in rows} == {"p0": pytest.approx(0.7), "p1": None}
    assert all(r["terms"]["judge"] is None for r in rows if r["prompt_id"] == "p1")
    (log,) = [r for r in map(json.loads, (tmp_path / "r" / "log.jsonl").read_text().splitlines())
              if r["event"] == "train"]
    assert log["unjudged"] == log["dropped"] == 2 and log["reward"] == pytest.approx(0.7)   # mean of what was judged


def test_a_step_with_nothing_to_learn_leaves_the_weights(tiny_model_dir, tmp_path):
    """Online DPO where every response ties has no pair: before, AdamW's weight decay (and any
    moments) still moved the weights on that step."""
    from safetensors.torch import load_file

    from drover.train.online.config import online_config
    from drover.train.online.loop import run_online

    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"id": "a", "messages": [{"role": "user", "content": "hi"}]}) + "\n")
    cfg = online_config({"algorithm": "online-dpo", "prompts": [str(prompts)], "steps": 1, "prompts_per_step": 1,
                         "samples_per_prompt": 2, "max_new_tokens": 3,
                         "rewards": [{"kind": "length", "params": {"target": 1000}}],   # 0 for every response
                         "train": {"model": str(tiny_model_dir), "run_dir": str(tmp_path / "r"), "progress": False,
                                   "save_every": 0, "lr": 1e-2, "weight_decay": 0.5}}, where="test")
    model = run_online(cfg, echo=False)
    before, after = load_file(str(tiny_model_dir / "model.safetensors")), load_file(str(model / "model.safetensors"))
    assert before.keys() == after.keys() and all(before[k].equal(after[k]) for k in before)


def test_whitening_a_single_token_gives_zero_not_nan():
    from drover.train.online.algorithms.ppo import whiten

    out = whiten(torch.tensor([[0.7, 0.0]]), torch.tensor([[True, False]]))
    assert out.tolist() == [[0.0, 0.0]]


def _one_prompt(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"id": "a", "messages": [{"role": "user", "content": "hi"}]}) + "\n")
    return prompts


def test_ppo_on_a_one_token_step_stays_finite(tiny_model_dir, tmp_path):
    """One response of one token: the batch whitening was 0/0, the loss NaN, the weights NaN, and
    the next step's sampling died with a torch traceback."""
    from safetensors.torch import load_file

    from drover.train.online.config import online_config
    from drover.train.online.loop import run_online

    cfg = online_config({"algorithm": "ppo", "prompts": [str(_one_prompt(tmp_path))], "steps": 2,
                         "prompts_per_step": 1, "samples_per_prompt": 1, "max_new_tokens": 1,
                         "rewards": [{"kind": "length", "params": {"target": 3, "falloff": 5}}],
                         "train": {"model": str(tiny_model_dir), "run_dir": str(tmp_path / "r"), "progress": False,
                                   "save_every": 0, "lr": 1e-2}}, where="test")
    weights = load_file(str(run_online(cfg, echo=False) / "model.safetensors"))
    assert all(bool(torch.isfinite(w).all()) for w in weights.values())


def test_a_non_finite_loss_is_never_applied(tiny_model_dir, tmp_path, monkeypatch, capsys):
    import drover.train.online.algorithms.grpo as grpo
    from drover.cli import main

    monkeypatch.setattr(grpo, "clipped_surrogate", lambda ratio, adv, low, high: ratio * float("nan"))
    code = main(["rl", "--model", str(tiny_model_dir), "--prompts", str(_one_prompt(tmp_path)), "--reward",
                 "length:target=3", "--run-dir", str(tmp_path / "r"), "steps=2", "prompts_per_step=1",
                 "samples_per_prompt=2", "max_new_tokens=3", "train.progress=false"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "the loss of this step is nan" in err[-1] and "nothing of it was applied" in err[-1]
    assert not (tmp_path / "r" / "model").exists()


@pytest.mark.parametrize("algorithm, scored_at", [("grpo", 0.7), ("rloo", 0.7), ("ppo", 0.7), ("online-dpo", 1.0)])
def test_log_probs_are_taken_at_the_sampling_temperature(tiny_model_dir, tmp_path, algorithm, scored_at):
    """Samples drawn at temperature T come from softmax(logits / T): ratios, KL and the policy
    gradient must use those log-probs (TRL's GRPO/RLOO divide the logits by T, for the reference
    too); before, drover scored them at T = 1 whatever the sampling temperature. Online DPO's
    implicit reward is the model's log-ratio at T = 1 (TRL's OnlineDPOTrainer)."""
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import selective_log_softmax as trl_selective_log_softmax

    from drover.train.online.config import online_config
    from drover.train.online.loop import prepare_online
    from drover.train.online.sampling import Sample

    cfg = online_config({"algorithm": algorithm, "prompts": [str(_one_prompt(tmp_path))], "temperature": 0.7,
                         "rewards": [{"kind": "length", "params": {"target": 3}}],
                         "train": {"model": str(tiny_model_dir), "run_dir": str(tmp_path / "r"), "progress": False,
                                   "mixed_precision": "no"}}, where="test")
    trainer, _, _ = prepare_online(cfg)
    response = [11, 12, 13, trainer.tokenizer.eos_token_id]
    ((_, mb),) = trainer.micro_batches(trainer.examples([0], [[Sample("", response)]]))
    ours_policy = trainer.forward(trainer.model, mb).logps[0]
    ours_ref = trainer.forward(trainer.reference, mb).logps[0]
    ids = torch.tensor([trainer.prompts[0].ids + response])
    logits = AutoModelForCausalLM.from_pretrained(tiny_model_dir)(ids).logits[:, :-1]
    theirs = trl_selective_log_softmax(logits / scored_at, ids[:, 1:])[0, -len(response):]
    assert ours_ref.tolist() == pytest.approx(theirs.tolist(), abs=1e-5)
    assert ours_policy.tolist() == pytest.approx(theirs.tolist(), abs=1e-5)
    other = trl_selective_log_softmax(logits / (1.7 - scored_at), ids[:, 1:])[0, -len(response):]
    assert (ours_ref - other).abs().max() > 1e-3


def test_a_sample_ends_with_the_stop_token_the_engine_drew(tiny_tokenizer, monkeypatch):
    """A model may stop at several tokens (generation_config's eos_token_id list, e.g. Llama 3's
    <|eot_id|> and <|end_of_text|>): vLLM reports which one ended a sample (`stop_reason`), and
    that token is trained on, not the tokenizer's EOS it did not draw."""
    import sys
    from types import SimpleNamespace

    import fake_vllm
    from drover.local.samplers import EngineSetup
    from drover.local.vllm_sampler import VLLMSampler
    from drover.train.online.sampling import Prompt, sample_responses

    monkeypatch.setitem(sys.modules, "vllm", fake_vllm.module())   # its SamplingParams
    eos, other = tiny_tokenizer.eos_token_id, 9

    def output(ids, finish, reason):
        return SimpleNamespace(outputs=[SimpleNamespace(token_ids=ids, finish_reason=finish, stop_reason=reason)])

    outputs = [output([5, 6, other], "stop", other), output([5, 6, eos], "stop", None), output([5, 6, 7], "length", None)]
    sampler = object.__new__(VLLMSampler)
    sampler.setup = EngineSetup("m", "m", tiny_tokenizer, 64, 4, 0)
    sampler.config = SimpleNamespace(enable_sleep_mode=False)
    sampler.synced, sampler.asleep = True, set()
    sampler.llm = SimpleNamespace(generate=lambda requests, sampling_params, use_tqdm: outputs)
    cfg = SimpleNamespace(samples_per_prompt=3, temperature=1.0, top_p=1.0, max_new_tokens=3,
                          train=SimpleNamespace(seed=0))
    prompt = Prompt(None, [], [1, 2], "p:1")
    ((a, b, c),) = sample_responses(sampler, tiny_tokenizer, [prompt], cfg, 0, [0])
    assert (a.ids, b.ids, c.ids) == ([5, 6, other], [5, 6, eos], [5, 6, 7])
