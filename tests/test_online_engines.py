"""The generation engines of online training (drover.local.samplers): the `hf` engine behind the
protocol draws what the local engine drew before it, and the `vllm` engine — run against a fake
`vllm` module (tests/fake_vllm.py) backed by the local engine on the tiny model — gets the policy's
weights (LoRA merged) before every step's sampling, the per-sample seeds in its SamplingParams,
and its outputs flow through the loop; a run on it equals the `hf` run bit for bit and resumes."""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path

import pytest
from online_helpers import write_prompts

import fake_vllm
from drover.errors import ConfigError

REGEX = {"kind": "regex", "params": {"pattern": "[0-9]", "mode": "fraction"}}
LAUNCH_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory) -> Path:
    return write_prompts(tmp_path_factory.mktemp("prompts") / "prompts.jsonl", 4, "Count to {i} please.")


@pytest.fixture
def fake(monkeypatch):
    """The fake `vllm` importable, a "GPU" visible, and the launcher variables the adapter sets restored."""
    from drover.local import vllm_sampler

    saved = {k: os.environ.get(k) for k in LAUNCH_ENV}
    monkeypatch.setitem(sys.modules, "vllm", fake_vllm.module())
    monkeypatch.setattr(vllm_sampler, "cuda_available", lambda: True)
    yield fake_vllm.LLM
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def config(model: Path, prompts: Path, run_dir: Path, **over):
    from drover.train.online.config import online_config

    data = {"algorithm": "grpo", "prompts": [str(prompts)], "rewards": [REGEX], "steps": 3, "prompts_per_step": 2,
            "samples_per_prompt": 3, "max_new_tokens": 5, "generation_batch_size": 4,
            "train": {"model": str(model), "run_dir": str(run_dir), "lr": 3e-2, "progress": False, "save_every": 0}}
    train = over.pop("train", {})
    data.update(over)
    data["train"].update(train)
    return online_config(data, where="test")


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "rewards.jsonl").read_text().splitlines()]


# -- the hf engine behind the protocol -------------------------------------------------------


def _direct(model, tokenizer, prompts, cfg, step, slots):
    """What sample_responses did before the engine seam: the local engine called directly."""
    from drover.local.decode import GenerationItem, generate, sample_seed

    g = cfg.samples_per_prompt
    drawn = [[[] for _ in range(g)] for _ in prompts]
    items = []
    for i, (p, slot) in enumerate(zip(prompts, slots)):
        def on_token(sample, token, _lp, i=i):
            drawn[i][sample].append(int(token))
        items.append(GenerationItem(prompt_ids=p.ids, max_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                    top_p=cfg.top_p, n=g, seeds=[sample_seed(cfg.train.seed, step, slot, j)
                                                                 for j in range(g)], on_token=on_token))
    out = [[] for _ in items]
    model.eval()
    for i, result in generate(model, tokenizer, items, batch_size=cfg.generation_batch_size,
                              max_length=cfg.train.max_length):
        for j, c in enumerate(result.choices):
            stopped = c.finish_reason == "stop"
            out[i].append((c.text, drawn[i][j] + ([tokenizer.eos_token_id] if stopped or not drawn[i][j] else [])))
    return out


def test_hf_engine_draws_what_the_local_engine_drew(tiny_model_dir, tiny_tokenizer, prompts_file, tmp_path):
    from transformers import AutoModelForCausalLM

    from drover.local.samplers import EngineSetup, HFSampler
    from drover.train.online.sampling import load_prompts, sample_responses

    cfg = config(tiny_model_dir, prompts_file, tmp_path / "r", samples_per_prompt=4, max_new_tokens=12)
    prompts = load_prompts(cfg.prompts, tiny_tokenizer, cfg.train.max_length, cfg.max_new_tokens)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    sampler = HFSampler(EngineSetup(str(tiny_model_dir), str(tiny_model_dir), tiny_tokenizer, cfg.train.max_length,
                                    cfg.generation_batch_size, cfg.train.seed))
    with pytest.raises(RuntimeError, match="before sync"):
        sampler.sample([prompts[0].ids], 1, [[0]], 1.0, 1.0, 4)
    sampler.sync(model)
    for step, slots in ((0, [0, 1, 2, 3]), (5, [7, 9, 2, 4])):
        model.train()
        new = sample_responses(sampler, tiny_tokenizer, prompts, cfg, step, slots)
        assert model.training                     # sampled in eval mode, the training mode given back
        old = _direct(model, tiny_tokenizer, prompts, cfg, step, slots)
        assert [[(s.text, s.ids) for s in group] for group in new] == old
        assert len({tuple(s.ids) for group in new for s in group}) > 1


