"""The sm_90a dense kernel on the GPU: shape sweeps with tails, every configuration forced, extreme
scales, determinism, large sizes past 2^31 elements, streams, CUDA graphs and torch.compile.

Skipped (with the reason) without an sm_90 GPU and a CUDA build of the extension.
"""
import itertools
import math

import pytest
import torch

import torch_fp8gemm as fg
from torch_fp8gemm import testing as T

from conftest import HAS_SM90

pytestmark = pytest.mark.skipif(
    not (HAS_SM90 and fg.cuda_kernels_built()), reason="needs an sm_90 GPU and the CUDA build of torch_fp8gemm"
)

SWEEP_M = [1, 2, 63, 64, 65, 128, 129, 1000, 4096, 4097]
SWEEP_N = [8, 112, 576, 2112, 4096, 7168 + 8, 24576]
SWEEP_K = [16, 128, 144, 512, 7168, 16384]


def gpu_operands(m, n, k, scale_range=(0.5, 2.0), lead=()):
    """Random fp8 operands generated on the GPU (fast for large shapes)."""
    kb, nb = T.ceil_div(k, 128), T.ceil_div(n, 128)

    def fp8(*shape):
        return (torch.randn(*shape, device="cuda") * 100).clamp(-448, 448).to(T.FP8)

    def scales(*shape):
        lo, hi = math.log(scale_range[0]), math.log(scale_range[1])
        return torch.exp(torch.rand(*shape, device="cuda", dtype=torch.float64) * (hi - lo) + lo).float()

    return fp8(*lead, m, k), scales(*lead, m, kb), fp8(n, k), scales(nb, kb)


def check(out, a, a_scale, b, b_scale, bias=None, rows=None, label=""):
    """Relative error against the float64 product (computed on the GPU), optionally on some rows."""
    if rows is not None:
        out, a, a_scale = out[rows], a[rows], a_scale[rows]
    expected = T.reference_dense(a, a_scale, b, b_scale, bias)
    assert not torch.isnan(out).any(), f"{label}: NaN in the output (unwritten poisoned memory?)"
    err = T.relative_error(out, expected)
    bar = T.error_bar(out, tensor_core=True)
    assert err <= bar, f"{label}: relative error {err:.3e} > {bar:.1e}"
    return err


def _sweep_cases():
    for m, n, k in itertools.product(SWEEP_M, SWEEP_N, SWEEP_K):
        if m * n * k <= 2 ** 36 or (m, n, k) in {(4096, 24576, 16384), (4097, 7176, 7168)}:
            yield m, n, k


@pytest.mark.parametrize("m,n,k", list(_sweep_cases()))
def test_sweep(m, n, k):
    a, sa, b, sb = gpu_operands(m, n, k)
    for out_dtype in (torch.bfloat16, torch.float32):
        T.poison_cuda_allocator("cuda", m * n * 4)
        out = fg.dense(a, b, sa, sb, out_dtype=out_dtype)
        check(out, a, sa, b, sb, label=f"{m}x{n}x{k} {out_dtype}")


def test_every_configuration_is_forced():
    configs = torch.ops.fp8gemm._sm90_dense_configs()
    assert len(configs) >= 2
    for index, name in enumerate(configs):
        for m, n, k in [(1, 8, 16), (65, 112, 144), (129, 576, 512), (1000, 2112 + 8, 7168), (257, 4096, 16384)]:
            a, sa, b, sb = gpu_operands(m, n, k)
            bias = torch.randn(n, device="cuda")
            for out_dtype in (torch.bfloat16, torch.float32):
                T.poison_cuda_allocator("cuda", m * n * 4)
                out = torch.ops.fp8gemm._sm90_dense_forced(a, b, sa, sb, bias, out_dtype, index)
                check(out, a, sa, b, sb, bias=bias, label=f"config {name} {m}x{n}x{k} {out_dtype}")


def test_every_configuration_takes_every_scale_layout():
    # Row-major scales with 16-byte rows load K-major in place (a ring of boxes of 4 K blocks), M-major
    # ones in place; the op copies the others M-major. K blocks: 8 (row-major in place), 5 (padded rows
    # in place where the ring's boxes lie far enough apart: one K block between the tiles' last and
    # first box), 4 (rows of exactly 4 floats: loaded as one run) with m = 1 and with ~9 tiles per CTA
    # on the smallest tiles (16 stages over 4 slots: a slot is rewritten just as its stage frees), and
    # 41 (the M-major copy crosses its 32 x 32 tiles in both directions). bf16 output: fp32 takes M-major
    # scales only, so it would copy every layout.
    configs = torch.ops.fp8gemm._sm90_dense_configs()
    for m, n, k in [(129, 576, 1024), (65, 112, 640), (1, 264, 512), (520, 2048, 512), (200, 96, 5184)]:
        a, sa, b, sb = gpu_operands(m, n, k)
        expected = T.reference_dense(a, sa, b, sb)
        for layout, scale in T.scale_layouts(sa).items():
            for index, name in enumerate(configs):
                T.poison_cuda_allocator("cuda", m * n * 4)
                out = torch.ops.fp8gemm._sm90_dense_forced(a, b, scale, sb, None, torch.bfloat16, index)
                err = T.relative_error(out, expected)
                assert err <= T.error_bar(out, tensor_core=True), f"config {name} {m}x{n}x{k} {layout}: {err:.3e}"


def test_heuristic_picks_valid_configurations():
    n_configs = len(torch.ops.fp8gemm._sm90_dense_configs())
    for m, n, k in [(1, 8, 16), (64, 2112, 7168), (4096, 7168, 2048), (8192, 8192, 8192)]:
        assert 0 <= torch.ops.fp8gemm._sm90_dense_pick_config(m, n, k, 132) < n_configs


