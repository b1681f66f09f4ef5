"""The decode step's memo (`drover.local.step_memo`): a step built with packed weights is
reused only while the model's tensors are bit for bit those it was packed from, so a model
changed in place (fused optimizer, `.data` writes, `load_state_dict`, one flipped bit)
decodes with its new weights, never the stale packed copy. And the op-level rewrites of the
direct step (rotary table, one-call RMSNorm, joint rotation) give what HF's modules give."""

from __future__ import annotations

import pytest

from drover.local import kv_slots, step_memo
from drover.local.decode import GenerationItem, generate

PROMPTS = ["Hello there, how are", "def add(a, b):", "Once upon a time, in a land far away, there"]


@pytest.fixture
def fresh(tiny_model_dir):
    """A model of its own (the tests change its weights) and the tokenizer."""
    from drover.models import load_model, load_tokenizer

    return load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)


def _greedy(model, tok, batch=2):
    items = [GenerationItem(prompt_ids=tok(p)["input_ids"], max_tokens=12) for p in PROMPTS]
    return [r.choices[0].text for _, r in sorted(generate(model, tok, items, batch_size=batch))]


def _own_forward_greedy(model, tok, monkeypatch):
    """The same texts through the model's own forward (no packing, nothing memoised)."""
    with monkeypatch.context() as m:
        m.setattr(kv_slots, "FAST_STEPS", {})
        return _greedy(model, tok)


def test_an_unchanged_model_reuses_its_step(fresh):
    model, tok = fresh
    first = kv_slots.decode_step(model)
    assert getattr(first, "reusable", False)  # the tiny Llama's projections are packed here
    assert kv_slots.decode_step(model) is first
    assert _greedy(model, tok) == _greedy(model, tok)


def _perturb_with_fused_adamw(model):
    """One fused AdamW step: weights change in place, version counters do not move."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p) * 0.5
    torch.optim.AdamW(params, lr=0.05, fused=True).step()


def _flip_one_bit(model):
    import torch

    w = model.model.layers[0].mlp.down_proj.weight.data
    bits = w.view(torch.int32).reshape(-1)
    bits[7] ^= 1  # the lowest mantissa bit of one element


def _load_other_weights(model):
    import torch

    state = {k: (v + 0.05 * torch.randn_like(v)) if v.is_floating_point() else v
             for k, v in model.state_dict().items()}
    model.load_state_dict(state)


def _replace_the_head(model):
    import torch

    head = torch.nn.Linear(model.lm_head.in_features, model.lm_head.out_features, bias=False)
    torch.nn.init.normal_(head.weight, std=0.5, generator=torch.Generator().manual_seed(3))
    model.lm_head = head


@pytest.mark.parametrize("change", [_perturb_with_fused_adamw, _flip_one_bit, _load_other_weights, _replace_the_head])
def test_a_changed_model_gets_a_new_step_and_decodes_its_new_weights(fresh, monkeypatch, change):
    import torch

    model, tok = fresh
    before = kv_slots.decode_step(model)
    _greedy(model, tok)
    with torch.no_grad():
        change(model)
    after = kv_slots.decode_step(model)
    assert after is not before
    assert kv_slots.decode_step(model) is after  # and that one is reused in turn
    assert _greedy(model, tok) == _own_forward_greedy(model, tok, monkeypatch)


def test_a_changed_model_decodes_what_it_now_computes(fresh, monkeypatch):
    """The stale step would be caught by the texts too: after a strong in-place change the
    greedy texts move, and the engine follows the model's own forward, not the old packing."""
    import torch

    model, tok = fresh
    old = _greedy(model, tok)
    with torch.no_grad():
        for p in model.parameters():
            p.data.mul_(-1.5)  # `.data` writes bypass autograd's version counters
    new = _greedy(model, tok)
    assert new != old and new == _own_forward_greedy(model, tok, monkeypatch)


def test_models_above_the_limit_are_built_every_time(fresh, monkeypatch):
    model, _ = fresh
    monkeypatch.setattr(step_memo, "MEMO_MAX_BYTES", 0)
    assert kv_slots.decode_step(model) is not kv_slots.decode_step(model)


def test_the_memo_does_not_keep_a_model_alive(tiny_model_dir):
    import gc
    import weakref

    from drover.models import load_model

    model = load_model(tiny_model_dir)
    kv_slots.decode_step(model)
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None


