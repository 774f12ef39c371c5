"""Every op against an independent float64 reference of the dequantized operands.

Runs on CPU in CI; the same tests run on CUDA where a device is present (the GEMM kernels get their
own, larger sweeps in test_dense_cuda.py).
"""
import itertools

import pytest
import torch

import torch_fp8gemm as fg
from torch_fp8gemm import testing as T

from conftest import DEVICES

def _bar(out):
    return T.error_bar(out, tensor_core=T.uses_tensor_cores(out.device))


def _prepare(device, *tensors):
    T.poison_cuda_allocator(device, 1 << 26)
    return [t.to(device) for t in tensors]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("m,n,k", list(itertools.product([1, 3, 64, 129, 1000], [8, 136, 264], [128, 144, 384, 640])))
def test_dense_fp8_matches_float64(device, m, n, k):
    a, a_scale, b, b_scale = T.random_fp8_operands(m, n, k)
    expected = T.reference_dense(a, a_scale, b, b_scale)
    a, a_scale, b, b_scale = _prepare(device, a, a_scale, b, b_scale)
    for out_dtype in (torch.bfloat16, torch.float32):
        out = fg.dense(a, b, a_scale, b_scale, out_dtype=out_dtype)
        assert out.shape == (m, n) and out.dtype == out_dtype and out.device.type == device
        err = T.relative_error(out.cpu(), expected)
        assert err <= _bar(out), f"m={m} n={n} k={k} {out_dtype}: rel err {err:.3e}"


@pytest.mark.parametrize("device", DEVICES)
def test_dense_bias_and_keyword_arguments(device):
    a, a_scale, b, b_scale = T.random_fp8_operands(65, 136, 256)
    bias = torch.randn(136, dtype=torch.bfloat16)
    expected = T.reference_dense(a, a_scale, b, b_scale, bias)
    a, a_scale, b, b_scale, bias = _prepare(device, a, a_scale, b, b_scale, bias)
    out = fg.dense(a, b, a_scale=a_scale, b_scale=b_scale, bias=bias, out_dtype=torch.float32)
    assert T.relative_error(out.cpu(), expected) <= _bar(out)
    out = torch.ops.fp8gemm.dense(a=a, b=b, a_scale=a_scale, b_scale=b_scale, bias=bias)
    assert T.relative_error(out.cpu(), expected) <= _bar(out)


@pytest.mark.parametrize("device", DEVICES)
def test_dense_accepts_any_scale_strides(device):
    a, a_scale, b, b_scale = T.random_fp8_operands(70, 136, 384)
    expected = T.reference_dense(a, a_scale, b, b_scale)
    a, a_scale, b, b_scale = _prepare(device, a, a_scale, b, b_scale)
    column_major = a_scale.t().contiguous().t()  # M-major, as the kernels load it
    padded = torch.zeros(a_scale.shape[1], 72, device=device)[:, :70].t()  # M-major, padded rows
    padded.copy_(a_scale)
    for scale in (a_scale, column_major, padded, a_scale[:, :].contiguous()):
        out = fg.dense(a, b, scale, b_scale.t().contiguous().t(), out_dtype=torch.float32)
        assert T.relative_error(out.cpu(), expected) <= _bar(out)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_dense_quantizes_high_precision_operands(device, dtype):
    x = torch.randn(33, 384, dtype=dtype)
    w = torch.randn(136, 384, dtype=dtype)
    xq, xs = T.quantize_1x128_torch(x)
    wq, ws = T.quantize_128x128_torch(w)
    expected = T.reference_dense(xq, xs, wq, ws)
    x, w = _prepare(device, x, w)
    out = fg.dense(x, w, out_dtype=torch.float32)
    assert T.relative_error(out.cpu(), expected) <= _bar(out)
    # and the result is close to the unquantized product (the FP8 recipe's own error)
    assert T.relative_error(out.cpu(), x.cpu().double() @ w.cpu().double().T) < 0.08


@pytest.mark.parametrize("device", DEVICES)
def test_dense_empty_problems(device):
    for m, n, k in [(0, 136, 128), (5, 0, 128), (5, 136, 0), (0, 0, 0)]:
        a, a_scale, b, b_scale = _prepare(device, *T.random_fp8_operands(m, n, k))
        bias = torch.ones(n, device=device)
        out = fg.dense(a, b, a_scale, b_scale, bias=bias)
        assert out.shape == (m, n) and out.dtype == torch.bfloat16
        assert torch.equal(out.float().cpu(), torch.ones(m, n)), f"m={m} n={n} k={k}"


