"""UE8M0 (power-of-two) scales: the quantizers' scale_format="ue8m0" against an independent float64
reference, float8_e8m0fnu scale tensors in the GEMM ops, and the modules' scale_format argument."""
import math

import pytest
import torch
from torch import nn

import torch_fp8gemm as fg
from torch_fp8gemm import testing as T
from torch_fp8gemm.moe import FP8MoEExperts

from conftest import DEVICES


def reference_ue8m0(group: torch.Tensor):
    """One group, in float64 with Python's own log2: (scale, fp8 values)."""
    amax = max(group.abs().max().item(), 1e-12)
    scale = 2.0 ** math.ceil(math.log2(amax / 448.0))
    return scale, (group.double() / scale).clamp(-448, 448).float().to(T.FP8)


@pytest.mark.parametrize("device", DEVICES)
def test_quantize_1x128_ue8m0_matches_the_reference(device):
    torch.manual_seed(0)
    x = torch.randn(5, 300) * torch.logspace(-6, 6, 5).unsqueeze(1)
    x[1, :128] = 0  # an all-zero group: the 1e-12 floor
    x[2, 7] = 1e6  # one large value sets its group's scale
    q, s = fg.quantize_1x128(x.to(device), scale_format="ue8m0")
    # The layout on the device itself: copying to the CPU drops the padding of the M-major rows.
    assert s.dtype == torch.float32 and s.shape == (5, 3) and s.stride() == (1, 8), "M-major, as float32 scales"
    q, s = q.cpu(), s.cpu()
    for r in range(5):
        for g in range(3):
            scale, values = reference_ue8m0(x[r, g * 128:(g + 1) * 128])
            assert s[r, g].item() == scale
            assert torch.equal(q[r, g * 128:(g + 1) * 128].view(torch.uint8), values.view(torch.uint8))
    qt, st = fg.quantize_1x128_transposed(x.to(device), scale_format="ue8m0")
    q2, s2 = fg.quantize_1x128(x.t().contiguous().to(device), scale_format="ue8m0")
    assert torch.equal(qt.view(torch.uint8), q2.view(torch.uint8)) and torch.equal(st, s2) and st.stride() == s2.stride()


@pytest.mark.parametrize("device", DEVICES)
def test_quantize_128x128_ue8m0_matches_the_reference(device):
    torch.manual_seed(1)
    w = torch.randn(2, 200, 300) * 0.01
    q, s = fg.quantize_128x128(w.to(device), scale_format="ue8m0")
    q, s = q.cpu(), s.cpu()
    assert s.shape == (2, 2, 3)
    for e in range(2):
        for i in range(2):
            for j in range(3):
                block = w[e, i * 128:(i + 1) * 128, j * 128:(j + 1) * 128]
                scale, values = reference_ue8m0(block)
                assert s[e, i, j].item() == scale
                got = q[e, i * 128:(i + 1) * 128, j * 128:(j + 1) * 128]
                assert torch.equal(got.reshape(-1).view(torch.uint8), values.reshape(-1).view(torch.uint8))
    qt, st = fg.quantize_128x128_transposed(w.to(device), scale_format="ue8m0")
    assert torch.equal(qt.cpu().view(torch.uint8), q.transpose(-1, -2).contiguous().view(torch.uint8))
    assert torch.equal(st.cpu(), s.transpose(-1, -2))


def test_scale_format_is_checked():
    with pytest.raises(ValueError, match=r"^quantize_1x128: expected `scale_format` to be 'float32' or 'ue8m0', got 'e8m0'"):
        fg.quantize_1x128(torch.randn(4, 128), scale_format="e8m0")
    with pytest.raises(ValueError, match=r"^FP8Linear: `scale_format='ue8m0'` needs `inference=True`"):
        fg.FP8Linear(256, 256, scale_format="ue8m0")
    with pytest.raises(ValueError, match=r"^convert: `scale_format='ue8m0'` needs `inference=True`"):
        fg.convert(nn.Linear(512, 512), scale_format="ue8m0")


@pytest.mark.parametrize("device", DEVICES)
def test_gemm_ops_take_e8m0_scale_tensors(device):
    # The same power-of-two scale values as float8_e8m0fnu or float32 give the same output.
    torch.manual_seed(2)
    a, sa = fg.quantize_1x128(torch.randn(64, 256), scale_format="ue8m0")
    b, sb = fg.quantize_128x128(torch.randn(136, 256), scale_format="ue8m0")
    a, sa, b, sb = (t.to(device) for t in (a, sa, b, sb))
    want = fg.dense(a, b, sa, sb, out_dtype=torch.float32)
    got = fg.dense(a, b, sa.to(torch.float8_e8m0fnu), sb.to(torch.float8_e8m0fnu), out_dtype=torch.float32)
    assert torch.equal(got, want)
    experts, se = fg.quantize_128x128(torch.randn(2, 136, 256), scale_format="ue8m0")
    offs = torch.tensor([20, 64], dtype=torch.int32, device=device)
    experts, se = experts.to(device), se.to(device)
    assert torch.equal(fg.grouped_moe(a, experts, offs, sa.to(torch.float8_e8m0fnu), se.to(torch.float8_e8m0fnu)),
                       fg.grouped_moe(a, experts, offs, sa, se))


def test_modules_with_ue8m0_scales():
    torch.manual_seed(3)
    linear = nn.Linear(256, 512)
    layer = fg.FP8Linear.from_linear(linear, inference=True, scale_format="ue8m0")
    s = layer.weight_scale_inv
    assert torch.equal(torch.exp2(torch.log2(s).round()), s), "weight scales are powers of two"
    x = torch.randn(8, 256)
    with torch.no_grad():
        xq, xs = fg.quantize_1x128(x, scale_format="ue8m0")
        want = fg.dense(xq, layer.weight, xs, layer.weight_scale_inv, layer.bias, torch.float32)
        assert torch.equal(layer(x), want.to(x.dtype))
    model = fg.convert(nn.Sequential(nn.Linear(512, 512)), inference=True, scale_format="ue8m0")
    assert model[0].scale_format == "ue8m0" and "scale_format=ue8m0" in repr(model)
    experts = FP8MoEExperts(4, 256, 128, inference=True, scale_format="ue8m0")
    s = experts.gate_up_proj_scale_inv
    assert torch.equal(torch.exp2(torch.log2(s).round()), s)
    idx = torch.randint(0, 4, (8, 2))
    with torch.no_grad():
        out = experts(x, idx, torch.rand(8, 2))
    assert out.shape == (8, 256) and torch.isfinite(out).all()
