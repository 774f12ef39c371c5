"""fp8gemm::quantize_1x128_transposed on every device: the same bytes, scales and scale strides as
quantize_1x128(x.t().contiguous()), argument errors, fake tensors, opcheck and torch.compile.
(The GPU kernels' own bit-exactness sweep is test_quantize_cuda.py.)"""
import re

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import torch_fp8gemm as fg
from torch_fp8gemm import testing as T

from conftest import DEVICES

# quantize ops return fp8, which opcheck's test_schema cannot compare on CPU (no float8 allclose)
FP8_UTILS = ("test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")


def _assert_same(actual, expected):
    (q, s), (rq, rs) = actual, expected
    assert q.dtype == rq.dtype == T.FP8 and q.shape == rq.shape and q.stride() == rq.stride()
    assert s.dtype == rs.dtype == torch.float32 and s.shape == rs.shape and s.stride() == rs.stride()
    assert torch.equal(q.cpu().view(torch.uint8), rq.cpu().view(torch.uint8))
    assert torch.equal(s.cpu(), rs.cpu())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("m,k", [(1, 16), (3, 100), (127, 128), (128, 144), (129, 1), (300, 260), (0, 128), (5, 0)])
def test_matches_quantize_1x128_of_the_transpose(device, dtype, m, k):
    x = (torch.randn(m, k) * torch.logspace(-3, 3, max(k, 1))[:k]).to(dtype).to(device)
    if m > 0 and k > 0:
        x[: min(m, 128), 0] = 0  # an all-zero group
    actual = fg.quantize_1x128_transposed(x)
    _assert_same(actual, fg.quantize_1x128(x.t().contiguous()))
    if actual[1].numel():
        assert actual[1].stride() == (1, T.ceil_div(k, 4) * 4)  # M-major view of x^T's scales


@pytest.mark.parametrize("device", DEVICES)
def test_strided_inputs(device):
    big = torch.randn(260, 300, device=device)
    for x in (big[:, 1:129], big[:, ::2], big.t(), big[3:200, 7:100].t(), big[:, 5:6], big[9:10]):
        _assert_same(fg.quantize_1x128_transposed(x), fg.quantize_1x128(x.t().contiguous()))


def test_feeds_dense_1x128_as_the_weight_gradient():
    # dW = dy^T x with both operands quantized per 1x128 along the tokens (M).
    dy, x = torch.randn(200, 136), torch.randn(200, 256)
    pad_tokens = (0, 0, 0, 8)  # M = 200 -> 208, a multiple of 16 (the GEMM's reduction dim rule)
    dyt, dyt_scale = fg.quantize_1x128_transposed(torch.nn.functional.pad(dy, pad_tokens))
    xt, xt_scale = fg.quantize_1x128_transposed(torch.nn.functional.pad(x, pad_tokens))
    out = fg.dense_1x128(dyt, xt, dyt_scale, xt_scale, out_dtype=torch.float32)
    expected = T.reference_dense_1x128(dyt, dyt_scale, xt, xt_scale)
    assert T.relative_error(out, expected) <= T.FP32_BAR_REFERENCE
    assert T.relative_error(out, dy.double().T @ x.double()) < 0.05


def _re(fragment):
    return re.escape(fragment)


@pytest.mark.parametrize(
    "arg,fragment",
    [
        (torch.zeros(4, 128, dtype=torch.int32), "`x` to be bfloat16/float16/float32, got Int"),
        (torch.zeros(4, 128, dtype=T.FP8), "`x` to be bfloat16/float16/float32, got Float8_e4m3fn"),
        (torch.zeros(128), "`x` to have 2 dims ([M, K]; the op returns x^T [K, M]), got 1 (shape [128])"),
        (torch.zeros(2, 3, 128), "`x` to have 2 dims ([M, K]; the op returns x^T [K, M]), got 3"),
        (torch.tensor(1.0), "`x` to have 2 dims"),
    ],
)
def test_rejects(arg, fragment):
    with pytest.raises(ValueError, match=r"^fp8gemm::quantize_1x128_transposed: expected .*" + _re(fragment)):
        fg.quantize_1x128_transposed(arg)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    for x in (torch.randn(33, 384, device=device), torch.randn(300, 5, device=device).t(),
              torch.randn(1, 16, device=device, dtype=torch.bfloat16)):
        torch.library.opcheck(torch.ops.fp8gemm.quantize_1x128_transposed.default, (x,), test_utils=FP8_UTILS)