@pytest.mark.parametrize("device", DEVICES)
def test_quantize_1x128(device):
    x = torch.randn(3, 37, 300) * torch.logspace(-6, 6, 37).unsqueeze(-1)
    x[0, 0, :128] = 0  # an all-zero group: finite, non-zero scale
    x[1, 1, 5] = 1e30  # saturates at 448, never NaN
    values, scale = fg.quantize_1x128(x.to(device))
    assert values.dtype == T.FP8 and values.shape == x.shape
    assert scale.dtype == torch.float32 and scale.shape == (3, 37, 3)
    assert scale.stride()[-1] == 112 and scale.stride()[-2] == 1  # M-major (111 tokens padded to 112)
    assert torch.isfinite(values.float()).all() and (scale > 0).all() and torch.isfinite(scale).all()
    ref_values, ref_scale = T.quantize_1x128_torch(x)
    assert torch.equal(values.float().cpu(), ref_values.float())
    assert torch.equal(scale.cpu(), ref_scale)
    # e4m3 keeps 3 mantissa bits (relative rounding 2^-4) down to its subnormal spacing 2^-9 * scale
    deq = T.dequantize_1x128_f64(values.cpu(), scale.cpu())
    spacing = scale.cpu().double().repeat_interleave(128, -1)[..., :300] * 2.0 ** -9
    assert ((deq - x.double()).abs() <= 2.0 ** -4 * x.double().abs() + spacing).all()


@pytest.mark.parametrize("device", DEVICES)
def test_quantize_128x128(device):
    w = torch.randn(2, 200, 300, dtype=torch.bfloat16)
    w[0, :128, :128] = 0
    values, scale = fg.quantize_128x128(w.to(device))
    assert values.shape == w.shape and scale.shape == (2, 2, 3) and scale.is_contiguous()
    ref_values, ref_scale = T.quantize_128x128_torch(w)
    assert torch.equal(values.float().cpu(), ref_values.float())
    assert torch.equal(scale.cpu(), ref_scale)
    assert (scale > 0).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(200, 300), (2, 136, 264), (1, 16), (127, 129), (4, 1, 16)])
def test_quantize_128x128_transposed_is_the_transposed_quantization(device, shape):
    w = torch.randn(shape, dtype=torch.bfloat16)
    values_t, scale_t = fg.quantize_128x128_transposed(w.to(device))
    values, scale = fg.quantize_128x128(w)
    assert values_t.shape == (*shape[:-2], shape[-1], shape[-2]) and values_t.is_contiguous()
    assert scale_t.shape == scale.transpose(-2, -1).shape and scale_t.is_contiguous()
    standard = torch.empty(scale_t.shape).stride()  # size-1 dims too: the kernels' layout
    assert scale_t.stride() == standard and values_t.stride() == torch.empty(values_t.shape).stride()
    assert torch.equal(values_t.cpu().view(torch.uint8), values.transpose(-2, -1).view(torch.uint8))
    assert torch.equal(scale_t.cpu(), scale.transpose(-2, -1))


def _ragged_offsets(sizes):
    return torch.tensor(sizes, dtype=torch.int32).cumsum(0, dtype=torch.int32)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "sizes,tail",
    [
        ([5], 0),
        ([0, 1, 127, 128, 129, 0], 0),
        ([300, 0, 0], 7),  # one expert takes all rows; offsets end before M
        ([3, 64, 0, 65, 2, 9, 40, 1], 13),
        ([0, 0], 4),  # no expert has rows: all zeros
    ],
)
def test_grouped_moe(device, sizes, tail):
    groups, m, n, k = len(sizes), sum(sizes) + tail, 136, 384
    a, a_scale, b, b_scale = T.random_fp8_operands(m, n, k, b_lead=(groups,))
    offsets = _ragged_offsets(sizes)
    expected = T.reference_grouped_moe(a, a_scale, b, b_scale, offsets)
    a, a_scale, b, b_scale, offsets = _prepare(device, a, a_scale, b, b_scale, offsets)
    for out_dtype in (torch.bfloat16, torch.float32):
        out = fg.grouped_moe(a, b, offsets, a_scale, b_scale, out_dtype=out_dtype)
        assert out.shape == (m, n) and out.dtype == out_dtype
        assert T.relative_error(out.cpu(), expected) <= _bar(out)
        assert (out[sum(sizes):] == 0).all(), "rows past the last offset must be zero"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("masked", [[0, 0], [64, 64], [0, 17, 64, 1], [33]])
def test_grouped_moe_masked(device, masked):
    groups, max_m, n, k = len(masked), 64, 136, 256
    a, a_scale, b, b_scale = T.random_fp8_operands(max_m, n, k, a_lead=(groups,), b_lead=(groups,))
    masked_m = torch.tensor(masked, dtype=torch.int32)
    expected = T.reference_grouped_moe_masked(a, a_scale, b, b_scale, masked_m)
    a, a_scale, b, b_scale, masked_m = _prepare(device, a, a_scale, b, b_scale, masked_m)
    for out_dtype in (torch.bfloat16, torch.float32):
        out = fg.grouped_moe_masked(a, b, masked_m, max_m, a_scale, b_scale, out_dtype=out_dtype)
        assert out.shape == (groups, max_m, n)
        # rows at or past masked_m[g] are unspecified: only the written ones are compared
        rows = T.masked_rows(masked_m.cpu(), max_m)
        if rows.any():
            assert T.relative_error(out.cpu()[rows], expected[rows]) <= _bar(out)


