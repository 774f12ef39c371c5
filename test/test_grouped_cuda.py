"""Grouped MoE ops on the GPU: ragged contiguous groups (no padding), masked groups, K tails, CUDA
graph replays with new offsets/masks. Skipped without a CUDA device."""
import re

import pytest
import torch

import torch_fp8gemm as fg
from torch_fp8gemm import testing as T

from conftest import HAS_SM90

pytestmark = pytest.mark.skipif(not HAS_SM90, reason="needs an sm_90 GPU")

# "op": the public ops (the sm_90a grouped kernels with the heuristic's configuration);
# "kernel:<config>": the sm_90a grouped kernels through the private ops, each configuration the
# extension lists (sm90_fp8_gemm_configs.cuh) forced.
NUM_GROUPED_CONFIGS = len(torch.ops.fp8gemm._sm90_grouped_configs()) if fg.cuda_kernels_built() else 0
IMPLS = ["op", "kernel:-1"] + [f"kernel:{i}" for i in range(NUM_GROUPED_CONFIGS)]


def grouped_moe(impl, a, b, offs, sa, sb, out_dtype=None):
    if impl == "op":
        return fg.grouped_moe(a, b, offs, sa, sb, out_dtype=out_dtype)
    if not fg.cuda_kernels_built():
        pytest.skip("the extension was built without the CUDA kernels")
    return torch.ops.fp8gemm._sm90_grouped_moe_forced(a, b, offs, sa, sb, out_dtype, int(impl.split(":")[1]))


def grouped_moe_masked(impl, a, b, masked, expected_m, sa, sb, out_dtype=None):
    if impl == "op":
        return fg.grouped_moe_masked(a, b, masked, expected_m, sa, sb, out_dtype=out_dtype)
    if not fg.cuda_kernels_built():
        pytest.skip("the extension was built without the CUDA kernels")
    return torch.ops.fp8gemm._sm90_grouped_moe_masked_forced(a, b, masked, expected_m, sa, sb, out_dtype,
                                                      int(impl.split(":")[1]))



def operands(m, n, k, groups, masked=False):
    kb, nb = T.ceil_div(k, 128), T.ceil_div(n, 128)
    lead = (groups,) if masked else ()

    def fp8(*shape):
        return (torch.randn(*shape, device="cuda") * 100).clamp(-448, 448).to(T.FP8)

    def scales(*shape):
        return torch.rand(*shape, device="cuda") * 1.5 + 0.5

    return fp8(*lead, m, k), scales(*lead, m, kb), fp8(groups, n, k), scales(groups, nb, kb)


def ragged_sizes(groups, total, generator):
    cuts = torch.sort(torch.randint(0, total + 1, (groups - 1,), generator=generator)).values
    bounds = torch.cat([torch.zeros(1, dtype=torch.long), cuts, torch.tensor([total])])
    return (bounds[1:] - bounds[:-1]).tolist()


def _check(out, expected, out_dtype, label):
    assert not torch.isnan(out).any(), f"{label}: NaN (unwritten output)"
    err = T.relative_error(out, expected)
    bar = T.error_bar(out, tensor_core=T.uses_tensor_cores(out.device))
    assert err <= bar, f"{label}: relative error {err:.3e} > {bar:.1e}"


def _check_masked(out, expected, masked, out_dtype, label):
    """Masked layout: rows at or past masked[g] are unspecified; the others as _check."""
    rows = T.masked_rows(masked, out.shape[1])
    if rows.any():
        _check(out[rows], expected.to(out.device)[rows], out_dtype, label)


