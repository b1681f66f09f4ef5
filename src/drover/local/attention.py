"""Padding-free attention for packed rows: each packed example attends only to itself.

A packed micro-batch (`drover.collate.PackingCollator`) concatenates examples into one row
with `position_ids` restarting at 0. transformers' SDPA path then builds a dense L×L
block-diagonal mask: attention work and memory grow with the square of the *packed*
length, and the mask disables SDPA's causal fast path. The kernels here instead run
causal attention per example, so the work is Σ lᵢ² (the sum over examples), as
flash-attention's varlen kernel does on GPUs:

  - ``varlen``: drover's own, for every device: one `scaled_dot_product_attention` call
    per example, ``is_causal=True``, no mask tensor at all (slices of q/k/v are views);
  - ``torch_varlen``: PyTorch's own flash-attention varlen kernel
    (`torch.nn.attention.varlen.varlen_attn`, CUDA only in torch 2.13), same boundaries;
  - ``flash_attention_2``: flash-attn's varlen kernel (CUDA, when installed), fed the same
    `cu_seq_lens` boundaries;
  - ``flex_attention``: PyTorch flex attention with a document mask (its backward needs a
    GPU in torch 2.13);
  - ``sdpa``: transformers' dense block-diagonal mask (the reference the others must equal).

`pick` chooses among the candidates available on the device by timing a forward pass of
the real model on a real packed micro-batch (fastest wins; one whose loss disagrees with
the dense-mask reference is never picked).

Shapes: q (B, heads, L, D), k/v (B, kv_heads, L, D); `cu_seq_lens` (S+1,) int32 offsets of
the S segments of the flattened B*L tokens (flash-attn's convention).
"""

from __future__ import annotations

import sys
from typing import Any

VARLEN = "varlen"
TORCH_VARLEN = "torch_varlen"
PACKED_ONLY = (VARLEN, TORCH_VARLEN)  # kernels that read segment boundaries instead of a mask
ATTENTION_CHOICES = ("auto", "sdpa", VARLEN, TORCH_VARLEN, "flash_attention_2", "flex_attention", "eager")
_registered = False