def test_hf_engine_reports_which_of_several_stop_tokens_ended_a_sample(tiny_model_dir, tiny_tokenizer):
    """A model may stop at several tokens (generation_config.eos_token_id a list, as Llama 3's):
    a stopped sample is trained on the stop token it drew, not on the tokenizer's EOS."""
    from transformers import AutoModelForCausalLM

    from drover.local.decode import GenerationItem, generate
    from drover.local.samplers import EngineSetup, HFSampler
    from drover.tokenization import encode_prompt

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ids = encode_prompt(tiny_tokenizer, [{"role": "user", "content": "Say something."}], "p")
    heard: list[int] = []
    (_, free), = generate(model, tiny_tokenizer, [GenerationItem(prompt_ids=ids, max_tokens=6,
                                                                 on_token=lambda _s, t, _l: heard.append(t))])
    assert free.choices[0].finish_reason == "length" and free.stop_tokens == [None] and len(heard) == 6
    third = heard[2]   # greedy: the third token again, which now ends the sample
    model.generation_config.eos_token_id = [tiny_tokenizer.eos_token_id, third]
    (_, stopped), = generate(model, tiny_tokenizer, [GenerationItem(prompt_ids=ids, max_tokens=6)])
    assert stopped.choices[0].finish_reason == "stop" and stopped.stop_tokens == [third]
    sampler = HFSampler(EngineSetup(str(tiny_model_dir), str(tiny_model_dir), tiny_tokenizer, 128, 4, 0))
    sampler.sync(model)
    (drawn,), = sampler.sample([ids], 1, [[0]], 0.0, 1.0, 6)
    assert drawn.finish_reason == "stop" and drawn.stop == third and drawn.ids == heard[:heard.index(third)]


# -- the vllm adapter on the fake ------------------------------------------------------------


def test_vllm_run_equals_the_hf_run_and_syncs_every_step(fake, tiny_model_dir, prompts_file, tmp_path):
    """Same seeds, same weights at every step: the fake draws what the hf engine draws, so the two
    runs agree bit for bit only if vLLM got the updated weights before each step's sampling."""
    from drover.local.decode import sample_seed
    from drover.train.online.loop import run_online

    run_online(config(tiny_model_dir, prompts_file, tmp_path / "hf"), echo=False)
    cfg = config(tiny_model_dir, prompts_file, tmp_path / "vllm", engine="vllm",
                 vllm={"gpu_memory_utilization": 0.5, "dtype": "float32"})
    run_online(cfg, echo=False)
    assert _rows(tmp_path / "hf") == _rows(tmp_path / "vllm")
    a, b = (_weights(tmp_path / r / "model" / "model.safetensors") for r in ("hf", "vllm"))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)

    (llm,) = fake.made
    assert llm.kwargs["model"] == str(tiny_model_dir) and llm.kwargs["tokenizer"] == str(tiny_model_dir)
    assert llm.kwargs["gpu_memory_utilization"] == 0.5 and llm.kwargs["dtype"] == "float32"
    assert llm.kwargs["max_model_len"] == 2048 and llm.kwargs["max_num_seqs"] == 4
    assert llm.kwargs["distributed_executor_backend"] == "external_launcher"
    assert llm.events == ["apply_model", "reset_prefix_cache", "generate"] * 3     # sync before every sampling
    assert len(llm.model.loaded) == 3
    assert llm.model.loaded[0] == set(dict(llm.model.hf.named_parameters()))     # every weight, every time
    # one request per sample, seeded by (seed, step, prompt slot, sample)
    assert len(llm.requests) == 3 * 2 * 3
    for n, (_, params) in enumerate(llm.requests):
        step, rest = divmod(n, 2 * 3)
        slot, j = divmod(rest, 3)
        assert params.seed == sample_seed(cfg.train.seed, step, step * 2 + slot, j)
        assert (params.n, params.temperature, params.top_p, params.max_tokens, params.detokenize) == \
            (1, 1.0, 1.0, 5, False)