CONTIGUOUS_CASES = [
    [0, 1, 127, 128, 129],
    [1000],
    [0, 0, 777, 0],  # one expert takes all rows
    [64] * 8,
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("groups", [1, 2, 8, 32, 128, 256])
@pytest.mark.parametrize("n,k", [(576, 512), (264, 144)])
def test_contiguous_ragged(impl, groups, n, k):
    gen = torch.Generator().manual_seed(groups * 7 + k)
    sizes = ragged_sizes(groups, 40 * groups + 13, gen)
    tail = 5  # offsets end before M: those rows are zero
    m = sum(sizes) + tail
    a, sa, b, sb = operands(m, n, k, groups)
    offs = torch.tensor(sizes, dtype=torch.int32).cumsum(0, dtype=torch.int32).cuda()
    expected = T.reference_grouped_moe(a, sa, b, sb, offs)
    for out_dtype in (torch.bfloat16, torch.float32):
        T.poison_cuda_allocator("cuda", m * n * 4)
        out = grouped_moe(impl, a, b, offs, sa, sb, out_dtype=out_dtype)
        _check(out, expected, out_dtype, f"{impl} G={groups} sizes={sizes[:6]}... {out_dtype}")
        assert (out[sum(sizes):] == 0).all()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("sizes", CONTIGUOUS_CASES)
def test_contiguous_edge_sizes(impl, sizes):
    m, n, k = sum(sizes) + 3, 2112, 7168
    a, sa, b, sb = operands(m, n, k, len(sizes))
    offs = torch.tensor(sizes, dtype=torch.int32).cumsum(0, dtype=torch.int32).cuda()
    expected = T.reference_grouped_moe(a, sa, b, sb, offs)
    _check(grouped_moe(impl, a, b, offs, sa, sb), expected, torch.bfloat16, f"{impl} {sizes}")


@pytest.mark.parametrize("impl", IMPLS)
def test_past_scale_staging(impl):
    # K = 32896 (257 K blocks): past the shared-memory staging of B scales, so every group's B scales
    # are read from global memory in the K loop; contiguous (with an empty group) and masked.
    n, k, sizes = 264, 32896, [0, 70, 150]
    m = sum(sizes)
    a, sa, b, sb = operands(m, n, k, len(sizes))
    offs = torch.tensor(sizes, dtype=torch.int32).cumsum(0, dtype=torch.int32).cuda()
    expected = T.reference_grouped_moe(a, sa, b, sb, offs)
    T.poison_cuda_allocator("cuda", m * n * 4)
    out = grouped_moe(impl, a, b, offs, sa, sb, out_dtype=torch.float32)
    _check(out, expected, torch.float32, f"{impl} contiguous K={k}")

    max_m = 72
    a, sa, b, sb = operands(max_m, n, k, 2, masked=True)
    masked = torch.tensor([max_m, 33], dtype=torch.int32).cuda()
    expected = T.reference_grouped_moe_masked(a, sa, b, sb, masked)
    T.poison_cuda_allocator("cuda", 2 * max_m * n * 4)
    out = grouped_moe_masked(impl, a, b, masked, 48, sa, sb, out_dtype=torch.float32)
    _check_masked(out, expected, masked, torch.float32, f"{impl} masked K={k}")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("k", [1024, 640, 512])
@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float32])
def test_scale_layouts(impl, k, out_dtype):
    # Activation scales row-major (K-major in place where 8 or 4 K blocks make 16-byte rows; 4: one
    # run of floats per box), padded, misaligned, M-major: contiguous (an expert starting at every row
    # offset mod 4) and masked. Both output types: fp32 takes M-major scales only (the op copies every
    # other layout), bf16 takes K-major ones in place on every tile with a ring.
    n, sizes = 264, [0, 70, 1, 150, 33, 2]
    a, sa, b, sb = operands(sum(sizes), n, k, len(sizes))
    offs = torch.tensor(sizes, dtype=torch.int32).cumsum(0, dtype=torch.int32).cuda()
    expected = T.reference_grouped_moe(a, sa, b, sb, offs)
    for layout, scale in T.scale_layouts(sa).items():
        T.poison_cuda_allocator("cuda", sum(sizes) * n * 4)
        out = grouped_moe(impl, a, b, offs, scale, sb, out_dtype=out_dtype)
        _check(out, expected, out_dtype, f"{impl} contiguous K={k} {layout} {out_dtype}")

    max_m = 72
    a, sa, b, sb = operands(max_m, n, k, 3, masked=True)
    masked = torch.tensor([max_m, 0, 33], dtype=torch.int32).cuda()
    expected = T.reference_grouped_moe_masked(a, sa, b, sb, masked)
    for layout, scale in T.scale_layouts(sa).items():
        T.poison_cuda_allocator("cuda", 3 * max_m * n * 4)
        out = grouped_moe_masked(impl, a, b, masked, 48, scale, sb, out_dtype=out_dtype)
        _check_masked(out, expected, masked, out_dtype, f"{impl} masked K={k} {layout} {out_dtype}")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("groups,max_m", [(1, 64), (2, 129), (8, 256), (32, 16), (256, 8)])
