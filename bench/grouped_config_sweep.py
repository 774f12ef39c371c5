"""Every grouped configuration forced on the contiguous MoE shapes of the benchmark (same ragged,
unpadded group sizes), next to the heuristic's pick, with M-major activation scales and with
row-major ones (K-major in place): which configuration and scale path each shape should take.

    python bench/grouped_config_sweep.py [--iters 20]
"""
from __future__ import annotations

import argparse

import torch

from torch_fp8gemm import ops
from torch_fp8gemm import testing as T
from torch_fp8gemm.bench.gemm import KernelTimer, m_major, random_fp8, random_scales, ragged_sizes

SHAPES = [(4, 8192, 4096, 7168), (4, 8192, 7168, 2048), (8, 4096, 4096, 7168), (8, 4096, 7168, 2048)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iters", type=int, default=20)
    args = parser.parse_args()
    timer = KernelTimer("cuda")
    generator = torch.Generator().manual_seed(0)
    for groups, rows, n, k in SHAPES:
        kb, nb = T.ceil_div(k, 128), T.ceil_div(n, 128)
        sizes = ragged_sizes(groups, rows, generator)
        m = sum(sizes)
        a = random_fp8((m, k), "cuda")
        row_major = random_scales((m, kb), "cuda")
        b = random_fp8((groups, n, k), "cuda")
        sb = random_scales((groups, nb, kb), "cuda")
        offs = torch.tensor(sizes, dtype=torch.int32).cumsum(0, dtype=torch.int32).cuda()
        reference = ops.grouped_moe(a, b, offs, row_major, sb)
        cells = []
        # -1: the heuristic
        for config in [-1] + list(range(len(torch.ops.fp8gemm._sm90_grouped_configs()))):
            for layout, sa in (("m", m_major(row_major)), ("k", row_major)):
                def run(config=config, sa=sa):
                    return torch.ops.fp8gemm._sm90_grouped_moe_forced(a, b, offs, sa, sb, None, config)
                same = torch.equal(run(), reference)
                us = timer.median_us(run, iters=args.iters)
                cells.append(f"{config}{layout}: {2.0 * m * n * k / us / 1e6:.0f}{'' if same else ' (differs)'}")
        print(f"G={groups} rows={rows} N={n} K={k}: " + ", ".join(cells), flush=True)


if __name__ == "__main__":
    main()