def test_extreme_scales():
    m, n, k = 300, 576, 1024
    a, sa, b, sb = gpu_operands(m, n, k, scale_range=(1e-6, 1e6))
    for out_dtype in (torch.bfloat16, torch.float32):
        out = fg.dense(a, b, sa, sb, out_dtype=out_dtype)
        assert torch.isfinite(out).all()
        check(out, a, sa, b, sb, label=f"scales 1e-6..1e6 {out_dtype}")


def test_bias_and_scale_layouts():
    m, n, k = 129, 576, 640
    a, sa, b, sb = gpu_operands(m, n, k)
    bias = torch.randn(n, device="cuda", dtype=torch.bfloat16)
    for scale in (sa, sa.t().contiguous().t(), sa.contiguous()):
        out = fg.dense(a, b, scale, sb, bias=bias, out_dtype=torch.float32)
        check(out, a, sa, b, sb, bias=bias, label="scale layout")


def test_strided_rows():
    # fp8 operands with padded (16-aligned) row strides, as views of a larger buffer
    m, n, k = 100, 264, 256
    a_buf = (torch.randn(m, k + 32, device="cuda") * 50).to(T.FP8)
    b_buf = (torch.randn(n, k + 16, device="cuda") * 50).to(T.FP8)
    a, b = a_buf[:, :k], b_buf[:, 16:16 + k]
    _, sa, _, sb = gpu_operands(m, n, k)
    check(fg.dense(a, b, sa, sb, out_dtype=torch.float32), a.contiguous(), sa, b.contiguous(), sb, label="strided")


def test_deterministic():
    a, sa, b, sb = gpu_operands(1000, 2112, 7168)
    first = fg.dense(a, b, sa, sb)
    for _ in range(3):
        assert torch.equal(fg.dense(a, b, sa, sb), first)


def test_accuracy_does_not_degrade_with_k():
    # 18432 and 32768: the tile's B scales staged in shared memory at once; 32896: past one chunk of
    # 256 K blocks, staged in two.
    for k in (16384, 18432, 32768, 32896):
        a, sa, b, sb = gpu_operands(128, 1024, k)
        check(fg.dense(a, b, sa, sb, out_dtype=torch.float32), a, sa, b, sb, label=f"K={k} fp32")


def test_every_configuration_past_128_scale_blocks():
    # K = 18432 (144 K blocks, DeepSeek-V3's down projection and the dgrad of gate/up) and K = 32896
    # (B scales staged in two chunks) on every configuration, with a ragged tile edge.
    configs = torch.ops.fp8gemm._sm90_dense_configs()
    for k in (18432, 32896):
        a, sa, b, sb = gpu_operands(200, 264, k)
        for index, name in enumerate(configs):
            T.poison_cuda_allocator("cuda", 200 * 264 * 4)
            out = torch.ops.fp8gemm._sm90_dense_forced(a, b, sa, sb, None, torch.float32, index)
            check(out, a, sa, b, sb, label=f"config {name} K={k}")


def test_large_m_times_k_past_int32():
    m, n, k = 140_000, 256, 16384  # M*K = 2.29e9 > 2^31
    a, sa, b, sb = gpu_operands(m, n, k)
    out = fg.dense(a, b, sa, sb)
    check(out, a, sa, b, sb, rows=slice(m - 300, m), label="M*K > 2^31, last rows")
    check(out, a, sa, b, sb, rows=slice(0, 100), label="M*K > 2^31, first rows")


def test_large_m_times_n_past_int32():
    m, n, k = 1_048_600, 2112, 128  # M*N = 2.2e9 > 2^31
    a, sa, b, sb = gpu_operands(m, n, k)
    out = fg.dense(a, b, sa, sb)
    check(out, a, sa, b, sb, rows=slice(m - 300, m), label="M*N > 2^31, last rows")
    del out


def test_side_stream_and_cuda_graph():
    a, sa, b, sb = gpu_operands(257, 2112, 1024)
    expected = fg.dense(a, b, sa, sb)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        out = fg.dense(a, b, sa, sb)
    stream.synchronize()
    assert torch.equal(out, expected)

    graph = torch.cuda.CUDAGraph()
    static_a = a.clone()
    fg.dense(static_a, b, sa, sb)  # warm-up outside capture
    torch.cuda.synchronize()
    with torch.cuda.graph(graph):
        static_out = fg.dense(static_a, b, sa, sb)
    new_a, _, _, _ = gpu_operands(257, 2112, 1024)
    static_a.copy_(new_a)
    graph.replay()
    torch.cuda.synchronize()
    check(static_out, new_a, sa, b, sb, label="graph replay")


def test_torch_compile_reduce_overhead():
    w = torch.randn(2112, 1024, device="cuda", dtype=torch.bfloat16)
    w_fp8, w_scale = fg.quantize_128x128(w)

    def layer(x):
        x_fp8, x_scale = fg.quantize_1x128(x)
        return fg.dense(x_fp8, w_fp8, x_scale, w_scale)

    compiled = torch.compile(layer, mode="reduce-overhead", fullgraph=True)
    for m in (64, 64, 128, 64):
        x = torch.randn(m, 1024, device="cuda", dtype=torch.bfloat16)
        got = compiled(x).clone()
        want = layer(x)
        # Inductor may quantize in fp32 with slightly different rounding: compare with the bar
        assert T.relative_error(got, want) <= 1e-2