def test_masked(impl, groups, max_m):
    n, k = 576, 384
    a, sa, b, sb = operands(max_m, n, k, groups, masked=True)
    masked = torch.randint(0, max_m + 1, (groups,), dtype=torch.int32)
    masked[0] = 0
    masked[-1] = max_m
    masked = masked.cuda()
    expected = T.reference_grouped_moe_masked(a, sa, b, sb, masked)
    for out_dtype in (torch.bfloat16, torch.float32):
        T.poison_cuda_allocator("cuda", groups * max_m * n * 4)
        out = grouped_moe_masked(impl, a, b, masked, max(1, max_m // 2), sa, sb, out_dtype=out_dtype)
        _check_masked(out, expected, masked, out_dtype, f"{impl} G={groups} max_m={max_m} {out_dtype}")


@pytest.mark.parametrize("config", [-1] + list(range(NUM_GROUPED_CONFIGS)))
@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float32])
def test_masked_leaves_rows_past_masked_m_unwritten(config, out_dtype):
    # Into a buffer prefilled with a sentinel: every row at or past masked_m[g] must still hold it
    # (the kernel's work follows the real rows), every row below it the product.
    if not fg.cuda_kernels_built():
        pytest.skip("the extension was built without the CUDA kernels")
    groups, max_m, n, k = 6, 200, 392, 640
    a, sa, b, sb = operands(max_m, n, k, groups, masked=True)
    masked = torch.tensor([0, 1, 63, 64, 129, 200], dtype=torch.int32, device="cuda")
    sentinel = -12345.0
    out = torch.full((groups, max_m, n), sentinel, dtype=out_dtype, device="cuda")
    torch.ops.fp8gemm._sm90_grouped_moe_masked_into_forced(a, b, masked, 64, sa, sb, out, config)
    rows = T.masked_rows(masked, max_m)
    assert (out[~rows] == sentinel).all(), "a row at or past masked_m[g] was written"
    _check_masked(out, T.reference_grouped_moe_masked(a, sa, b, sb, masked), masked, out_dtype, f"config {config}")


@pytest.mark.parametrize("impl", IMPLS)
def test_cuda_graph_replay_with_new_offsets_and_masks(impl):
    groups, n, k, m = 4, 576, 512, 300
    a, sa, b, sb = operands(m, n, k, groups)
    offs = torch.tensor([50, 100, 200, 290], dtype=torch.int32, device="cuda")
    am, sam, bm, sbm = operands(64, n, k, groups, masked=True)
    masked = torch.tensor([1, 64, 0, 30], dtype=torch.int32, device="cuda")
    grouped_moe(impl, a, b, offs, sa, sb)
    grouped_moe_masked(impl, am, bm, masked, 32, sam, sbm)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = grouped_moe(impl, a, b, offs, sa, sb)
        out_masked = grouped_moe_masked(impl, am, bm, masked, 32, sam, sbm)
    for new_offs, new_masked in [([0, 0, 300, 300], [64, 64, 64, 64]), ([10, 11, 12, 13], [0, 0, 0, 5])]:
        offs.copy_(torch.tensor(new_offs, dtype=torch.int32))
        masked.copy_(torch.tensor(new_masked, dtype=torch.int32))
        graph.replay()
        torch.cuda.synchronize()
        _check(out, T.reference_grouped_moe(a, sa, b, sb, offs), torch.bfloat16, f"replay offs={new_offs}")
        _check_masked(out_masked, T.reference_grouped_moe_masked(am, sam, bm, sbm, masked), masked, torch.bfloat16,
                      f"replay masked={new_masked}")


# ---------------------------------------------------------------------------------------------
# K-grouped weight gradient (fp8gemm::grouped_moe_wgrad on Hopper: one device-scheduled GEMM)


