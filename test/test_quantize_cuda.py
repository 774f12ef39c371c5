"""The CUDA quantization kernels (csrc/kernels/quantize.cu) against the ATen reference on the CPU: the
fp8 bytes, the scales and their strides must be identical, on fresh random data with tails, leading
dims, strided and offset inputs, empty tensors, values spanning 1e-6..1e6, all-zero groups and exact
rounding ties, with NaN-poisoned outputs. Also CUDA graphs and side streams.

Skipped (with the reason) without an sm_90 GPU and a CUDA build of the extension.
"""
import itertools

import pytest
import torch

import torch_fp8gemm as fg
from torch_fp8gemm import testing as T

from conftest import HAS_SM90

pytestmark = pytest.mark.skipif(
    not (HAS_SM90 and fg.cuda_kernels_built()), reason="needs an sm_90 GPU and the CUDA build of torch_fp8gemm"
)

DTYPES = [torch.bfloat16, torch.float16, torch.float32]
SWEEP_M = [1, 3, 127, 128, 129, 4097]
SWEEP_K = [16, 100, 128, 144, 7168]


def _random(shape, dtype, gen):
    """randn scaled by 10^u per row (u uniform in [-6, 6]; for fp16 in [-6, 2.5], which keeps it below
    its 65504 limit) and by 2^j per element (j in [-4, 4]), so groups span magnitudes; about one row
    in five starts with an all-zero group and one element in 64 is zero."""
    shape = tuple(shape)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    if not shape or x.numel() == 0:
        return x.to(dtype)
    top = 2.5 if dtype == torch.float16 else 6.0
    rows = torch.rand((*shape[:-1], 1), generator=gen, dtype=torch.float64) * (top + 6.0) - 6.0
    x = x * torch.pow(10.0, rows) * torch.pow(2.0, torch.randint(-4, 5, shape, generator=gen).double())
    x[torch.rand(shape, generator=gen) < 1 / 64] = 0
    flat = x.view(-1, shape[-1])
    flat[::5, :128] = 0
    return x.to(dtype)


def _storage(scale, kb, ld):
    """The M-major storage [kb, ld] behind a quantize_1x128 scale view (padding included)."""
    return scale.as_strided((kb, ld), (ld, 1), scale.storage_offset())


def _assert_fp8_equal(actual, expected, label):
    a, e = actual.cpu().view(torch.uint8), expected.view(torch.uint8)
    # NaN (only from non-finite inputs) is 0x7f or 0xff: the sign of a NaN is not specified.
    same = (a == e) | (((a & 0x7F) == 0x7F) & ((e & 0x7F) == 0x7F))
    if not same.all():
        idx = (~same).nonzero()[0].tolist()
        pytest.fail(f"{label}: fp8 bytes differ at {idx}: got {a[tuple(idx)]:#x}, expected {e[tuple(idx)]:#x} "
                    f"({(~same).sum().item()} of {same.numel()} differ)")


def _assert_same_1x128(actual, expected, tokens, label):
    (q, s), (rq, rs) = actual, expected
    assert q.device.type == "cuda" and s.device.type == "cuda", label
    assert q.dtype == rq.dtype == T.FP8 and q.shape == rq.shape and q.stride() == rq.stride(), (
        f"{label}: fp8 {q.dtype} {tuple(q.shape)} {q.stride()} vs {rq.dtype} {tuple(rq.shape)} {rq.stride()}")
    assert s.dtype == rs.dtype == torch.float32 and s.shape == rs.shape and s.stride() == rs.stride(), (
        f"{label}: scale {tuple(s.shape)} {s.stride()} vs {tuple(rs.shape)} {rs.stride()}")
    _assert_fp8_equal(q, rq, label)
    kb, ld = s.shape[-1], T.ceil_div(tokens, 4) * 4
    if kb * ld:
        got, ref = _storage(s, kb, ld).cpu(), _storage(rs, kb, ld)
        assert torch.equal(got.isnan(), ref.isnan()), f"{label}: NaN scales differ"
        assert torch.equal(got.nan_to_num(), ref.nan_to_num()), (
            f"{label}: scales differ at {(got.nan_to_num() != ref.nan_to_num()).nonzero()[:4].tolist()} "
            "(padding rows must be 0)")


