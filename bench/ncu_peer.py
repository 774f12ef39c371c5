"""Our dense kernel beside DeepGEMM's on the same operands, one call each, for ncu to profile side by
side: ours with each forced configuration (FORCE: names as _sm90_dense_configs() prints them, the
stage count may be left out) on
M-major scales and on row-major (K-major) ones loaded in place, then DeepGEMM (PYTHONPATH must
reach its build, e.g. the peer kit's).

    ncu --set full -k regex:sm90_fp8_gemm -o rep python3 bench/ncu_peer.py 4096x4096x7168
    FORCE=bm256_bn128_mc1,bm128_bn128_mc1 LAYOUTS=m_major python3 bench/ncu_peer.py ...

A shape of four numbers, GxRxNxK, is a contiguous MoE GEMM instead: G experts of about R rows each
(ragged, unpadded for ours; DeepGEMM gets them padded to its alignment, built outside the profiled
kernels), weights [G, N, K]; FORCE then names grouped configurations (grouped_bm256_bn128_mc1, ...).
"""
import argparse
import os
import re

import torch

from torch_fp8gemm import ops
from torch_fp8gemm import testing as T
from torch_fp8gemm.bench.gemm import m_major, ragged_sizes, random_fp8, random_scales


def forced_indices(names):
    """Indices of the FORCE configurations in `names` (the stage count may be left out)."""
    stageless = [re.sub(r"_s[0-9]+_", "_", name) for name in names]
    return [stageless.index(re.sub(r"_s[0-9]+_", "_", f)) for f in os.environ.get("FORCE", "").split(",") if f]


def contiguous_moe(groups, rows, n, k, deep_gemm, get_mn_major_tma_aligned_tensor):
    kb = T.ceil_div(k, 128)
    sizes = ragged_sizes(groups, rows, torch.Generator().manual_seed(0))
    a, sa = random_fp8((sum(sizes), k), "cuda"), random_scales((sum(sizes), kb), "cuda")
    b, sb = random_fp8((groups, n, k), "cuda"), random_scales((groups, T.ceil_div(n, 128), kb), "cuda")
    ends = torch.tensor(sizes, dtype=torch.int32).cumsum(0, dtype=torch.int32).cuda()
    ref = ops.grouped_moe(a, b, ends, sa, sb)
    names = torch.ops.fp8gemm._sm90_grouped_configs()
    shape = f"{groups}x{rows}x{n}x{k}"
    for config in forced_indices(names):
        out = torch.ops.fp8gemm._sm90_grouped_moe_forced(a, b, ends, sa, sb, None, config)
        torch.cuda.synchronize()
        print(f"{shape} ours {names[config]}: equal {torch.equal(out, ref)}", flush=True)
    align = deep_gemm.get_theoretical_mk_alignment_for_contiguous_layout()
    deep_gemm.set_mk_alignment_for_contiguous_layout(align)
    starts = [0]
    for size in sizes:
        starts.append(starts[-1] + T.ceil_div(size, align) * align)
    pa = torch.zeros(starts[-1], k, device="cuda", dtype=a.dtype)
    psa = torch.ones(starts[-1], kb, device="cuda")
    offset = 0
    for start, size in zip(starts, sizes):
        pa[start:start + size], psa[start:start + size] = a[offset:offset + size], sa[offset:offset + size]
        offset += size
    padded_ends = torch.tensor([start + size for start, size in zip(starts, sizes)], dtype=torch.int32, device="cuda")
    d = torch.empty(starts[-1], n, device="cuda", dtype=torch.bfloat16)
    deep_gemm.m_grouped_fp8_gemm_nt_contiguous((pa, get_mn_major_tma_aligned_tensor(psa)), (b, sb), d, padded_ends,
                                               use_psum_layout=True)
    torch.cuda.synchronize()
    same = torch.equal(torch.cat([d[start:start + size] for start, size in zip(starts, sizes)]), ref)
    print(f"{shape} DeepGEMM: equal {same}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("shapes", nargs="+", help="MxNxK (dense) or GxRxNxK (contiguous MoE)")
    args = parser.parse_args()
    import deep_gemm
    from deep_gemm.utils.layout import get_mn_major_tma_aligned_tensor

    names = torch.ops.fp8gemm._sm90_dense_configs()
    for shape in args.shapes:
        dims = [int(v) for v in shape.split("x")]
        if len(dims) == 4:
            contiguous_moe(*dims, deep_gemm, get_mn_major_tma_aligned_tensor)
            continue
        forced = forced_indices(names)
        m, n, k = dims
        kb = T.ceil_div(k, 128)
        a, b = random_fp8((m, k), "cuda"), random_fp8((n, k), "cuda")
        sa, sb = random_scales((m, kb), "cuda"), random_scales((T.ceil_div(n, 128), kb), "cuda")
        layouts = {"m_major": m_major(sa), "k_major": sa}
        layouts = {name: layouts[name] for name in os.environ.get("LAYOUTS", "m_major,k_major").split(",")}
        ref = torch.ops.fp8gemm._sm90_dense_forced(a, b, m_major(sa), sb, None, None, -1)
        for config in forced or [-1]:
            for layout, scale in layouts.items():
                out = torch.ops.fp8gemm._sm90_dense_forced(a, b, scale, sb, None, None, config)
                torch.cuda.synchronize()
                print(f"{shape} ours {names[config] if config >= 0 else 'heuristic'} {layout}: "
                      f"equal {torch.equal(out, ref)}", flush=True)
        d = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
        deep_gemm.fp8_gemm_nt((a, get_mn_major_tma_aligned_tensor(sa)), (b, sb), d)
        torch.cuda.synchronize()
        print(f"{shape} DeepGEMM: equal {torch.equal(d, ref)}", flush=True)


if __name__ == "__main__":
    main()
