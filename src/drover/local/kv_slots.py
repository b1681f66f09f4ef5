"""A static KV cache in slots, and the one-token decode step over it (the local engine's inner loop).

Why not HF's own cache and forward: every decoding step through `model(...)` pays for
mask construction, cache objects, output dataclasses and kwargs plumbing — on a small model
that overhead is as large as the arithmetic (issue #19). `DynamicCache` also grows each
layer's keys with `torch.cat`, copying the whole cache every step.

Layout: per layer one preallocated tensor for keys and one for values,
(slots, kv_heads, capacity, head_dim). A row (one sample being decoded) owns one slot; its
keys sit at columns [0, length) — right-padded, so a row can join or leave a running batch
without moving the others, and each row's next key is written at its own column
(`index_put`). Live rows are kept in the first `n` slots (a leaving row's slot is refilled by
swapping in the last one), so a step computes on the contiguous prefix `[:n]` only, over the
columns [0, longest row) only.

Two steps fill the same cache:

* `generic_step`: the model's own forward (any HF causal LM whose layers use the standard
  Cache API), fed this cache's rows as a `DynamicCache` and a per-row 4D mask;
* a fast step for architectures registered in `FAST_STEPS` (Llama, Qwen2 without sliding
  windows): the same norms, rotary helper and SDPA, called directly — the HF layer
  arithmetic without HF's per-call plumbing — with the projections through weights packed
  once for oneDNN on CPU (`drover.local.packed_linear`: q/k/v and gate/up one GEMM each).
  It prefills prompts too, each as if alone (no padding), writing their keys into free
  slots. Tests check it against `generic_step` and `model.generate`.

With `generic_step`, prompts are prefilled by the model's own forward (left-padded) and their
keys copied into free slots.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable
from typing import Any

# step(cache, tokens (n,), positions (n,)) -> logits (n, vocab) float32. A fast step may carry
# `step.prefill(cache, prompts [(length,), ...]) -> logits (prompts, vocab)`: prompts into the
# next free slots through the same arithmetic, each as if alone (no padding).
Step = Callable[["SlotCache", Any, Any], Any]


class SlotCache:
    """Preallocated keys/values for up to `slots` rows of up to `capacity` tokens each."""

    def __init__(self, model: Any, slots: int, capacity: int, ceiling: int | None = None):
        import torch

        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.layers = int(config.num_hidden_layers)
        heads = int(config.num_attention_heads)
        self.kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
        self.head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.slots, self.capacity = slots, 0
        self.ceiling = ceiling  # growth doubles the capacity, but not past this (the context)
        self.keys: list[Any] = []
        self.values: list[Any] = []
        self.lengths = [0] * slots  # tokens held per slot (python ints: no device sync to read them)
        self.n = 0  # live rows occupy slots [0, n)
        self._torch = torch
        self.reserve(capacity)

    def reserve(self, capacity: int) -> None:
        """Grow every slot to hold `capacity` tokens (keeps what is stored; never shrinks)."""
        torch = self._torch
        if capacity <= self.capacity:
            return
        doubled = 2 * self.capacity if self.ceiling is None else min(2 * self.capacity, self.ceiling)
        capacity = max(capacity, doubled)
        shape = (self.slots, self.kv_heads, capacity, self.head_dim)
        for store in (self.keys, self.values):
            for layer in range(self.layers):
                grown = torch.zeros(shape, dtype=self.dtype, device=self.device)
                if self.capacity:
                    grown[:, :, :self.capacity] = store[layer]
                    store[layer] = grown
                else:
                    store.append(grown)
        self.capacity = capacity

    def fill(self, slot: int, layer_kv: list[tuple[Any, Any]]) -> None:
        """Store a prompt's keys/values: one (kv_heads, length, head_dim) pair per layer."""
        length = int(layer_kv[0][0].shape[-2])
        for layer, (k, v) in enumerate(layer_kv):
            self.keys[layer][slot, :, :length] = k
            self.values[layer][slot, :, :length] = v
        self.hold(slot, length)

    def hold(self, slot: int, length: int) -> None:
        """Slot `slot` now holds `length` tokens of a new row: what an earlier row left in its
        later columns is zeroed. Those columns are masked, but attention still multiplies their
        values by a zero weight, and 0 x NaN is NaN: a row that overflowed (fp16) would
        otherwise poison every later row decoded in its slot."""
        for store in (self.keys, self.values):
            for layer in range(self.layers):
                store[layer][slot, :, length:].zero_()
        self.lengths[slot] = length

    def move(self, src: int, dst: int) -> None:
        """Copy slot `src`'s stored tokens into slot `dst` (compaction when a row leaves)."""
        length = self.lengths[src]
        for store in (self.keys, self.values):
            for layer in range(self.layers):
                store[layer][dst, :, :length] = store[layer][src, :, :length]
        self.hold(dst, length)

    def targets(self, positions: Any) -> Any:
        """(n * kv_heads,) flat row indices, into a layer's keys viewed as (-1, head_dim), of
        each live row's new key, row r's at column positions[r]: computed once per step."""
        heads = self._torch.arange(self.kv_heads, device=self.device)
        rows = self._torch.arange(self.n, device=self.device)
        return ((rows[:, None] * self.kv_heads + heads[None, :]) * self.capacity + positions[:, None]).reshape(-1)

    def write(self, layer: int, k: Any, v: Any, targets: Any, width: int) -> tuple[Any, Any]:
        """Put one new key/value per live row, (n, kv_heads, 1, head_dim), at its own column
        (`targets`: one `index_copy_` each, ~2 us less than an advanced-index assignment);
        return the live rows' keys/values over their first `width` columns (the longest row's
        length + 1: every column any of them uses)."""
        keys, values = self.keys[layer], self.values[layer]
        keys.view(-1, self.head_dim).index_copy_(0, targets, k.reshape(-1, self.head_dim))
        values.view(-1, self.head_dim).index_copy_(0, targets, v.reshape(-1, self.head_dim))
        return keys[:self.n, :, :width], values[:self.n, :, :width]

    def mask(self, positions: Any) -> Any:
        """(n, 1, 1, width) bool: True where a live row's key exists (its own tokens and the new one)."""
        width = max(self.lengths[:self.n]) + 1
        columns = self._torch.arange(width, device=self.device)
        return (columns[None, :] <= positions[:, None])[:, None, None, :]