def _policy_weights(module) -> dict:
    """The policy's weights as a merged Hugging Face model holds them (peft's own merge, on a copy)."""
    from drover.local.sequence_model import hf_model

    if hasattr(module, "peft_config"):
        return {k: v.clone() for k, v in copy.deepcopy(module).merge_and_unload().state_dict().items()}
    return {k: v.detach().clone() for k, v in hf_model(module).named_parameters()}


@pytest.mark.parametrize("lora", [False, True])
def test_vllm_holds_the_policys_weights_at_each_sampling(fake, tiny_model_dir, prompts_file, tmp_path, lora):
    from drover.train.online.loop import prepare_online

    train = {"lora": {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0}} if lora else {}
    trainer, resume_from, key = prepare_online(config(tiny_model_dir, prompts_file, tmp_path / "r", engine="vllm",
                                                      train=train))
    (llm,) = fake.made
    seen = []
    sample = trainer.sampler.sample

    def checked(*args, **kwargs):
        module = trainer.accelerator.unwrap_model(trainer.model).model
        assert hasattr(module, "peft_config") == lora
        want = _policy_weights(module)
        held = {k: v for k, v in llm.model.hf.state_dict().items()}
        assert held.keys() == want.keys()
        assert all(held[k].equal(want[k]) for k in want)
        seen.append(want)
        return sample(*args, **kwargs)

    trainer.sampler.sample = checked
    trainer.train(resume_from, key)
    assert len(seen) == 3
    moved = [k for k in seen[0] if not seen[0][k].equal(seen[-1][k])]
    assert moved and (not lora or all("proj" in k for k in moved))   # LoRA moves only adapted layers
    if lora:   # the policy's own tensors were only read: its base weights are still the starting ones
        base = _weights(tiny_model_dir / "model.safetensors")
        module = trainer.accelerator.unwrap_model(trainer.model).model
        for name, param in module.named_parameters():
            if ".base_layer." in name:
                plain = name.removeprefix("base_model.model.").replace(".base_layer", "")
                assert param.detach().equal(base[plain]), name


def test_plain_weights_merge_lora_exactly_and_touch_nothing(tiny_model_dir):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from drover.local.weights import plain_weights

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    plain = dict(plain_weights(model))
    assert plain.keys() == dict(model.named_parameters()).keys()
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1, generator=torch.Generator().manual_seed(len(name)))
    before = {k: v.clone() for k, v in peft.state_dict().items()}
    merged = dict(plain_weights(peft))
    want = copy.deepcopy(peft).merge_and_unload().state_dict()
    assert merged.keys() == want.keys()
    assert all(merged[k].equal(want[k]) for k in want)
    assert not merged["model.layers.0.self_attn.q_proj.weight"].equal(plain["model.layers.0.self_attn.q_proj.weight"])
    assert all(before[k].equal(v) for k, v in peft.state_dict().items())


def test_stop_token_is_removed_as_the_protocol_asks():
    from drover.local.vllm_sampler import _without_stop

    assert _without_stop([5, 6, 2], "stop", None, 2) == [5, 6]          # EOS
    assert _without_stop([5, 6, 9], "stop", 9, 2) == [5, 6]             # a stop token id (generation_config)
    assert _without_stop([5, 6, 2], "length", None, 2) == [5, 6, 2]     # cut at max_tokens: nothing stopped
    assert _without_stop([], "stop", None, 2) == []


def test_vllm_sleep_mode_wakes_before_use_and_sleeps_after(fake, tiny_model_dir, prompts_file, tmp_path):
    from drover.train.online.loop import run_online

    run_online(config(tiny_model_dir, prompts_file, tmp_path / "r", engine="vllm", steps=2,
                      vllm={"enable_sleep_mode": True}, train={"max_length": 256}), echo=False)
    (llm,) = fake.made
    step = ["wake_up:weights", "apply_model", "reset_prefix_cache", "wake_up:kv_cache", "generate", "sleep2"]
    assert llm.events == ["sleep2"] + step * 2
    assert llm.kwargs["enable_sleep_mode"] is True
    assert llm.kwargs["max_model_len"] == 256          # train.max_length, not the model's 2048