def test_the_rotary_table_equals_the_module_beyond_its_first_size(fresh):
    """Positions past the table's first 64 rows (it grows) and any order of rows."""
    import torch

    model, _ = fresh
    rope = model.model.rotary_emb
    cos_sin = kv_slots._rotary_table(rope)
    assert cos_sin.__name__ == "cos_sin"
    x = torch.zeros(1, 1, 1)
    for positions in ([[3, 0, 63]], [[64, 200, 5]], [[1000], [2]]):
        pos = torch.tensor(positions)
        got, want = cos_sin(x, pos, int(pos.max()) + 1), rope(x, pos)
        assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_rope_types_that_depend_on_the_longest_position_call_the_module(fresh, monkeypatch):
    model, _ = fresh
    rope = model.model.rotary_emb
    for kind in ("dynamic", "longrope"):
        monkeypatch.setattr(rope, "rope_type", kind, raising=False)
        assert kv_slots._rotary_table(rope).__name__ == "module"


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_one_call_rms_norm_is_the_modules_bit_for_bit(fresh, dtype):
    import torch

    model, _ = fresh
    norm = model.model.layers[0].input_layernorm.to(getattr(torch, dtype))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a trained norm's weight (all ones would hide a rounding difference)
        norm.weight.copy_(torch.randn(norm.weight.shape, generator=g) + 1)
    fn = kv_slots._rms_norm(norm, getattr(torch, dtype))
    assert fn is not norm
    for scale in (1e-25, 1.0, 7.0, 1e10):
        rows = (torch.randn(200, norm.weight.shape[0], generator=g) * scale).to(norm.weight.dtype)
        assert torch.equal(fn(rows), norm(rows))


def test_a_norm_the_fused_call_cannot_reproduce_stays_the_module(fresh):
    """A norm with another formula (an offset weight, as Gemma's) is never swapped for F.rms_norm."""
    import torch

    model, _ = fresh
    norm = model.model.norm

    class OffsetNorm(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight, self.variance_epsilon = norm.weight, norm.variance_epsilon

        def forward(self, x):
            return norm(x) * 1.0 + self.weight * 1e-3

    odd = OffsetNorm()
    assert kv_slots._rms_norm(odd, torch.float32) is odd


def test_the_joint_rotation_is_the_helpers_bit_for_bit(fresh):
    import sys

    import torch

    model, _ = fresh
    attn = model.model.layers[0].self_attn
    helper = sys.modules[type(attn).__module__].apply_rotary_pos_emb
    rotate, prepare = kv_slots._joint_rotary(helper, 4, torch.float32)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 6, 5, 16, generator=g)
    cos, sin = (torch.randn(3, 5, 16, generator=g) for _ in range(2))
    assert torch.equal(rotate(x, *prepare(cos, sin)), torch.cat(helper(x[:, :4], x[:, 4:], cos, sin), dim=1))

    def other(q, k, cos, sin, unsqueeze_dim=1):  # a helper the flip form does not reproduce
        return q * cos.unsqueeze(1), k * sin.unsqueeze(1)

    rotate, prepare = kv_slots._joint_rotary(other, 4, torch.float32)
    assert torch.equal(rotate(x, *prepare(cos, sin)), torch.cat(other(x[:, :4], x[:, 4:], cos, sin), dim=1))


def _decoded(model, tok, batch=2):
    """Greedy texts and per-token log-probs (what a stale step would get wrong first)."""
    items = [GenerationItem(prompt_ids=tok(p)["input_ids"], max_tokens=12, logprobs=True) for p in PROMPTS]
    return [(r.choices[0].text, [x.logprob for x in r.choices[0].logprobs])
            for _, r in sorted(generate(model, tok, items, batch_size=batch))]


def _assert_decodes_like_its_own_forward(model, tok, monkeypatch):
    fast = _decoded(model, tok)
    with monkeypatch.context() as m:
        m.setattr(kv_slots, "FAST_STEPS", {})
        own = _decoded(model, tok)
    assert [text for text, _ in fast] == [text for text, _ in own]
    for (_, a), (_, b) in zip(fast, own):
        assert a == pytest.approx(b, abs=1e-4)


def _scale_attention(model):
    for layer in model.model.layers:
        layer.self_attn.scaling *= 4


def _widen_norm_epsilon(model):
    for layer in model.model.layers:
        layer.input_layernorm.variance_epsilon = 10.0


def _scale_rotary(model):
    model.model.rotary_emb.attention_scaling = 0.3


def _hook_the_final_norm(model):
    model.model.norm.register_forward_hook(lambda module, args, out: out * 3)


@pytest.mark.parametrize("change", [_scale_attention, _widen_norm_epsilon, _scale_rotary, _hook_the_final_norm])
def test_attributes_and_hooks_changed_after_a_first_generate_are_decoded_fresh(fresh, monkeypatch, change):
    """Plain attributes the step reads when it is built (attention `scaling`, norm
    `variance_epsilon`, rotary `attention_scaling`) and hooks are no tensors: the memo must
    still see them change, or the old step decodes with the old values."""
    model, tok = fresh
    _decoded(model, tok)  # builds and memoises the step
    change(model)
    _assert_decodes_like_its_own_forward(model, tok, monkeypatch)