def accepts(model: Any, name: str) -> bool:
    """Whether the model's forward takes this keyword argument."""
    import inspect

    return name in inspect.signature(model.forward).parameters


def cache_kwarg(model: Any) -> str:
    """The forward's name for the KV cache: `cache` from transformers 5.2x, `past_key_values` before."""
    return "cache" if accepts(model, "cache") else "past_key_values"


def returned_cache(out: Any) -> Any:
    """The KV cache a forward returned (`cache` or, in older transformers, `past_key_values`)."""
    found = getattr(out, "cache", None)
    return found if found is not None else out.past_key_values


def generic_step(model: Any) -> Step:
    """One decoding step through the model's own forward: any causal LM using HF's Cache API."""
    from transformers import DynamicCache

    name = cache_kwarg(model)
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    window = getattr(config, "sliding_window", None)
    types = set(getattr(config, "layer_types", None) or ())
    sliding_layers = bool(window) and (not types or "sliding_attention" in types)
    if not getattr(config, "use_sliding_window", True):
        sliding_layers = False
    # Eager attention adds its mask to the scores; a per-layer-type dict reaches it as given
    # (e.g. Gemma2 skips its own mask building then), so there the masks must be additive floats.
    additive = getattr(config, "_attn_implementation", None) == "eager"
    dtype = next(model.parameters()).dtype

    def shaped(allowed: Any) -> Any:
        if not additive:
            return allowed
        import torch

        return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed,
                                                                                         torch.finfo(dtype).min)

    def masks(cache: SlotCache, positions: Any, width: int) -> Any:
        """4D bool masks (n, 1, 1, width + 1): a row's own keys (columns < its length, column j
        holding position j) and the new key (last column); for sliding-window layers only the
        keys within the window (HF's rule: query position - key position < window). One mask,
        or one per layer type when the model mixes them."""
        columns = cache._torch.arange(width + 1, device=cache.device)[None, :]
        new = columns == width
        full = ((columns < positions[:, None]) | new)[:, None, None, :]
        if not sliding_layers:
            return shaped(full)
        sliding = (((columns < positions[:, None]) & (columns > positions[:, None] - window)) | new)[:, None, None, :]
        if len(types) > 1:
            return {"full_attention": shaped(full), "sliding_attention": shaped(sliding)}
        return shaped(sliding)

    def step(cache: SlotCache, tokens: Any, positions: Any) -> Any:
        n, width = cache.n, max(cache.lengths[:cache.n])
        past = DynamicCache(ddp_cache_data=[(cache.keys[i][:n, :, :width], cache.values[i][:n, :, :width])
                                            for i in range(cache.layers)])
        out = model(input_ids=tokens[:, None], attention_mask=masks(cache, positions, width),
                    position_ids=positions[:, None], use_cache=True, **{name: past})
        rows = cache._torch.arange(n, device=cache.device)
        for i, layer in enumerate(past.layers):
            cache.keys[i][rows, :, positions] = layer.keys[:, :, -1]
            cache.values[i][rows, :, positions] = layer.values[:, :, -1]
        return out.logits[:, -1, :].float()

    return step