def _wgrad_per_expert(grad, x, ends, num_groups, dtype):
    """The host-sync reference path: each expert's rows through fp8gemm::dense_1x128."""
    from torch_fp8gemm.ops import _wgrad

    out = torch.zeros((num_groups, grad.shape[1], x.shape[1]), dtype=dtype, device=grad.device)
    start = 0
    for g, end in enumerate(ends):
        end = min(max(end, start), grad.shape[0])
        if end > start:
            out[g] = _wgrad(grad[start:end], x[start:end], dtype)
        start = end
    return out


@pytest.mark.parametrize("sizes", [[0, 1, 127, 128, 129], [300], [0, 0, 5], [64] * 8, [1000, 0, 3, 257]])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_k_grouped_wgrad_matches_per_expert_path(sizes, dtype):
    if not fg.cuda_kernels_built():
        pytest.skip("needs the CUDA build of torch_fp8gemm")
    torch.manual_seed(0)
    n, k = 136, 264
    m = sum(sizes) + 7  # rows past the last expert belong to none
    grad = torch.randn(m, n, device="cuda", dtype=torch.bfloat16)
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    ends = torch.tensor(sizes, device="cuda").cumsum(0).to(torch.int32)
    T.poison_cuda_allocator("cuda", len(sizes) * n * k * 4)
    got = fg.grouped_moe_wgrad(grad, x, ends, len(sizes), dtype)
    want = _wgrad_per_expert(grad, x, ends.tolist(), len(sizes), dtype)
    assert not torch.isnan(got).any()
    err = T.relative_error(got.float(), want.float())
    assert err <= 1e-6 or torch.equal(got, want), f"sizes {sizes} {dtype}: {err:.3e}"
    for g, size in enumerate(sizes):
        if size == 0:
            assert torch.count_nonzero(got[g]) == 0, f"empty expert {g} must get a zero gradient"
    # And against the float64 emulation of the recipe, expert by expert.
    start = 0
    for g, end in enumerate(ends.tolist()):
        if end > start:
            ref = T.emulated_wgrad(grad[start:end].cpu(), x[start:end].cpu())  # the CPU emulation, as elsewhere
            assert T.relative_error(got[g].cpu().double(), ref) <= 3e-3, f"expert {g} of {sizes}"
        start = end


def test_k_grouped_wgrad_cuda_graph_with_new_offsets():
    if not fg.cuda_kernels_built():
        pytest.skip("needs the CUDA build of torch_fp8gemm")
    torch.manual_seed(1)
    n, k, m, groups = 128, 256, 600, 4
    grad = torch.randn(m, n, device="cuda", dtype=torch.bfloat16)
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    ends = torch.tensor([100, 100, 400, 600], device="cuda", dtype=torch.int32)
    fg.grouped_moe_wgrad(grad, x, ends, groups, torch.float32)  # warm-up outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fg.grouped_moe_wgrad(grad, x, ends, groups, torch.float32)
    for new_ends in ([100, 100, 400, 600], [0, 300, 301, 590], [600, 600, 600, 600]):
        ends.copy_(torch.tensor(new_ends, dtype=torch.int32))
        graph.replay()
        torch.cuda.synchronize()
        want = _wgrad_per_expert(grad, x, new_ends, groups, torch.float32)
        assert T.relative_error(out, want) <= 1e-6, new_ends


def test_grouped_configurations_are_listed_and_bounded():
    # IMPLS forces every listed config; the list names each tile once, and one past the last is rejected.
    if not fg.cuda_kernels_built():
        pytest.skip("the extension was built without the CUDA kernels")
    names = torch.ops.fp8gemm._sm90_grouped_configs()
    assert len(set(names)) == len(names) >= 4
    assert all(re.fullmatch(r"grouped_bm(64|128|256)_bn(64|128|192)_s\d+_mc(1|2b)", name) for name in names), names
    a, sa, b, sb = operands(256, 256, 256, 2)
    offs = torch.tensor([100, 256], dtype=torch.int32, device="cuda")
    with pytest.raises(ValueError, match="expected `config`"):
        torch.ops.fp8gemm._sm90_grouped_moe_forced(a, b, offs, sa, sb, torch.bfloat16, NUM_GROUPED_CONFIGS)