def _assert_same_128x128(actual, expected, label):
    (q, s), (rq, rs) = actual, expected
    assert q.shape == rq.shape and q.stride() == rq.stride() and q.dtype == T.FP8, label
    assert s.shape == rs.shape and s.stride() == rs.stride() and s.dtype == torch.float32, label
    _assert_fp8_equal(q, rq, label)
    assert torch.equal(s.cpu().isnan(), rs.isnan()), f"{label}: NaN scales differ"
    assert torch.equal(s.cpu().nan_to_num(), rs.nan_to_num()), f"{label}: scales differ"


def _poison(nbytes):
    T.poison_cuda_allocator("cuda", max(nbytes, 1 << 20))


def _run_1x128(x_cpu, x_gpu=None, label=""):
    x_gpu = x_cpu.cuda() if x_gpu is None else x_gpu
    tokens = x_cpu[..., 0].numel() if x_cpu.dim() > 1 else 1
    _poison(x_cpu.numel() * 5)
    got = fg.quantize_1x128(x_gpu)
    _assert_same_1x128(got, fg.quantize_1x128(x_cpu), tokens, label)


def _run_transposed(x_cpu, x_gpu=None, label=""):
    x_gpu = x_cpu.cuda() if x_gpu is None else x_gpu
    _poison(x_cpu.numel() * 5)
    got = fg.quantize_1x128_transposed(x_gpu)
    expected = fg.quantize_1x128(x_cpu.t().contiguous())
    _assert_same_1x128(got, expected, x_cpu.shape[1], label)
    ref = fg.quantize_1x128_transposed(x_cpu)  # the CPU op: the same reference
    _assert_same_1x128(got, ref, x_cpu.shape[1], label + " (CPU op)")


def _run_128x128(w_cpu, w_gpu=None, label=""):
    w_gpu = w_cpu.cuda() if w_gpu is None else w_gpu
    _poison(w_cpu.numel() * 5)
    got = fg.quantize_128x128(w_gpu)
    expected = fg.quantize_128x128(w_cpu)
    _assert_same_128x128(got, expected, label)
    # The transposed form: the same blocks written as w^T (the dgrad operand), against the CPU op.
    _poison(w_cpu.numel() * 5)
    got_t = fg.quantize_128x128_transposed(w_gpu)
    expected_t = fg.quantize_128x128_transposed(w_cpu)
    _assert_same_128x128(got_t, expected_t, label + " (transposed)")
    if w_cpu.dim() >= 2 and w_cpu.numel() > 0:
        assert torch.equal(expected_t[1].nan_to_num(), expected[1].transpose(-2, -1).nan_to_num()), label


