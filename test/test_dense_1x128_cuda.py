"""fp8gemm::dense_1x128 on the sm_90a dense_1x128 kernel (both operands scaled per 1x128 along K:
the weight-gradient GEMM): shape sweep with tails, every configuration forced, NaN-poisoned outputs,
scales spanning 1e-6..1e6, determinism. Skipped without an sm_90 GPU and the CUDA build."""
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

CONFIGS = [-1, 0, 1, 2]  # heuristic, bm64_bn128, bm128_bn128, bm128_bn256


def operands(m, n, k, scale_range=(0.5, 2.0)):
    kb = T.ceil_div(k, 128)

    def fp8(*shape):
        return (torch.randn(*shape, device="cuda") * 100).clamp(-448, 448).to(T.FP8)

    def scales(*shape):
        lo, hi = math.log(scale_range[0]), math.log(scale_range[1])
        return torch.exp(torch.rand(*shape, device="cuda", dtype=torch.float64) * (hi - lo) + lo).float()

    return fp8(m, k), scales(m, kb), fp8(n, k), scales(n, kb)


def run(config, a, sa, b, sb, out_dtype):
    T.poison_cuda_allocator("cuda", a.shape[0] * b.shape[0] * 4)
    return torch.ops.fp8gemm._sm90_dense_1x128_forced(a, b, sa, sb, out_dtype, config)


def check(out, a, sa, b, sb, label):
    assert not torch.isnan(out).any(), f"{label}: NaN (unwritten output)"
    expected = T.reference_dense_1x128(a.cpu(), sa.cpu(), b.cpu(), sb.cpu())
    err = T.relative_error(out.cpu(), expected)
    bar = T.error_bar(out, tensor_core=True)
    assert err <= bar, f"{label}: relative error {err:.3e} > {bar:.1e}"


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("m,n,k", list(itertools.product([1, 63, 129, 1000], [8, 136, 2112], [16, 144, 512, 2048])))
def test_sweep(config, m, n, k):
    a, sa, b, sb = operands(m, n, k)
    for out_dtype in (torch.bfloat16, torch.float32):
        check(run(config, a, sa, b, sb, out_dtype), a, sa, b, sb, f"config {config} {m}x{n}x{k} {out_dtype}")


@pytest.mark.parametrize("config", CONFIGS)
def test_large_and_long_k(config):
    a, sa, b, sb = operands(4097, 7176, 16384 if config == -1 else 4096)
    check(run(config, a, sa, b, sb, torch.float32), a, sa, b, sb, f"config {config} large")


def test_extreme_scales_and_determinism():
    a, sa, b, sb = operands(300, 264, 1024, scale_range=(1e-6, 1e6))
    out = run(-1, a, sa, b, sb, torch.float32)
    assert torch.isfinite(out).all()
    check(out, a, sa, b, sb, "scales 1e-6..1e6")
    assert torch.equal(out, run(-1, a, sa, b, sb, torch.float32)), "reruns must be bit-identical"


def test_public_op_uses_quantize_layout():
    x, w = torch.randn(1000, 512, device="cuda"), torch.randn(264, 512, device="cuda")
    out = fg.dense_1x128(x, w, out_dtype=torch.float32)
    qa, sa = T.quantize_1x128_torch(x.cpu())
    qb, sb = T.quantize_1x128_torch(w.cpu())
    assert T.relative_error(out.cpu(), T.reference_dense_1x128(qa, sa, qb, sb)) <= 3e-4