def _llama_like(model: Any) -> Step | None:
    """The decoder-layer arithmetic of HF's Llama (and Qwen2: biases in q/k/v), op by op.

    Each piece is HF's own arithmetic in fewer framework calls, kept only where it gives
    exactly what the model's module gives (checked here on probe inputs): norms in one
    `F.rms_norm` call, rotary cos/sin read from a table of the rotary module's own values,
    q and k rotated in one pass, one float attention mask per step (what SDPA makes of a
    bool one in every layer), and q/k/v and the attention output reshaped by views at one
    token. At one row the calls around the GEMMs were ~1.4 ms of a 3.2 ms step on the 17M
    model (issue #19), so fewer, cheaper calls are what is left to win there."""
    import torch
    import torch.nn.functional as F

    from drover.local.packed_linear import projections

    base = getattr(model, "model", None)
    layers = getattr(base, "layers", None)
    if layers is None or not hasattr(base, "rotary_emb") or not hasattr(model, "lm_head"):
        return None
    if _hooked(model):
        return None
    config = model.config
    # The step attends with SDPA; eager attention rounds otherwise (scores and softmax cast
    # back to bf16 in between): a model set to it decodes through its own forward.
    if getattr(config, "_attn_implementation", None) == "eager":
        return None
    if getattr(config, "use_sliding_window", False) or any(t != "full_attention" for t in
                                                           getattr(config, "layer_types", None) or ()):
        return None
    attn0 = layers[0].self_attn
    if any(hasattr(attn0, name) for name in ("q_norm", "k_norm", "sinks")):
        return None
    modeling = sys.modules[type(attn0).__module__]
    embed, head = base.embed_tokens, model.lm_head
    gqa = attn0.num_key_value_groups > 1
    # Per layer: q/k/v and gate/up each read one input, so each is one GEMM where packed.
    groups = [[head]] + [g for layer in layers for g in ([layer.self_attn.q_proj, layer.self_attn.k_proj,
                                                           layer.self_attn.v_proj], [layer.self_attn.o_proj],
                                                          [layer.mlp.gate_proj, layer.mlp.up_proj],
                                                          [layer.mlp.down_proj])]
    if not all(isinstance(m, torch.nn.Linear) for g in groups for m in g) or not hasattr(layers[0].mlp, "act_fn"):
        return None
    dtype = embed.weight.dtype
    project = projections(groups)
    lm_head, final_norm = project[0], _rms_norm(base.norm, dtype)
    # per layer: (input norm, qkv, o_proj, post-attention norm, gate_up, down, activation, [gate, up widths])
    plan = [(_rms_norm(layer.input_layernorm, dtype), *project[1 + 4 * i: 3 + 4 * i],
             _rms_norm(layer.post_attention_layernorm, dtype), *project[3 + 4 * i: 5 + 4 * i],
             F.silu if type(layer.mlp.act_fn) is torch.nn.SiLU else layer.mlp.act_fn,
             [layer.mlp.gate_proj.out_features, layer.mlp.up_proj.out_features]) for i, layer in enumerate(layers)]
    scales = [layer.self_attn.scaling for layer in layers]
    head_dim = attn0.head_dim
    heads, kv_heads = attn0.q_proj.out_features // head_dim, attn0.k_proj.out_features // head_dim
    qk_heads = heads + kv_heads
    rotate, prepare = _joint_rotary(modeling.apply_rotary_pos_emb, heads, dtype, head_dim)
    cos_sin = _rotary_table(base.rotary_emb)

    def layer_forward(i: int, hidden: Any, rotation: tuple[Any, Any], attend: Callable[..., Any]) -> Any:
        """Decoder layer i on (rows, tokens, hidden); attend(i, q, k, v) stores the new keys and
        returns the attention output (rows, heads, tokens, head_dim)."""
        in_norm, qkv, o_proj, post_norm, gate_up, down, act, widths = plan[i]
        n, length = hidden.shape[:2]
        y = qkv(in_norm(hidden))
        # (n, q|k|v heads, tokens, head_dim): q, k and v side by side from one projection (at
        # one token that is the memory of (n, 1, heads, head_dim) as it is: a view, no transpose)
        y = y.reshape(n, -1, 1, head_dim) if length == 1 else y.view(n, length, -1, head_dim).transpose(1, 2)
        qk = rotate(y[:, :qk_heads], *rotation)  # q and k rotated in one pass (neighbours in y)
        out = attend(i, qk[:, :heads], qk[:, heads:], y[:, qk_heads:])
        out = out.reshape(n, 1, -1) if length == 1 else out.transpose(1, 2).reshape(n, length, -1)
        hidden = hidden + o_proj(out)
        gate, up = gate_up(post_norm(hidden)).split(widths, dim=-1)
        return hidden + down(act(gate) * up)  # LlamaMLP: down(act(gate(x)) * up(x))

    def step(cache: SlotCache, tokens: Any, positions: Any) -> Any:
        targets = cache.targets(positions)
        width = max(cache.lengths[:cache.n]) + 1
        # the float mask SDPA makes of the bool one in every layer's call: once per step here
        mask = torch.zeros((cache.n, 1, 1, width), dtype=dtype, device=cache.device).masked_fill_(
            ~cache.mask(positions), float("-inf"))

        def attend(i: int, q: Any, k: Any, v: Any) -> Any:
            keys, values = cache.write(i, k, v, targets, width)
            return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=scales[i], enable_gqa=gqa)

        hidden = embed(tokens[:, None])  # (n, 1, hidden)
        rotation = prepare(*cos_sin(hidden, positions[:, None], width))
        for i in range(len(plan)):
            hidden = layer_forward(i, hidden, rotation, attend)
        return lm_head(final_norm(hidden))[:, -1, :].float()

    def prefill(cache: SlotCache, prompts: list[Any]) -> Any:
        """Prompts (each (length,)) into the next free slots, as HF's forward runs each one
        alone (causal SDPA, no mask, no padding), in one pass: the projections run on all
        their tokens concatenated (a GEMM's rows do not mix, and one large GEMM is cheaper
        than many small ones; in bf16 its size may change the summation order, as for any
        batch), attention per prompt. Returns their last logits (prompts, vocab)."""
        lengths = [int(p.shape[0]) for p in prompts]
        ends = list(itertools.accumulate(lengths))
        slots = range(cache.n, cache.n + len(prompts))

        def attend(i: int, q: Any, k: Any, v: Any) -> Any:
            outs = []
            for slot, end, length in zip(slots, ends, lengths):
                qs, ks, vs = (t[:, :, end - length:end] for t in (q, k, v))
                cache.keys[i][slot, :, :length] = ks[0]
                cache.values[i][slot, :, :length] = vs[0]
                outs.append(F.scaled_dot_product_attention(qs, ks, vs, is_causal=length > 1, scale=scales[i],
                                                           enable_gqa=gqa))
            return torch.cat(outs, dim=2)

        tokens = torch.cat(prompts)
        positions = torch.cat([torch.arange(length, device=tokens.device) for length in lengths])
        hidden = embed(tokens[None])  # (1, tokens of all prompts, hidden)
        rotation = prepare(*cos_sin(hidden, positions[None], max(lengths)))
        for i in range(len(plan)):
            hidden = layer_forward(i, hidden, rotation, attend)
        for slot, length in zip(slots, lengths):
            cache.hold(slot, length)
        cache.n += len(prompts)
        last = torch.tensor([end - 1 for end in ends], device=tokens.device)
        return lm_head(final_norm(hidden[:, last]))[0].float()

    step.prefill = prefill  # type: ignore[attr-defined]
    step.reusable = any(getattr(p, "packed", False) for p in project)  # type: ignore[attr-defined]
    return step