def test_vllm_context_and_refused_settings(fake, tiny_model_dir, prompts_file, tmp_path):
    from drover.train.online.loop import run_online

    run_online(config(tiny_model_dir, prompts_file, tmp_path / "a", engine="vllm", steps=1,
                      vllm={"max_model_len": 1024}), echo=False)
    run_online(config(tiny_model_dir, prompts_file, tmp_path / "b", engine="vllm", steps=1,
                      train={"max_length": 4096}), echo=False)
    assert [llm.kwargs["max_model_len"] for llm in fake.made] == [1024, 2048]   # the model's limit caps the default
    with pytest.raises(ConfigError, match="vLLM refused its settings: No available memory for the cache blocks"):
        run_online(config(tiny_model_dir, prompts_file, tmp_path / "c", engine="vllm",
                          vllm={"gpu_memory_utilization": 0.01}), echo=False)


def test_vllm_run_resumes_bit_identically_and_refuses_another_engine(fake, tiny_model_dir, prompts_file, tmp_path):
    from drover.train.online.loop import run_online

    over = {"steps": 4, "engine": "vllm", "train": {"save_every": 2}}
    run_online(config(tiny_model_dir, prompts_file, tmp_path / "whole", **copy.deepcopy(over)), echo=False)
    killed = copy.deepcopy(over)
    killed["train"]["stop_after_steps"] = 3
    run_online(config(tiny_model_dir, prompts_file, tmp_path / "resumed", **killed), echo=False)
    with pytest.raises(ConfigError, match="made with other settings"):   # the hf engine draws other samples
        run_online(config(tiny_model_dir, prompts_file, tmp_path / "resumed", steps=4), echo=False)
    with pytest.raises(ConfigError, match="made with other settings"):
        run_online(config(tiny_model_dir, prompts_file, tmp_path / "resumed", **copy.deepcopy(over),
                          vllm={"dtype": "bfloat16"}), echo=False)
    # memory settings do not change what is drawn: resuming with less GPU memory continues
    run_online(config(tiny_model_dir, prompts_file, tmp_path / "resumed", **copy.deepcopy(over),
                      vllm={"gpu_memory_utilization": 0.2, "enable_sleep_mode": True}), echo=False)
    a, b = (_weights(tmp_path / r / "model" / "model.safetensors") for r in ("whole", "resumed"))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    assert _rows(tmp_path / "whole") == _rows(tmp_path / "resumed")
    log = [json.loads(line) for line in (tmp_path / "whole" / "log.jsonl").read_text().splitlines()]
    rewards = [r["reward"] for r in log if r["event"] == "train"]
    assert len(rewards) == 4 and all(0.0 <= r <= 1.0 for r in rewards)


def test_hf_runs_keep_their_resume_key(tiny_model_dir, prompts_file, tmp_path):
    """The default engine adds nothing to the key: checkpoints made before engines existed resume;
    vllm settings are ignored while engine=hf."""
    hf = config(tiny_model_dir, prompts_file, tmp_path / "r")
    assert "engine" not in hf.resume_key() and "vllm" not in hf.resume_key()
    other = config(tiny_model_dir, prompts_file, tmp_path / "r", vllm={"dtype": "bfloat16"})
    assert other.resume_key() == hf.resume_key()
    assert config(tiny_model_dir, prompts_file, tmp_path / "r", engine="vllm").resume_key()["engine"] == \
        {"name": "vllm", "dtype": "auto"}


# -- errors ------------------------------------------------------------------------------------


def test_missing_vllm_is_a_config_error_before_anything(monkeypatch, tiny_model_dir, prompts_file, tmp_path):
    from drover.train.online.loop import run_online

    monkeypatch.setitem(sys.modules, "vllm", None)     # import vllm -> ImportError
    with pytest.raises(ConfigError, match=r"engine=vllm needs vLLM installed .*pip install 'drover\[gpu\]'"):
        run_online(config(tiny_model_dir, prompts_file, tmp_path / "r", engine="vllm"), echo=False)
    assert not (tmp_path / "r").exists()