def register() -> None:
    """Make ``attn_implementation="varlen"`` known to transformers (idempotent)."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(VARLEN, varlen_attention)
    AttentionMaskInterface.register(VARLEN, _no_mask)
    AttentionInterface.register(TORCH_VARLEN, torch_varlen_attention)
    AttentionMaskInterface.register(TORCH_VARLEN, _no_mask)
    _registered = True


def _no_mask(*args: Any, **kwargs: Any) -> None:
    """Segment boundaries travel as `cu_seq_lens_q`; no mask tensor is built."""
    return None


def segments(position_ids: "Any") -> "Any":
    """`cu_seq_lens` (S+1,) int32 of the flattened rows: a segment starts where position is 0
    (every row starts one, so segments never cross rows)."""
    import torch

    flat = position_ids.reshape(-1)
    starts = torch.nonzero(flat == 0, as_tuple=False).squeeze(-1)
    end = torch.tensor([flat.numel()], device=flat.device)
    return torch.cat([starts, end]).to(torch.int32)


def varlen_attention(module: Any, query: "Any", key: "Any", value: "Any", attention_mask: "Any",
                     dropout: float = 0.0, scaling: float | None = None, **kwargs: Any) -> tuple["Any", None]:
    """Causal attention within each segment of `cu_seq_lens_q`; returns (B, L, heads, D)."""
    import torch
    import torch.nn.functional as F

    cu = kwargs.get("cu_seq_lens_q")
    if cu is None or attention_mask is not None:
        raise ValueError("varlen attention needs packed rows (cu_seq_lens_q) and no attention mask")
    b, heads, length, dim = query.shape
    groups = heads // key.shape[1]
    # (B, h, L, D) -> (h, B*L, D): segments are then contiguous slices along dim 1
    q = query.transpose(0, 1).reshape(heads, b * length, dim)
    k = key.transpose(0, 1).reshape(key.shape[1], b * length, dim)
    v = value.transpose(0, 1).reshape(value.shape[1], b * length, dim)
    bounds = cu.tolist()
    parts = [F.scaled_dot_product_attention(q[:, s:e], k[:, s:e], v[:, s:e], dropout_p=dropout, scale=scaling,
                                            is_causal=True, enable_gqa=groups > 1)
             for s, e in zip(bounds[:-1], bounds[1:]) if e > s]
    out = torch.cat(parts, dim=1)                                    # (h, B*L, D)
    return out.reshape(heads, b, length, dim).permute(1, 2, 0, 3), None


def torch_varlen_attention(module: Any, query: "Any", key: "Any", value: "Any", attention_mask: "Any",
                           dropout: float = 0.0, scaling: float | None = None, **kwargs: Any) -> tuple["Any", None]:
    """PyTorch's varlen flash attention over the flattened (B*L, heads, D) tokens, causal within
    each segment (window (-1, 0)); returns (B, L, heads, D)."""
    from torch.nn.attention import varlen

    cu, longest = kwargs.get("cu_seq_lens_q"), kwargs.get("max_length_q")
    if cu is None or attention_mask is not None:
        raise ValueError("torch_varlen attention needs packed rows (cu_seq_lens_q) and no attention mask")
    b, heads, length, dim = query.shape

    def tokens(x: "Any") -> "Any":  # (B, h, L, D) -> (B*L, h, D)
        return x.transpose(1, 2).reshape(b * length, x.shape[1], dim)

    out = varlen.varlen_attn(tokens(query), tokens(key), tokens(value), cu, cu, longest, longest, scale=scaling,
                             window_size=(-1, 0), enable_gqa=key.shape[1] != heads)
    return out.reshape(b, length, heads, dim), None


def available(device: "Any") -> list[str]:
    """Packed-batch kernels that can train on `device` here."""
    import importlib.util

    names = ["sdpa", VARLEN]
    if device.type == "cuda":
        names.append("flex_attention")  # flex's backward needs a GPU in torch 2.13
        if importlib.util.find_spec("torch.nn.attention.varlen") is not None:
            names.append(TORCH_VARLEN)
        if importlib.util.find_spec("flash_attn") is not None:
            names.append("flash_attention_2")
    return names


def default(device: "Any", packing: bool) -> str:
    """The kernel used without measuring (the reference pass, DeepSpeed): varlen work when packed."""
    if not packing:
        return "sdpa"
    return "flash_attention_2" if "flash_attention_2" in available(device) else VARLEN


def pick(candidates: list[str], trial: "Any", agree: "Any" = None, rtol: float = 1e-2) -> tuple[str, dict[str, float]]:
    """The fastest of `candidates`: `trial(name)` runs one pass and returns (seconds, loss);
    each runs twice and the second (warm) time counts. A kernel whose loss differs from the
    first candidate's (the reference, "sdpa") by more than `rtol` is never picked: a kernel
    that let packed examples see each other would be fast and wrong. `agree` maps the local
    times to times every process shares (a sum over processes), so all processes pick the
    same kernel. Returns (name, seconds per candidate)."""
    times: dict[str, float] = {}
    losses: dict[str, float] = {}
    for name in candidates:
        try:
            trial(name)
            times[name], losses[name] = trial(name)
        except (RuntimeError, NotImplementedError, ValueError, ImportError) as exc:
            if name == candidates[0]:
                raise
            # an optional kernel that cannot run this model here (build, dtype, head size)
            print(f"drover: attention {name} unavailable here ({type(exc).__name__}: {str(exc)[:120]})",
                  file=sys.stderr)
            times[name], losses[name] = float("inf"), float("nan")
    ref = losses[candidates[0]]
    for name in candidates:
        if not abs(losses[name] - ref) <= rtol * abs(ref) + 1e-6:  # nan (failed) included
            times[name] = float("inf")  # before agreeing: every process then rules it out
    if agree is not None:
        times = agree(times)
    return min(candidates, key=times.__getitem__), times
