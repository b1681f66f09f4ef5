"""The decode step's packed projections (drover.local.packed_linear): a group of linears in one
oneDNN GEMM gives each linear's own output side by side (bf16: bit for bit; fp32: to the last
bits), and without oneDNN (or where the group does not fit one GEMM) the modules themselves run."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from drover.local import packed_linear  # noqa: E402


def _groups(dtype, bias: bool):
    torch.manual_seed(0)
    qkv = [torch.nn.Linear(48, out, bias=bias) for out in (48, 16, 16)]  # GQA-shaped q/k/v
    gate_up = [torch.nn.Linear(48, 96, bias=False) for _ in range(2)]
    down = [torch.nn.Linear(96, 48, bias=False)]
    return [[m.to(dtype).eval() for m in g] for g in (qkv, gate_up, down)]


def _onednn() -> bool:
    return torch.backends.mkldnn.is_available()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("rows", [1, 5, 37])
def test_each_projection_equals_its_linears(dtype, bias, rows):
    dtype = getattr(torch, dtype)
    if dtype == torch.bfloat16 and not (_onednn() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        pytest.skip("no oneDNN bf16 on this CPU")
    groups = _groups(dtype, bias)
    assert packed_linear._packed(groups) is not None or not _onednn()  # the packed path is the one under test
    x = torch.randn(rows, 1, 48).to(dtype)
    mid = torch.randn(rows, 1, 96).to(dtype)
    with torch.inference_mode():
        for group, project in zip(groups, packed_linear.projections(groups)):
            inp = mid if group[0].in_features == 96 else x
            got = project(inp)  # the group's outputs side by side
            assert got.shape[-1] == sum(m.out_features for m in group)
            for y, module in zip(got.split([m.out_features for m in group], dim=-1), group):
                want = module(inp)
                assert y.shape == want.shape and y.dtype == want.dtype
                if dtype == torch.bfloat16:
                    assert torch.equal(y, want)
                else:
                    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-6)


def test_without_onednn_the_modules_run(monkeypatch):
    groups = _groups(torch.float32, bias=True)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert packed_linear._packed(groups) is None
    x = torch.randn(3, 48)
    with torch.inference_mode():
        got = packed_linear.projections(groups)[0](x)
        assert torch.equal(got, torch.cat([module(x) for module in groups[0]], dim=-1))


def test_a_group_that_is_not_one_gemm_is_not_packed():
    mixed = [[torch.nn.Linear(48, 16), torch.nn.Linear(48, 16, bias=False)]]  # one bias, one not
    assert packed_linear._packed(mixed) is None
    wide = [[torch.nn.Linear(48, 16), torch.nn.Linear(32, 16)]]  # different inputs
    assert packed_linear._packed(wide) is None
    bf16_and_fp32 = [[torch.nn.Linear(48, 16)], [torch.nn.Linear(48, 16).bfloat16()]]
    assert packed_linear._packed(bf16_and_fp32) is None
