"""End-to-end training runs on a tiny model: resume equality, learning, reload, reference caching."""

from __future__ import annotations

import json

import pytest
from test_train_engine import codealpaca_jsonl, train_config


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _weights(model_dir):
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


@pytest.mark.slow
def test_killed_and_resumed_run_ends_with_the_same_weights(tiny_model_dir, tmp_path):
    import torch

    from drover.train.runner import run_training

    data = codealpaca_jsonl(tmp_path / "d.jsonl", 24)
    common = {"epochs": 2, "micro_batch_size": 4, "grad_accum": 2, "warmup_ratio": 0.2, "save_every": 2}
    straight = run_training(train_config(tiny_model_dir, [data], tmp_path / "straight", **common), echo=False)
    # killed after step 5 (last checkpoint: step 4), then the same command again
    run_dir = tmp_path / "resumed"
    first = run_training(train_config(tiny_model_dir, [data], run_dir, stop_after_steps=5, **common), echo=False)
    assert first == run_dir / "checkpoints" and not (run_dir / "model").exists()
    assert sorted(p.name for p in first.glob("step-*")) == ["step-0000002", "step-0000004"]
    resumed = run_training(train_config(tiny_model_dir, [data], run_dir, **common), echo=False)
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=0, msg=name)
    initial = _weights(tiny_model_dir)
    assert any(not torch.equal(initial[n], a[n]) for n in a)  # it trained at all
    events = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    steps = [e["step"] for e in events if e["event"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]  # killed after 5, resumed at 4: step 5 is logged once


@pytest.mark.slow
def test_loss_falls_on_code_alpaca_and_the_model_reloads_with_transformers(tiny_model_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from drover.train.runner import run_training

    data = codealpaca_jsonl(tmp_path / "d.jsonl", 160)
    config = train_config(tiny_model_dir, [data], tmp_path / "run", micro_batch_size=8, lr=3e-3, epochs=1,
                          warmup_ratio=0.05, schedule="constant", max_length=192, eval_fraction=0.1, eval_every=9)
    model_dir = run_training(config, echo=False)
    events = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in events if e["event"] == "train"]
    assert len(losses) == 18  # 144 training examples / 8 (16 held out)
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 1.0, losses
    evals = [e for e in events if e["event"] == "eval"]
    assert [e["step"] for e in evals] == [9, 18, 18]  # every 9 steps, and at the end
    assert evals[-1]["eval_loss"] < losses[0]
    summary = [e for e in events if e["event"] == "summary"][0]
    assert summary["tokens"] > 0 and summary["model"] == str(model_dir)

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert tokenizer.chat_template
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Write a Python function."}],
                                           add_generation_prompt=True, tokenize=False)
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]
    assert isinstance(tokenizer.decode(out[0, ids["input_ids"].shape[1]:]), str)
    trained = _weights(model_dir)
    assert not torch.equal(trained["model.embed_tokens.weight"], _weights(tiny_model_dir)["model.embed_tokens.weight"])


@pytest.mark.slow
def test_reference_logprobs_are_computed_once_across_epochs_and_resume(tiny_model_dir, tmp_path):
    """An objective that needs reference log-probs gets them from one pass, cached on disk."""
    import torch

    from drover.train import reference
    from drover.train.objective import ObjectiveOutput, ObjectiveSpec
    from drover.train.objectives import OBJECTIVES
    from drover.train.runner import run_training

    seen = []

    def with_ref(batch, params):
        seen.append(batch.ref_seq_logps.detach().clone())
        nll = -(batch.token_logps * batch.token_mask).sum()
        return ObjectiveOutput(nll + 0.0 * batch.ref_seq_logps.sum(), batch.token_mask.sum(),
                               {"ref": float(batch.ref_seq_logps.sum())})

    if "test-ref" not in OBJECTIVES:
        OBJECTIVES.register("test-ref", ObjectiveSpec("test-ref", with_ref, needs_reference=True))
    data = codealpaca_jsonl(tmp_path / "d.jsonl", 12)
    common = {"objective": "test-ref", "epochs": 2, "micro_batch_size": 4, "save_every": 2}
    start = reference.FORWARD_PASSES
    run_training(train_config(tiny_model_dir, [data], tmp_path / "run", stop_after_steps=3, **common), echo=False)
    assert reference.FORWARD_PASSES - start == 3  # 12 examples / 4 per pass, once for two epochs
    run_training(train_config(tiny_model_dir, [data], tmp_path / "run", **common), echo=False)
    assert reference.FORWARD_PASSES - start == 3  # the resumed run reads the cache
    assert len(list((tmp_path / "run" / "reference").glob("*.pt"))) == 1
    real = [r for r in seen if r.abs().sum() > 0]
    assert real and all(torch.all(r < 0) for r in real)  # real log-prob sums, negative


@pytest.mark.slow
def test_drover_sft_command(tiny_model_dir, tmp_path, capsys):
    from drover.cli import main

    data = codealpaca_jsonl(tmp_path / "d.jsonl", 8)
    run_dir = tmp_path / "run"
    argv = ["sft", "--model", str(tiny_model_dir), "--data", str(data), "--run-dir", str(run_dir), "--no-progress",
            "max_length=128", "epochs=1", "micro_batch_size=8", "mixed_precision=no"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "target tokens" in err and "tokens/s" in err and str(run_dir / "model") in err
    assert (run_dir / "model" / "model.safetensors").exists() and (run_dir / "config.yaml").exists()
    assert main(argv[:-1] + ["mixed_precison=no"]) == 2
    assert "did you mean 'mixed_precision'" in capsys.readouterr().err