def _hooked(model: Any) -> bool:
    """Whether a forward hook (the model's modules' or torch's global ones) or a replaced
    instance `forward` (accelerate's hooks) would change what the model computes: the direct
    step calls projections and norms without their modules, so only the model's own forward
    honours those."""
    from torch.nn.modules import module as torch_module

    return bool(torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks) or any(
        m._forward_hooks or m._forward_pre_hooks or "forward" in vars(m) for m in model.modules())


def _joint_rotary(rotary: Callable[..., Any], heads: int, dtype: Any, head_dim: int = 8) -> tuple[
        Callable[..., Any], Callable[..., Any]]:
    """(rotate(x, *prepared), prepare(cos, sin) -> prepared): HF's `apply_rotary_pos_emb` on q
    and k stacked along heads, x (n, heads + kv_heads, tokens, d), cos/sin (n, tokens, d) as the
    rotary module gives them; `prepare` runs once per step.

    HF computes x·cos + rotate_half(x)·sin with rotate_half(x) = (-x₂, x₁). Here the halves are
    swapped by one `flip` and the sign moved onto sin: (x₂, x₁)·(-sin₁, sin₂). (-a)·b and a·(-b)
    are the same float, so the sum is too; q and k in one pass, four ops instead of about ten
    per layer. Used only if it gives exactly what the model's helper gives on random inputs;
    else the helper itself (q and k apart)."""
    import torch

    def prepare(cos: Any, sin: Any) -> tuple[Any, Any]:
        sign = torch.ones(cos.shape[-1], dtype=sin.dtype, device=sin.device)
        sign[:cos.shape[-1] // 2] = -1
        return cos.unsqueeze(1), (sin * sign).unsqueeze(1)

    def swapped(x: Any, cos: Any, signed_sin: Any) -> Any:
        return x * cos + x.unflatten(-1, (2, -1)).flip(-2).flatten(-2) * signed_sin

    def own(cos: Any, sin: Any) -> tuple[Any, Any]:
        return cos, sin

    def helper(x: Any, cos: Any, sin: Any) -> Any:
        return torch.cat(rotary(x[:, :heads], x[:, heads:], cos, sin), dim=1)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, heads + 2, 3, head_dim, generator=g).to(dtype)
    cos, sin = (torch.randn(2, 3, head_dim, generator=g).to(dtype) for _ in range(2))
    want = torch.cat(rotary(x[:, :heads], x[:, heads:], cos, sin), dim=1)
    try:
        if head_dim % 2 == 0 and torch.equal(swapped(x, *prepare(cos, sin)), want):
            return swapped, prepare
    except RuntimeError:  # shapes the flip form does not take
        pass
    return helper, own


