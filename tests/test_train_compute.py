"""Training compute: the optimised paths give the unoptimised path's loss and gradients.

Packed rows attended per example (drover's varlen kernel, the measured `auto` pick) against
padded rows with transformers' SDPA; fused against per-parameter AdamW; MFU arithmetic.
Speed is measured by benchmarks/, never asserted here.
"""

from __future__ import annotations

import json

import pytest

from test_train_engine import codealpaca_jsonl, make_engine, train_config


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _grads(engine) -> dict:
    return {n: p.grad.clone() for n, p in engine.model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("attention,pack_tokens", [("varlen", 4096), ("varlen", 300), ("sdpa", 4096),
                                                   ("auto", 300)])
def test_packed_attention_gives_the_padded_loss_and_gradients(tiny_model_dir, tmp_path, attention, pack_tokens):
    """pack_tokens=300 splits the micro-batch over several packed rows (segments never cross rows)."""
    import torch

    data = codealpaca_jsonl(tmp_path / "d.jsonl", 6)
    padded = make_engine(train_config(tiny_model_dir, [data], tmp_path / "a", attention="sdpa"))
    packed = make_engine(train_config(tiny_model_dir, [data], tmp_path / "b", packing=True,
                                      pack_tokens=pack_tokens, attention=attention, micro_batch_size=6))
    mb_packed = packed.collate(packed.examples)
    rows = mb_packed.inputs["input_ids"].shape[0]
    assert (rows > 1) == (pack_tokens == 300)
    a = padded.accumulate([padded.collate(padded.examples)])
    b = packed.accumulate([mb_packed])
    assert a["units"] == b["units"] and a["input_tokens"] == b["input_tokens"]
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
    grads = _grads(padded)
    assert grads
    for name, g in _grads(packed).items():
        torch.testing.assert_close(g, grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_varlen_attention_does_not_let_packed_examples_see_each_other():
    """Changing the first example's tokens must leave the second one's outputs unchanged (and
    changing its own tokens must not: the test can fail)."""
    import torch

    from drover.local.attention import segments, varlen_attention

    torch.manual_seed(0)
    position_ids = torch.tensor([[0, 1, 2, 3, 0, 1, 2]])
    cu = segments(position_ids)
    assert cu.tolist() == [0, 4, 7]
    q, k, v = (torch.randn(1, 2, 7, 8) for _ in range(3))
    out, _ = varlen_attention(None, q, k, v, None, scaling=8 ** -0.5, cu_seq_lens_q=cu)
    assert out.shape == (1, 7, 2, 8)
    k2 = k.clone()
    k2[:, :, :4] = torch.randn(1, 2, 4, 8)  # (a constant shift would cancel in the softmax)
    out2, _ = varlen_attention(None, q, k2, v, None, scaling=8 ** -0.5, cu_seq_lens_q=cu)
    torch.testing.assert_close(out2[:, 4:], out[:, 4:])
    assert not torch.allclose(out2[:, :4], out[:, :4])
    # the same as a dense causal attention per example
    for s, e in ((0, 4), (4, 7)):
        ref = torch.nn.functional.scaled_dot_product_attention(q[:, :, s:e], k[:, :, s:e], v[:, :, s:e],
                                                               is_causal=True)
        torch.testing.assert_close(out[:, s:e], ref.transpose(1, 2))


def test_torch_varlen_attention_feeds_pytorch_kernel_the_segments(monkeypatch):
    """PyTorch's varlen kernel is CUDA-only: check drover's plumbing (shapes, causal window,
    boundaries) against the per-example kernel with a stand-in that computes what it documents."""
    import torch
    from torch.nn.attention import varlen

    from drover.local.attention import segments, torch_varlen_attention, varlen_attention

    def documented(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, window_size=(-1, -1), enable_gqa=False):
        assert window_size == (-1, 0) and cu_q is cu_k and q.dim() == 3  # causal, (T, H, D)
        bounds = cu_q.tolist()
        return torch.cat([torch.nn.functional.scaled_dot_product_attention(
            q[s:e].transpose(0, 1), k[s:e].transpose(0, 1), v[s:e].transpose(0, 1), is_causal=True,
            scale=scale).transpose(0, 1) for s, e in zip(bounds[:-1], bounds[1:])])

    monkeypatch.setattr(varlen, "varlen_attn", documented)
    torch.manual_seed(0)
    position_ids = torch.tensor([[0, 1, 2, 0, 1], [0, 1, 2, 3, 0]])  # two rows, three + two segments
    cu = segments(position_ids)
    q, k, v = (torch.randn(2, 3, 5, 4) for _ in range(3))
    kwargs = {"cu_seq_lens_q": cu, "max_length_q": 4}
    ours, _ = varlen_attention(None, q, k, v, None, scaling=0.5, **kwargs)
    theirs, _ = torch_varlen_attention(None, q, k, v, None, scaling=0.5, **kwargs)
    assert theirs.shape == (2, 5, 3, 4)
    torch.testing.assert_close(theirs, ours)


def test_pick_skips_an_optional_kernel_that_cannot_run_here():
    from drover.local.attention import pick

    def trial(name):
        if name == "broken":
            raise NotImplementedError("no kernel for this device")
        return {"sdpa": (2.0, 5.0), "varlen": (1.0, 5.0)}[name]

    name, times = pick(["sdpa", "broken", "varlen"], trial)
    assert name == "varlen" and times["broken"] == float("inf")


def test_auto_attention_is_measured_and_leaves_no_gradients(tiny_model_dir, tmp_path):
    from drover.local.attention import available

    data = codealpaca_jsonl(tmp_path / "d.jsonl", 6)
    engine = make_engine(train_config(tiny_model_dir, [data], tmp_path / "a", packing=True, pack_tokens=4096))
    assert set(engine.attention_times) == set(available(engine.accelerator.device))
    assert engine.attention == min(engine.attention_times, key=engine.attention_times.get)
    assert all(p.grad is None for p in engine.model.parameters())
    padded = make_engine(train_config(tiny_model_dir, [data], tmp_path / "b"))
    assert padded.attention == "sdpa" and padded.attention_times == {}


def test_pick_takes_the_fastest_kernel_that_agrees_with_the_reference():
    from drover.local.attention import pick

    runs = {"sdpa": (3.0, 10.0), "varlen": (2.0, 10.01), "leaky": (1.0, 9.0)}  # leaky: fast, wrong loss
    name, times = pick(list(runs), runs.__getitem__)
    assert name == "varlen" and times["leaky"] == float("inf")
    # processes agree on summed times: another process being slower with varlen changes the pick
    name, _ = pick(list(runs), runs.__getitem__, agree=lambda t: {**t, "varlen": t["varlen"] + 5.0})
    assert name == "sdpa"


def test_varlen_attention_needs_packing(tiny_model_dir, tmp_path):
    from drover.errors import ConfigError

    with pytest.raises(ConfigError, match="needs packing: true"):
        train_config(tiny_model_dir, [tmp_path / "d.jsonl"], tmp_path / "a", attention="varlen")
    with pytest.raises(ConfigError, match="attention must be one of"):
        train_config(tiny_model_dir, [tmp_path / "d.jsonl"], tmp_path / "a", attention="flash")
    train_config(tiny_model_dir, [tmp_path / "d.jsonl"], tmp_path / "a", attention="varlen", packing=True)


def test_fused_adamw_takes_the_same_step_as_the_loop(tiny_model_dir, tmp_path):
    import torch

    data = codealpaca_jsonl(tmp_path / "d.jsonl", 4)
    engines = {fused: make_engine(train_config(tiny_model_dir, [data], tmp_path / str(fused), fused_adamw=fused))
               for fused in (True, False)}
    assert engines[True].optimizer.optimizer.defaults["fused"] is True
    assert not engines[False].optimizer.optimizer.defaults["fused"]
    for _ in range(2):  # two steps: the second reads the moment estimates the first wrote
        for engine in engines.values():
            engine.step([engine.collate(engine.examples)])
    before = dict(make_engine(train_config(tiny_model_dir, [data], tmp_path / "c")).model.named_parameters())
    fused, loop = (dict(engines[k].model.named_parameters()) for k in (True, False))
    for name, p in fused.items():
        torch.testing.assert_close(p, loop[name], rtol=1e-5, atol=1e-7, msg=name)
    assert any(not torch.equal(p, before[name]) for name, p in fused.items())  # it did step


def test_mfu_is_six_flops_per_parameter_per_token():
    from drover.train.engine import TrainResult
    from drover.train.flops import matmul_gflops, mfu

    # 10M params, 1,000 tokens in 2 s = 3e10 FLOP/s; against 100 GFLOP/s: 30%
    assert mfu(10_000_000, 1000, 2.0, 100.0) == pytest.approx(0.3)
    result = TrainResult(None, 1, 10, 2.0, 0.0, input_tokens=1000, params=10_000_000, matmul_gflops=50.0,
                         processes=2)
    assert result.mfu == pytest.approx(0.3)
    assert matmul_gflops(size=64, min_seconds=0.01) > 0


def test_training_summary_prints_mfu_and_the_kernel(tiny_model_dir, tmp_path, capsys):
    from drover.train.runner import run_training

    data = codealpaca_jsonl(tmp_path / "d.jsonl", 8)
    run_dir = tmp_path / "run"
    config = train_config(tiny_model_dir, [data], run_dir, packing=True, pack_tokens=1024, attention="varlen")
    model_dir = run_training(config)
    err = capsys.readouterr().err
    assert "MFU" in err and "attention varlen" in err
    summary = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()
               if json.loads(line).get("event") == "summary"][-1]
    assert 0 < summary["mfu"] < 1 and summary["matmul_gflops"] > 0
    # the saved model is plain transformers: it loads without drover's kernel registered
    saved = json.loads((model_dir / "config.json").read_text())
    assert saved.get("_attn_implementation") in (None, "sdpa") and "varlen" not in json.dumps(saved)