# --------------------------------------------------------------------------------------------
# 1x128 along K


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,k", list(itertools.product(SWEEP_M, SWEEP_K)))
def test_1x128_sweep(m, k, dtype):
    gen = torch.Generator().manual_seed(m * 100003 + k)
    _run_1x128(_random((m, k), dtype, gen), label=f"m={m} k={k} {dtype}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 300), (4, 1, 128), (3, 43, 7168), (2, 2, 2, 136), (5, 7, 1)])
def test_1x128_leading_dims(shape, dtype):
    gen = torch.Generator().manual_seed(len(shape))
    _run_1x128(_random(shape, dtype, gen), label=f"{shape} {dtype}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_1x128_strided_inputs(dtype):
    gen = torch.Generator().manual_seed(1)
    big = _random((300, 1040), dtype, gen)
    big_gpu = big.cuda()
    views = {
        "row stride 1040 (vector loads)": lambda t: t[:, :1024],
        "offset by 8 elements (16-byte aligned for 16-bit inputs only)": lambda t: t[:, 8:8 + 512],
        "offset by 1 element (unaligned: element loads)": lambda t: t[:, 1:1 + 256],
        "odd row stride (unaligned rows)": lambda t: t.reshape(-1)[: 299 * 1039].view(299, 1039)[:, :384],
        "column stride 2 (copied)": lambda t: t[:, ::2],
        "transposed view (copied)": lambda t: t[:256, :300].t(),
        "3-D view with a gap between rows": lambda t: t[:, :600].unflatten(0, (3, 100)),
        "broadcast rows (row stride 0)": lambda t: t[0, :256].expand(50, 256),
        "single row of an offset view": lambda t: t[3:4, 5:5 + 300],
    }
    for label, view in views.items():
        _run_1x128(view(big).contiguous(), view(big_gpu), label=f"{label} {dtype}")


@pytest.mark.parametrize("shape", [(0, 128), (5, 0), (0, 0), (2, 0, 300), (0,), (3, 4, 0)])
def test_1x128_empty(shape):
    x = torch.zeros(shape, dtype=torch.bfloat16)
    q, s = fg.quantize_1x128(x.cuda())
    rq, rs = fg.quantize_1x128(x)
    assert q.shape == rq.shape and q.stride() == rq.stride() and q.dtype == T.FP8
    assert s.shape == rs.shape and s.stride() == rs.stride() and s.dtype == torch.float32


@pytest.mark.parametrize("dtype", DTYPES)
def test_1x128_rounding_ties(dtype):
    # One element of 448 per group makes the scale exactly 1, so the others land exactly on e4m3
    # values and on the midpoints between them (round half to even), subnormals included.
    values = torch.arange(256, dtype=torch.uint8).view(T.FP8).float()
    values = values[values.isfinite()].unique()
    mids = (values[1:] + values[:-1]) / 2
    x = torch.cat([mids, values, -mids]).repeat(4)[: 128 * 20].reshape(20, 128).clone()
    x[:, 0] = 448
    x[1::2] *= 1.0001  # scale slightly off 1: ties become near-ties
    _run_1x128(x.to(dtype), label=f"ties {dtype}")


def test_1x128_non_finite():
    # The GPU matches the reference (NaN group: NaN scale and NaN values; inf: inf scale, zeros, NaN)
    # up to the sign of NaN; other groups are unaffected.
    x = torch.randn(9, 384)
    x[1, 5] = float("nan")
    x[2, 130] = float("inf")
    x[3, 300] = -float("inf")
    _run_1x128(x, label="non-finite")
    q, s = fg.quantize_1x128(x.cuda())
    assert s[1, 0].isnan() and s[1, 1:].isfinite().all()
    assert ((q[1, :128].view(torch.uint8) & 0x7F) == 0x7F).all()


# --------------------------------------------------------------------------------------------
# 1x128 along M of x^T (quantize_1x128_transposed)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,k", list(itertools.product(SWEEP_M + [8, 1000], SWEEP_K)))
def test_transposed_sweep(m, k, dtype):
    gen = torch.Generator().manual_seed(m * 7919 + k)
    _run_transposed(_random((m, k), dtype, gen), label=f"m={m} k={k} {dtype}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_transposed_strided_inputs(dtype):
    gen = torch.Generator().manual_seed(2)
    big = _random((520, 1040), dtype, gen)
    big_gpu = big.cuda()
    views = {
        "row stride 1040": lambda t: t[:, :1024],
        "offset by 8 elements": lambda t: t[:, 8:8 + 512],
        "offset by 1 element (element loads)": lambda t: t[:, 1:1 + 300],
        "transposed view (rows of x^T: the row kernel)": lambda t: t[:300, :520].t(),
        "transposed view of an offset slice": lambda t: t[1:301, 3:260].t(),
        "column stride 2 (copied)": lambda t: t[:, ::2],
        "single column": lambda t: t[:, 7:8],
        "single row": lambda t: t[5:6, :300],
    }
    for label, view in views.items():
        _run_transposed(view(big).contiguous(), view(big_gpu), label=f"{label} {dtype}")


@pytest.mark.parametrize("shape", [(0, 128), (5, 0), (0, 0), (1, 1)])
def test_transposed_empty_and_tiny(shape):
    x = torch.randn(shape, dtype=torch.bfloat16)
    _run_transposed(x, label=f"{shape}")


# --------------------------------------------------------------------------------------------
# 128x128 blocks


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "shape",
    [(1, 1), (16, 16), (127, 129), (128, 128), (200, 300), (129, 7168), (7168, 144), (3, 257, 100),
     (2, 2, 136, 256), (4, 1, 16)],
)
def test_128x128(shape, dtype):
    gen = torch.Generator().manual_seed(sum(shape))
    w = _random(shape, dtype, gen)
    _run_128x128(w, label=f"{shape} {dtype}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_128x128_strided_and_empty(dtype):
    gen = torch.Generator().manual_seed(3)
    w = _random((300, 520), dtype, gen)
    wg = w.cuda()
    _run_128x128(w.t().contiguous(), wg.t(), label="transposed view")
    _run_128x128(w[:, 1:257].contiguous(), wg[:, 1:257], label="offset slice")
    big = _random((3, 300, 264), dtype, gen)
    _run_128x128(big[1:].contiguous(), big.cuda()[1:], label="batch slice (16-byte offset)")
    for shape in [(0, 128), (128, 0), (0, 5, 16), (2, 0, 0)]:
        z = torch.zeros(shape, dtype=dtype)
        for quantize in (fg.quantize_128x128, fg.quantize_128x128_transposed):
            q, s = quantize(z.cuda())
            rq, rs = quantize(z)
            assert q.shape == rq.shape and s.shape == rs.shape and s.stride() == rs.stride()


def test_128x128_large():
    x = torch.randn(7168, 18432, dtype=torch.bfloat16, device="cuda")
    q, s = fg.quantize_128x128(x)
    rq, rs = fg.quantize_128x128(x.cpu())
    _assert_same_128x128((q, s), (rq, rs), "7168x18432")
    _assert_same_128x128(fg.quantize_128x128_transposed(x), (rq.t().contiguous(), rs.t().contiguous()), "7168x18432^T")


# --------------------------------------------------------------------------------------------
# Streams and CUDA graphs


def test_side_stream_and_cuda_graph():
    x = torch.randn(333, 1000, dtype=torch.bfloat16, device="cuda")
    w = torch.randn(300, 1000, dtype=torch.bfloat16, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        outs = [fg.quantize_1x128(x), fg.quantize_1x128_transposed(x), fg.quantize_128x128(w)]
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    _assert_same_1x128(outs[0], fg.quantize_1x128(x.cpu()), 333, "side stream 1x128")
    _assert_same_1x128(outs[1], fg.quantize_1x128_transposed(x.cpu()), 1000, "side stream transposed")
    _assert_same_128x128(outs[2], fg.quantize_128x128(w.cpu()), "side stream 128x128")

    for _ in range(2):  # warm-up outside the capture
        fg.quantize_1x128(x), fg.quantize_1x128_transposed(x), fg.quantize_128x128(w)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = [fg.quantize_1x128(x), fg.quantize_1x128_transposed(x), fg.quantize_128x128(w)]
    for _ in range(2):  # new inputs each replay
        x.copy_(torch.randn_like(x))
        w.copy_(torch.randn_like(w))
        graph.replay()
        torch.cuda.synchronize()
        _assert_same_1x128(captured[0], fg.quantize_1x128(x.cpu()), 333, "graph 1x128")
        _assert_same_1x128(captured[1], fg.quantize_1x128_transposed(x.cpu()), 1000, "graph transposed")
        _assert_same_128x128(captured[2], fg.quantize_128x128(w.cpu()), "graph 128x128")


def test_large_rows_past_2_31_elements():
    # m * k > 2^31: the element offsets need 64 bits. Checked on sampled rows against the CPU op.
    m, k = 140_000, 16_384
    x = torch.randn(m, k, dtype=torch.bfloat16, device="cuda")
    q, s = fg.quantize_1x128(x)
    rows = torch.tensor([0, 1, 70_001, m - 2, m - 1], device="cuda")
    rq, rs = fg.quantize_1x128(x[rows].cpu())
    _assert_fp8_equal(q.view(torch.uint8)[rows], rq, "large rows")
    assert torch.equal(s[rows].cpu(), rs)
    del q, s
    # x[:, :4096]: row stride 16384, so the last rows start past 2^31 elements as well.
    qt, st = fg.quantize_1x128_transposed(x[:, :4096])
    cols = torch.tensor([0, 5, 4095], device="cuda")
    rq, rs = fg.quantize_1x128(x[:, cols].t().contiguous().cpu())
    _assert_fp8_equal(qt.view(torch.uint8)[cols], rq, "large transposed")
    assert torch.equal(st[cols].cpu(), rs)
