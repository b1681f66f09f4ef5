"""Projections of a few rows through weights packed once into oneDNN's blocked layout: the
decode step's (`kv_slots._llama_like`) linears on CPU.

Why: `nn.Linear` on one row is a GEMV over the row-major (out, in) weight. Measured on a
2-core AMD EPYC (AVX-512 + AVX512-BF16), one thread, the 43 linears of a 17M Llama (63 MB
fp32, issue #19): the modules take 3.7 ms (fp32) / 2.7 ms (bf16, ~12 GB/s) per step at one
row and 9.0 / 3.4 ms at 16 rows, while this core streams 52 GB/s (summing fp32). The same
weights reordered once (`torch.ops.mkldnn._reorder_linear_weight`, the weights inductor's CPU
backend feeds `_linear_pointwise`) take 2.2 / 1.2 ms at one row and 3.9 / 2.2 ms at 16.
In bf16 the results are bit-identical to the module's; in fp32 they differ in the last bits
only (another summation order, as between any two GEMM kernels; checked on a probe row
before a packing is used, and by the greedy-identity tests).

Measured and left out (the step keeps SDPA): attention of one query per row as two batched
matmuls with an fp32 softmax between. In bf16 it is 3x faster than SDPA's CPU kernel (95 vs
~300 us per layer for 16 rows x 6 heads x ~40 keys: that kernel pays ~3 us per (row, head)
pair), but greedy texts then leave HF `generate`'s on every prompt tried (8 of 8, after 9-254
characters): SDPA's kernel rounds unnormalised probabilities and uses its own exp, which
plain torch ops do not reproduce; in fp32 it is no faster (equal at 16 rows, 7 us slower per
layer at one).

Elsewhere (CUDA, other dtypes, a torch without oneDNN) the step calls the modules.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# oneDNN blocks a packed weight for a batch of this many rows; 16 measured fastest for 1 row
# too (fp32: 2.16 ms vs 2.69 packed for 1 row), so one packing serves every batch size.
PACK_ROWS = 16
# The packed copies cost the projections' memory once more; past this size the step calls
# the modules (a model that large is not one whose decoding is dominated by this overhead).
PACKED_MAX_BYTES = 1 << 30

# A oneDNN call costs ~10 us before any arithmetic (3-4 us for nn.Linear). For one row of a
# model whose projections fit in cache, that is what counts: measured at one row, fp32, all
# projections of a step, modules vs packed: 64x2 Llama (1.5 MiB) 0.040 vs 0.118 ms, 128x4
# (6 MiB) 0.125 vs 0.270; from 256x4 (20 MiB) packed wins (0.768 vs 0.597; 17M, 60 MiB: 3.9
# vs 1.9), in bf16 from 128x4 on, and at 16 rows at every size. So one row of a model with
# less than this goes through the modules; more rows, or a larger model, through the packing.
ONE_ROW_PACKED_MIN_BYTES = 8 << 20

# x (..., in) -> the group's outputs side by side, (..., out_1 + out_2 + ...)
Projection = Callable[[Any], Any]


def projections(groups: list[list[Any]]) -> list[Projection]:
    """One projection per group of `nn.Linear`s that read the same input (q/k/v; gate/up; a
    single linear): through one packed weight, the group's weights concatenated along their
    outputs, where oneDNN is built in, the weights are CPU fp32/bf16, and every group agrees
    with its modules on a probe row (bf16: bit for bit; fp32: to the last bits); else the
    modules themselves. A group in one GEMM is bit-identical to its linears one by one in
    oneDNN (checked here too) and saves a call per extra linear: 34 us per layer at one row.

    Made once per decode step built (one `generate` call, one serve worker), never kept
    across them: training changes weights in place, and fused optimizers do so without
    bumping version counters, so no cheap stamp could tell a stale copy (packing 17M
    parameters takes 25-40 ms here)."""
    packed = _packed(groups)
    if packed is None:
        return [_modules(group) for group in groups]
    weights = sum(m.weight.numel() * m.weight.element_size() for group in groups for m in group)
    one_row_modules = weights < ONE_ROW_PACKED_MIN_BYTES
    return [_fused(weight, bias, _modules(group) if one_row_modules else None)
            for group, (weight, bias) in zip(groups, packed)]


def _modules(group: list[Any]) -> Projection:
    import torch

    if len(group) == 1:
        return group[0]
    return lambda x: torch.cat([module(x) for module in group], dim=-1)


def _fused(weight: Any, bias: Any, one_row: Projection | None = None) -> Projection:
    """The packed GEMM; a single row (x (1, 1, in)) through `one_row` where given."""
    import torch

    def project(x: Any) -> Any:
        if one_row is not None and x.numel() == x.shape[-1]:
            return one_row(x)
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")

    project.packed = True  # type: ignore[attr-defined]  (a copy of the weights: see step_memo)
    return project


def may_pack(dtype: Any, device: Any) -> bool:
    """Whether weights of this dtype on this device can be packed here at all (CPU fp32/bf16
    with oneDNN built in): what `_packed` requires before it tries."""
    import torch

    return (torch.device(device).type == "cpu" and dtype in (torch.float32, torch.bfloat16)
            and torch.backends.mkldnn.is_available())


def _packed(groups: list[list[Any]]) -> list[tuple[Any, Any]] | None:
    """(packed weight, concatenated bias or None) per group, or None where packing is
    unavailable or disagrees with the modules."""
    import torch

    modules = [m for group in groups for m in group]
    weights = [m.weight for m in modules]
    dtype = weights[0].dtype
    if (any(w.device.type != "cpu" or w.dtype != dtype for w in weights) or not may_pack(dtype, "cpu")
            or any(any(m.in_features != g[0].in_features or (m.bias is None) != (g[0].bias is None) for m in g)
                   for g in groups)
            or sum(w.numel() * w.element_size() for w in weights) > PACKED_MAX_BYTES):
        return None
    try:
        if dtype == torch.bfloat16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return None
        with torch.inference_mode():
            packed = []
            for group in groups:
                weight = torch.cat([m.weight.detach() for m in group]) if len(group) > 1 else group[0].weight.detach()
                bias = None if group[0].bias is None else torch.cat([m.bias.detach() for m in group])
                packed.append((torch.ops.mkldnn._reorder_linear_weight(weight, PACK_ROWS), bias))
            for group, (weight, bias) in zip(groups, packed):
                row = torch.randn(2, group[0].in_features, generator=torch.Generator().manual_seed(0)).to(dtype)
                outputs = _fused(weight, bias)(row).split([m.out_features for m in group], dim=-1)
                for got, want in zip(outputs, (m(row) for m in group)):
                    same = torch.equal(got, want) if dtype == torch.bfloat16 else torch.allclose(
                        got, want, rtol=1e-4, atol=1e-5)
                    if not same:
                        return None
    except (RuntimeError, AttributeError, NotImplementedError):  # an op missing from this build
        return None
    return packed
