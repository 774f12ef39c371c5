"""Every grouped configuration forced on the contiguous MoE shapes of the benchmark (same ragged,
unpadded group sizes) and on masked shapes (decode-sized experts in large capacities), next to the
heuristic's pick, with M-major activation scales and with row-major ones (K-major in place): which
configuration and scale path each shape should take. TFLOP/s of the real rows.
--dense MxNxK,...: dense GEMMs as one expert of exactly M rows, every grouped configuration (the
2-CTA pairs among them) beside the dense op's own pick ("dense" in the line): whether the dense
kind would gain from a grouped configuration.

    python bench/grouped_config_sweep.py [--iters 20] [--layout contiguous|masked|both|none]
                                         [--dense 4096x7168x2048,...]
"""
from __future__ import annotations

import argparse

import torch

from torch_fp8gemm import ops
from torch_fp8gemm import testing as T
from torch_fp8gemm.bench.gemm import KernelTimer, m_major, random_fp8, random_scales, ragged_sizes

SHAPES = [(4, 8192, 4096, 7168), (4, 8192, 7168, 2048), (8, 4096, 4096, 7168), (8, 4096, 7168, 2048)]
# (experts, mean rows, N, K, capacity max_m)
MASKED_SHAPES = [(32, 192, 6144, 7168, 4096), (32, 20, 4096, 4096, 4096), (1, 1024, 7168, 2048, 1536),
                 (4, 256, 7168, 2048, 512), (8, 64, 7168, 2048, 256)]


def sweep(name: str, flops: float, run, same, iters: int, timer: KernelTimer, scales, extra=()) -> None:
    """One line: every configuration (-1: the heuristic) with each scale layout, and the `extra`
    (label, function) cases, in TFLOP/s, timed interleaved (the GPU's clock drifts along a row: timed
    one after the other, the first columns ran up to 13% faster than the same configuration later
    in the row)."""
    cases = [(config, layout, lambda config=config, sa=sa: run(config, sa))
             for config in [-1] + list(range(len(torch.ops.fp8gemm._sm90_grouped_configs())))
             for layout, sa in scales] + [(label, "", fn) for label, fn in extra]
    ok = [same(fn()) for _, _, fn in cases]
    times = timer.median_us_interleaved([fn for _, _, fn in cases], iters=iters)
    cells = [f"{config}{layout}: {flops / us / 1e6:.0f}{'' if good else ' (differs)'}"
             for (config, layout, _), us, good in zip(cases, times, ok)]
    print(f"{name}: " + ", ".join(cells), flush=True)


def masked(iters: int, timer: KernelTimer, generator: torch.Generator) -> None:
    for groups, rows, n, k, max_m in MASKED_SHAPES:
        kb, nb = T.ceil_div(k, 128), T.ceil_div(n, 128)
        counts = torch.tensor([min(max_m, s) for s in ragged_sizes(groups, rows, generator)], dtype=torch.int32)
        a = random_fp8((groups, max_m, k), "cuda")
        row_major = random_scales((groups, max_m, kb), "cuda")
        flat = m_major(row_major.reshape(groups * max_m, kb)).view(groups, max_m, kb)
        b = random_fp8((groups, n, k), "cuda")
        sb = random_scales((groups, nb, kb), "cuda")
        masked_m = counts.cuda()
        reference = ops.grouped_moe_masked(a, b, masked_m, rows, row_major, sb)
        rows_of = [slice(0, c) for c in counts.tolist()]

        def same(out):
            return all(torch.equal(out[g, r], reference[g, r]) for g, r in enumerate(rows_of))

        def run(config, sa):
            return torch.ops.fp8gemm._sm90_grouped_moe_masked_forced(a, b, masked_m, rows, sa, sb, None, config)

        flops = 2.0 * int(counts.sum()) * n * k
        sweep(f"masked G={groups} rows={rows} max_m={max_m} N={n} K={k}", flops, run, same, iters, timer,
              (("m", flat), ("k", row_major)))


def dense_as_one_expert(m: int, n: int, k: int, iters: int, timer: KernelTimer) -> None:
    kb = T.ceil_div(k, 128)
    a, row_major = random_fp8((m, k), "cuda"), random_scales((m, kb), "cuda")
    b, sb = random_fp8((1, n, k), "cuda"), random_scales((1, T.ceil_div(n, 128), kb), "cuda")
    ends = torch.tensor([m], dtype=torch.int32, device="cuda")
    reference = ops.dense(a, b[0], row_major, sb[0])

    def run(config, sa):
        return torch.ops.fp8gemm._sm90_grouped_moe_forced(a, b, ends, sa, sb, None, config)

    mm = m_major(row_major)  # both sides read the same M-major scales: kernel against kernel
    sweep(f"dense as one expert M={m} N={n} K={k}", 2.0 * m * n * k, run,
          lambda out: torch.equal(out, reference), iters, timer, (("m", mm),),
          extra=(("dense", lambda: ops.dense(a, b[0], mm, sb[0])),))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--layout", choices=("contiguous", "masked", "both", "none"), default="both")
    parser.add_argument("--dense", default="", help="MxNxK,...: dense shapes run as one expert")
    args = parser.parse_args()
    timer = KernelTimer("cuda")
    generator = torch.Generator().manual_seed(0)
    print("configs: " + ", ".join(f"{i} {name}" for i, name in enumerate(torch.ops.fp8gemm._sm90_grouped_configs())))
    if args.layout in ("masked", "both"):
        masked(args.iters, timer, generator)
    for shape in filter(None, args.dense.split(",")):
        dense_as_one_expert(*(int(x) for x in shape.split("x")), args.iters, timer)
    for groups, rows, n, k in SHAPES if args.layout in ("contiguous", "both") else []:
        kb, nb = T.ceil_div(k, 128), T.ceil_div(n, 128)
        sizes = ragged_sizes(groups, rows, generator)
        m = sum(sizes)
        a = random_fp8((m, k), "cuda")
        row_major = random_scales((m, kb), "cuda")
        b = random_fp8((groups, n, k), "cuda")
        sb = random_scales((groups, nb, kb), "cuda")
        offs = torch.tensor(sizes, dtype=torch.int32).cumsum(0, dtype=torch.int32).cuda()
        reference = ops.grouped_moe(a, b, offs, row_major, sb)

        def run(config, sa, a=a, b=b, offs=offs, sb=sb):
            return torch.ops.fp8gemm._sm90_grouped_moe_forced(a, b, offs, sa, sb, None, config)

        sweep(f"contiguous G={groups} rows={rows} N={n} K={k}", 2.0 * m * n * k, run,
              lambda out, reference=reference: torch.equal(out, reference), args.iters, timer,
              (("m", m_major(row_major)), ("k", row_major)))


if __name__ == "__main__":
    main()