def _rms_norm(module: Any, dtype: Any) -> Callable[[Any], Any]:
    """HF's RMSNorm as one `F.rms_norm` call (~5 us less per norm; 13 norms per step on the 17M
    model) where that gives exactly what the module gives on probe rows; else the module.
    (HF normalises in fp32, then multiplies by the weight in the input dtype.)"""
    import torch
    import torch.nn.functional as F

    weight, eps = getattr(module, "weight", None), getattr(module, "variance_epsilon", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 1 or not isinstance(eps, float):
        return module
    shape = (weight.shape[0],)

    def fused(x: Any) -> Any:
        return F.rms_norm(x, shape, weight, eps)

    def upcast(x: Any) -> Any:
        return F.rms_norm(x.float(), shape, None, eps).to(dtype) * weight

    g = torch.Generator().manual_seed(0)
    rows = torch.cat([torch.randn(16, shape[0], generator=g) * scale for scale in (1e-20, 1e-3, 1.0, 30.0, 1e18)])
    rows = rows.to(device=weight.device, dtype=dtype)
    with torch.inference_mode():
        want = module(rows)
        # fp32: the same arithmetic in one kernel. Other dtypes: HF rounds the normalised
        # rows to the dtype before the weight multiplies them; F.rms_norm with the weight
        # rounds once (equal only while the weight is all ones), so the weight stays outside.
        candidate = fused if dtype == torch.float32 else upcast
        try:
            if torch.equal(candidate(rows), want):
                return candidate
        except (RuntimeError, TypeError):  # refused for this dtype or device here
            pass
    return module


def _rotary_table(rope: Any) -> Callable[[Any, Any, int], tuple[Any, Any]]:
    """cos_sin(x, positions (rows, tokens), upto) -> the rotary module's (cos, sin) at those
    positions, each (rows, tokens, head_dim), read from a table of the module's own values at
    positions [0, upto) (grown by doubling) instead of ~10 ops per step. The module's values
    are elementwise in the position (position × inv_freq, cos, sin, scale), so a table row is
    what the module gives that position alone (checked on probe positions). RoPE types whose
    frequencies depend on the longest position seen ("dynamic", "longrope") call the module."""
    import torch

    def module(x: Any, positions: Any, upto: int) -> tuple[Any, Any]:
        return rope(x, positions)

    rope_type = getattr(rope, "rope_type", "default")
    if not isinstance(rope_type, str) or "dynamic" in rope_type or rope_type == "longrope":
        return module
    # [(cos (size, d), sin (size, d))] for positions [0, size): one tuple, swapped whole, so a
    # step reused by two decoders at once reads a consistent pair (a grown table's rows equal
    # the smaller one's)
    table: list[tuple[Any, Any]] = []

    def cos_sin(x: Any, positions: Any, upto: int) -> tuple[Any, Any]:
        current = table[0] if table else None
        if current is None or current[0].shape[0] < upto or current[0].dtype != x.dtype \
                or current[0].device != x.device:
            size = max(upto, 2 * current[0].shape[0] if current is not None else 64)
            cos, sin = rope(x, torch.arange(size, device=x.device)[None])
            current = (cos[0], sin[0])
            table[:] = [current]
        return current[0][positions], current[1][positions]

    inv_freq = getattr(rope, "inv_freq", None)
    device = inv_freq.device if isinstance(inv_freq, torch.Tensor) else torch.device("cpu")
    with torch.inference_mode():
        for dtype in (torch.float32, torch.bfloat16):
            probe = torch.zeros(1, 1, 1, dtype=dtype, device=device)
            positions = torch.tensor([[0, 5, 63], [70, 1, 2]], device=device)
            want = rope(probe, positions)
            got = cos_sin(probe, positions, 71)
            table.clear()
            if not all(torch.equal(a, b) for a, b in zip(got, want)):
                return module
    return cos_sin


# model_type -> builder of a fast step (None when the instance does not fit it after all).
FAST_STEPS: dict[str, Callable[[Any], Step | None]] = {"llama": _llama_like, "qwen2": _llama_like}


def decode_step(model: Any) -> Step:
    """The fastest step that computes what the model's own forward computes. A fast step
    with packed projections is reused across calls while the model's weights are unchanged
    (`drover.local.step_memo`: packing was most of a short `generate` call at batch 1)."""
    from drover.local.step_memo import memoised

    build = FAST_STEPS.get(getattr(model.config, "model_type", ""))
    if build is None:
        return generic_step(model)
    return memoised(model, build, lambda m: build(m) or generic_step(m))