def test_fake_and_meta_match_the_real_op():
    for m, k in [(77, 300), (1, 16), (256, 7), (0, 128)]:
        real_q, real_s = fg.quantize_1x128_transposed(torch.randn(m, k))
        with FakeTensorMode():
            q, s = fg.quantize_1x128_transposed(torch.empty(m, k))
        for fake, real in ((q, real_q), (s, real_s)):
            assert fake.shape == real.shape and fake.stride() == real.stride() and fake.dtype == real.dtype
        meta_q, meta_s = fg.quantize_1x128_transposed(torch.empty(m, k, device="meta"))
        assert meta_q.device.type == "meta" and meta_s.stride() == real_s.stride()


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_compile_fullgraph_dynamic(backend):
    def fn(x):
        xt, xt_scale = fg.quantize_1x128_transposed(x)
        return xt.float() * xt_scale.repeat_interleave(128, -1)[:, : x.shape[0]]

    compiled = torch.compile(fn, backend=backend, fullgraph=True, dynamic=True)
    for m in (130, 257):
        x = torch.randn(m, 48)
        assert torch.equal(compiled(x), fn(x))


# ---------------------------------------------------------------------------------------------
# fp8gemm::_quantize_1x128_transposed_rows: the same of x's rows gathered by an index (the MoE weight
# gradient's expert-block layout), zeros where the index is negative or past x's rows.


def _gathered_by_hand(x, rows):
    out = torch.zeros(rows.shape[0], x.shape[1], dtype=x.dtype, device=x.device)
    for j, r in enumerate(rows.tolist()):
        if 0 <= r < x.shape[0]:
            out[j] = x[r]
    return out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("m,k,num_rows", [(300, 260, 384), (300, 128, 129), (5, 16, 1), (7, 144, 0), (0, 128, 130)])
def test_gathered_rows_match_the_gathered_matrix(device, dtype, m, k, num_rows):
    torch.manual_seed(m + k + num_rows)
    x = (torch.randn(m, k) * torch.logspace(-3, 3, k)).to(dtype).to(device)
    # valid rows in any order and repeated, plus rows that must read as zeros: -1, m, a large index
    rows = torch.randint(-1, m + 2, (num_rows,))
    if num_rows > 3:
        rows[:3] = torch.tensor([-5, m, 10**9])
    rows = rows.to(device)
    _assert_same(torch.ops.fp8gemm._quantize_1x128_transposed_rows(x, rows),
                 fg.quantize_1x128_transposed(_gathered_by_hand(x, rows)))


@pytest.mark.parametrize("device", DEVICES)
def test_gathered_rows_ignore_what_they_drop(device):
    x = torch.randn(200, 256, device=device)
    x[7] = float("inf")
    x[9, 3] = float("nan")
    rows = torch.tensor([0, 8, -1, 199, 200, 5] * 30, device=device)  # rows 7 and 9 never selected
    q, s = torch.ops.fp8gemm._quantize_1x128_transposed_rows(x, rows)
    assert torch.isfinite(s).all() and torch.isfinite(q.float()).all()
    _assert_same((q, s), fg.quantize_1x128_transposed(_gathered_by_hand(x, rows)))


@pytest.mark.parametrize(
    "x,rows,fragment",
    [
        (torch.zeros(4, 128), torch.zeros(4, dtype=torch.int32), "`rows` to be a 1-D int64 tensor of source rows, got Int"),
        (torch.zeros(4, 128), torch.zeros(2, 2, dtype=torch.int64), "`rows` to be a 1-D int64 tensor"),
        (torch.zeros(2, 3, 128), torch.zeros(4, dtype=torch.int64), "`x` to have 2 dims ([M, K]), got 3"),
        (torch.zeros(4, 128, dtype=torch.int32), torch.zeros(4, dtype=torch.int64), "`x` to be bfloat16/float16/float32"),
    ],
)
def test_gathered_rows_reject(x, rows, fragment):
    with pytest.raises(ValueError, match=r"^fp8gemm::_quantize_1x128_transposed_rows: expected .*" + _re(fragment)):
        torch.ops.fp8gemm._quantize_1x128_transposed_rows(x, rows)


@pytest.mark.parametrize("device", DEVICES)
def test_gathered_rows_opcheck(device):
    x = torch.randn(70, 384, device=device)
    for rows in (torch.tensor([3, -1, 69, 70, 0] * 40), torch.arange(0), torch.arange(70).flip(0)):
        torch.library.opcheck(torch.ops.fp8gemm._quantize_1x128_transposed_rows.default, (x, rows.to(device)),
                              test_utils=FP8_UTILS)


@pytest.mark.parametrize("device", DEVICES)
def test_gathered_rows_of_strided_inputs(device):
    # x as a view with a padded row stride, an odd column offset (no 16-byte vector loads) and a
    # transposed view: the kernels read x through its own row stride.
    big = torch.randn(260, 300, device=device, dtype=torch.bfloat16)
    rows = torch.tensor([5, -1, 0, 199, 42, 300] * 25, device=device)
    for x in (big[:200, :256], big[:200, 3:147], big.t()[:, :200]):
        _assert_same(torch.ops.fp8gemm._quantize_1x128_transposed_rows(x, rows),
                     fg.quantize_1x128_transposed(_gathered_by_hand(x, rows)))