def test_no_cuda_is_a_config_error_before_anything(monkeypatch, tiny_model_dir, prompts_file, tmp_path):
    from drover.local import vllm_sampler
    from drover.train.online.loop import run_online

    monkeypatch.setitem(sys.modules, "vllm", fake_vllm.module())
    assert vllm_sampler.cuda_available() is False                 # this machine: the real check
    with pytest.raises(ConfigError, match="engine=vllm needs a CUDA GPU"):
        run_online(config(tiny_model_dir, prompts_file, tmp_path / "r", engine="vllm"), echo=False)
    assert not (tmp_path / "r").exists() and fake_vllm.LLM.made == []


def test_engine_config_errors(tiny_model_dir, prompts_file, tmp_path):
    with pytest.raises(ConfigError, match="engine: unknown generation engine 'vlm'.*did you mean 'vllm'"):
        config(tiny_model_dir, prompts_file, tmp_path / "r", engine="vlm")
    with pytest.raises(ConfigError, match=r"vllm.gpu_memory_utilization must be in \(0, 1\]"):
        config(tiny_model_dir, prompts_file, tmp_path / "r", vllm={"gpu_memory_utilization": 1.5})
    with pytest.raises(ConfigError, match="vllm.dtype must be one of"):
        config(tiny_model_dir, prompts_file, tmp_path / "r", vllm={"dtype": "fp8"})
    with pytest.raises(ConfigError, match="vllm: unknown key 'gpu_mem'"):
        config(tiny_model_dir, prompts_file, tmp_path / "r", vllm={"gpu_mem": 0.5})


def test_grpo_on_the_vllm_engine_learns(fake, tiny_model_dir, tmp_path):
    """test_online_train's toy task (digits are rare in the tiny model's samples) on engine=vllm."""
    from drover.train.online.loop import run_online

    prompts = write_prompts(tmp_path / "prompts.jsonl", 8)
    run_online(config(tiny_model_dir, prompts, tmp_path / "r", engine="vllm", steps=40, prompts_per_step=4,
                      samples_per_prompt=8, max_new_tokens=6, generation_batch_size=16), echo=False)
    log = [json.loads(line) for line in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    rewards = [r["reward"] for r in log if r["event"] == "train"]
    start, end = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert start < 0.1 and end > start + 0.5, [round(r, 2) for r in rewards]
    assert len(fake.made[0].model.loaded) == 40


def test_cli_runs_on_the_vllm_engine(fake, tiny_model_dir, prompts_file, tmp_path, capsys):
    from drover.cli import main

    code = main(["rl", "--engine", "vllm", "--model", str(tiny_model_dir), "--prompts", str(prompts_file),
                 "--reward", "regex:pattern=[0-9],mode=fraction", "--run-dir", str(tmp_path / "r"), "steps=2",
                 "prompts_per_step=2", "samples_per_prompt=2", "max_new_tokens=4", "train.progress=false",
                 "vllm.gpu_memory_utilization=0.4"])
    assert code == 0
    assert "drover rl grpo: 2 steps, 8 samples" in capsys.readouterr().err
    saved = (tmp_path / "r" / "config.yaml").read_text()
    assert "engine: vllm" in saved and "gpu_memory_utilization: 0.4" in saved
    assert fake.made[0].kwargs["gpu_memory_utilization"] == 0.4


def test_cli_engine_flag_and_error(monkeypatch, tiny_model_dir, prompts_file, tmp_path, capsys):
    from drover.cli import main
    from drover.commands import rl
    from drover.local.samplers import SAMPLERS

    assert set(rl.ENGINE_NAMES) == set(SAMPLERS.names())
    assert "engine=vllm" in rl.__doc__ or "--engine vllm" in rl.__doc__
    monkeypatch.setitem(sys.modules, "vllm", None)
    code = main(["rl", "--engine", "vllm", "--model", str(tiny_model_dir), "--prompts", str(prompts_file),
                 "--reward", "regex:pattern=[0-9]", "--run-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "pip install 'drover[gpu]'" in err
    assert not (tmp_path / "r").exists()