@pytest.mark.parametrize("device", DEVICES)
def test_grouped_empty_problems(device):
    a, a_scale, b, b_scale = _prepare(device, *T.random_fp8_operands(0, 136, 128, b_lead=(3,)))
    offs = torch.zeros(3, dtype=torch.int32, device=device)
    assert fg.grouped_moe(a, b, offs, a_scale, b_scale).shape == (0, 136)
    a, a_scale, b, b_scale = _prepare(device, *T.random_fp8_operands(10, 136, 128, b_lead=(0,)))
    out = fg.grouped_moe(a, b, torch.zeros(0, dtype=torch.int32, device=device), a_scale, b_scale)
    assert out.shape == (10, 136) and (out == 0).all()
    a, a_scale, b, b_scale = _prepare(device, *T.random_fp8_operands(5, 136, 128, a_lead=(0,), b_lead=(0,)))
    out = fg.grouped_moe_masked(a, b, torch.zeros(0, dtype=torch.int32, device=device), 5, a_scale, b_scale)
    assert out.shape == (0, 5, 136)


def test_the_reference_detects_wrong_answers():
    # A wrong scale layout (transposed block scales) must fail the bar: the tests can fail.
    a, a_scale, b, b_scale = T.random_fp8_operands(64, 256, 256)
    expected = T.reference_dense(a, a_scale, b, b_scale)
    wrong = fg.dense(a, b, a_scale, b_scale.t().contiguous(), out_dtype=torch.float32)
    assert T.relative_error(wrong, expected) > 1e-2


def test_bf16_error_bar_holds_the_worst_single_rounding():
    # Values just past a power of two, halfway between BF16 neighbours: each rounds off by ~2^-8 of
    # itself. Eight of them exceed the large-output bar (why small outputs get more room) and stay
    # inside the small-output bar; 1024 of them hit the large-output bar, which relies on averaging.
    exact = torch.full((8,), 1.0 + 2.0**-8 + 2.0**-20, dtype=torch.float64)
    rounded = exact.to(torch.bfloat16)
    err = T.relative_error(rounded, exact)
    assert T.BF16_BAR < err <= T.error_bar(rounded, tensor_core=True)
    assert err <= T.error_bar(rounded, tensor_core=False)
    big = exact.repeat(128)
    assert T.relative_error(big.to(torch.bfloat16), big) > T.error_bar(big.to(torch.bfloat16), tensor_core=False)


@pytest.mark.parametrize("device", DEVICES)
def test_quantizers_return_contiguous_fp8_for_transposed_inputs(device):
    # multiples of 128: nothing pads, so a strided view could leak through
    w = torch.randn(256, 384, device=device).t()
    for quantize in (fg.quantize_1x128, fg.quantize_128x128):
        data, _ = quantize(w)
        assert data.is_contiguous(), quantize.__name__
        ref, _ = quantize(w.contiguous())
        assert torch.equal(data.view(torch.uint8), ref.view(torch.uint8))



@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_a_non_finite_input_poisons_exactly_its_scaling_group(device, value):
    # Block scaling shares one scale per group: an Inf makes its group's scale infinite (values stored
    # as zeros, which dequantize to NaN), so the whole group is poisoned: a non-finite activation makes
    # its output row non-finite, a non-finite weight every output column of its 128x128 block (exact
    # math: one column). A NaN poisons at least what exact math does. Never a finite output where
    # exact math has none, and nothing outside the group.
    torch.manual_seed(0)
    x, w = torch.randn(64, 256), torch.randn(256, 256)
    bad_x = x.clone()
    bad_x[3, 5] = value
    q, scale = fg.quantize_1x128(bad_x.to(device))
    assert not torch.isfinite(q[3, 5].float() * scale[3, 0]), "the non-finite input dequantized to a finite value"
    out = fg.dense(bad_x.to(device), w.to(device), out_dtype=torch.float32).cpu()
    assert not torch.isfinite(out[3]).any()
    assert torch.isfinite(torch.cat([out[:3], out[4:]])).all()
    bad_w = w.clone()
    bad_w[130, 7] = value
    out = fg.dense(x.to(device), bad_w.to(device), out_dtype=torch.float32).cpu()
    assert not torch.isfinite(out[:, 130]).any()
    if value == value:  # +-Inf: the whole block
        assert not torch.isfinite(out[:, 128:]).any()
    assert torch.isfinite(out[:, :128]).all()