def test_a_hooked_model_decodes_through_its_own_forward(fresh, monkeypatch):
    """The direct step calls projections without their modules: a forward hook (steering,
    activation patching) is honoured only by the model's own forward, so a hooked model gets that."""
    model, tok = fresh
    model.model.layers[0].mlp.register_forward_hook(lambda module, args, out: out * 3)
    assert kv_slots.FAST_STEPS["llama"](model) is None
    _assert_decodes_like_its_own_forward(model, tok, monkeypatch)


def test_weights_changed_while_the_step_is_built_are_not_vouched_for(fresh, monkeypatch):
    """An optimizer step (another thread) landing between the packing and the snapshot must
    not make the memo vouch for weights the packed copy never saw: the next call rebuilds."""
    import torch

    model, tok = fresh
    real, calls = kv_slots.FAST_STEPS["llama"], []

    def build_then_trained(m):
        step = real(m)
        if not calls:
            with torch.no_grad():
                _perturb_with_fused_adamw(m)
        calls.append(step)
        return step

    monkeypatch.setitem(kv_slots.FAST_STEPS, "llama", build_then_trained)
    first = kv_slots.decode_step(model)
    assert kv_slots.decode_step(model) is not first
    assert _greedy(model, tok) == _own_forward_greedy(model, tok, monkeypatch)


def test_a_parametrization_changed_after_a_first_generate_is_decoded_fresh(fresh, monkeypatch):
    """A weight computed by a parametrization from a plain attribute (no tensor changes when
    the attribute does): the packed copy of the old weight must not be reused."""
    import torch
    from torch.nn.utils import parametrize

    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.factor = 1.0

        def forward(self, weight):
            return weight * self.factor

    model, tok = fresh
    scaled = Scaled()
    parametrize.register_parametrization(model.lm_head, "weight", scaled)
    _decoded(model, tok)
    scaled.factor = 3.0
    _assert_decodes_like_its_own_forward(model, tok, monkeypatch)


def test_same_bits_tells_apart_what_equality_would_not():
    """Bit for bit on both paths (memcmp for contiguous CPU tensors, integer views otherwise):
    -0.0 is not 0.0, one flipped bit counts, a strided view compares its own elements."""
    import torch

    a = torch.tensor([0.0, 1.0, 2.0, 3.0])
    b = a.clone()
    assert step_memo._same_bits(a, b)
    b[0] = -0.0
    assert not step_memo._same_bits(a, b) and torch.equal(a, b)
    wide = torch.arange(12.0).reshape(3, 4)
    other = wide.clone()
    assert step_memo._same_bits(wide[:, ::2], other[:, ::2])
    other[1, 2] = 99.0
    assert not step_memo._same_bits(wide[:, ::2], other[:, ::2])
    assert step_memo._same_bits(wide[:, 1::2], other[:, 1::2])


def test_same_bits_reads_values_not_storage_of_lazy_views():
    """A conjugate or negative view shares its base's bytes but not its values, and a
    quantized tensor's value is its integers times its scale: memcmp of the storage said
    "same" for all three (a `param.data = param.data.conj()` left the stale step in use).
    A copy without libc (`_MEMCMP = None`) compares the same way."""
    import warnings

    import torch

    z = torch.tensor([1 + 2j, 3 - 1j], dtype=torch.complex64)
    y = torch.tensor([1.0, -2.0, 3.0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantize_per_tensor is deprecated, still there
        q1 = torch.quantize_per_tensor(y, 0.1, 0, torch.qint8)
        q2 = torch.quantize_per_tensor(y * 2, 0.2, 0, torch.qint8)  # same integers, other scale
    for memcmp in (step_memo._memcmp(), None):
        step_memo._MEMCMP = memcmp
        try:
            assert not step_memo._same_bits(z.conj(), z.clone())
            assert step_memo._same_bits(z.conj(), z.conj().clone())
            assert not step_memo._same_bits(torch._neg_view(y), y.clone())
            assert step_memo._same_bits(torch._neg_view(y), -y)
            assert not step_memo._same_bits(q1, q2)
            assert step_memo._same_bits(q1, q1.clone())
        finally:
            step_memo._MEMCMP = False


def test_same_bits_without_ctypes_falls_back(monkeypatch):
    """A Python built without _ctypes (no libffi) raises ImportError at `import ctypes`:
    the comparison falls back to torch.equal on integer views, never a traceback."""
    import sys

    import torch

    monkeypatch.setitem(sys.modules, "ctypes", None)  # `import ctypes` raises ImportError
    monkeypatch.setattr(step_memo, "_MEMCMP", False)
    a = torch.tensor([0.0, 1.0])
    assert step_memo._same_bits(a, a.clone())
    assert not step_memo._same_bits(a, torch.tensor([-0.0, 1.0]))
    assert step_memo._MEMCMP is None
