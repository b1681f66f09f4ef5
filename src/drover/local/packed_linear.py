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

from typing import Any

# oneDNN blocks a packed weight for a batch of this many rows; 16 measured fastest for 1 row
# too (fp32: 2.16 ms vs 2.69 packed for 1 row), so one packing serves every batch size.
PACK_ROWS = 16
# The packed copies cost the projections' memory once more; past this size the step calls
# the modules (a model that large is not one whose decoding is dominated by this overhead).
PACKED_MAX_BYTES = 1 << 30


def packed_linears(modules: list[Any]) -> dict[int, Any]:
    """id(linear) -> its weight in oneDNN's blocked layout, for CPU fp32/bf16 linears where
    oneDNN is built in and agrees with the module on a probe row; {} otherwise.

    Made once per decode step built (one `generate` call, one serve worker), never kept
    across them: training changes weights in place, and fused optimizers do so without
    bumping version counters, so no cheap stamp could tell a stale copy (packing 17M
    parameters takes 25-40 ms here)."""
    import torch

    weights = [m.weight for m in modules]
    dtype = weights[0].dtype
    if (weights[0].device.type != "cpu" or not torch.backends.mkldnn.is_available()
            or any(w.dtype != dtype or w.device.type != "cpu" for w in weights)
            or dtype not in (torch.float32, torch.bfloat16)
            or sum(w.numel() * w.element_size() for w in weights) > PACKED_MAX_BYTES):
        return {}
    # One probe per kind of linear present (with and without a bias).
    probes = list({m.bias is None: m for m in reversed(modules)}.values())
    try:
        if dtype == torch.bfloat16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return {}
        with torch.inference_mode():
            packed = {id(m): torch.ops.mkldnn._reorder_linear_weight(m.weight.detach(), PACK_ROWS) for m in modules}
            checks = []
            for probe in probes:
                row = torch.randn(2, probe.in_features, generator=torch.Generator().manual_seed(0)).to(dtype)
                checks.append((project(packed, probe, row), probe(row)))
    except (RuntimeError, AttributeError, NotImplementedError):  # an op missing from this build
        return {}
    if dtype == torch.bfloat16:
        agrees = all(torch.equal(got, want) for got, want in checks)
    else:
        agrees = all(torch.allclose(got, want, rtol=1e-4, atol=1e-5) for got, want in checks)
    return packed if agrees else {}


def project(packed: dict[int, Any], module: Any, x: Any) -> Any:
    """`module(x)` (an nn.Linear), through its packed weight where there is one."""
    import torch

    weight = packed.get(id(module))
    if weight is None:
        return module(x)
    return torch.ops.mkldnn._linear_pointwise(x, weight, module.bias, "none", [], "")
