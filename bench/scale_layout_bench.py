"""What the activation-scale layout costs the GEMM ops on the GPU: the same operands timed with M-major
scales (quantize_1x128's layout, loaded in place), row-major ones (loaded K-major in place where the
configuration takes them) and misaligned ones (the op copies them M-major first). CUPTI kernel time of
the whole op, L2 flushed, the three layouts interleaved. One LAYOUT json line per shape.
    python3 bench/scale_layout_bench.py [m,n,k ...]        (contiguous MoE: G,rows,n,k with 4 numbers)"""
import json
import sys

import torch

import torch_fp8gemm as fg
from torch_fp8gemm import testing as T
from torch_fp8gemm.bench.gemm import KernelTimer, m_major, random_fp8, random_scales

DEFAULT = ["64,2112,7168", "64,4096,7168", "64,7168,2048", "64,24576,1536", "64,32768,512", "128,32768,512",
           "128,7168,16384", "16,7168,2048", "1,4096,4096", "1024,1536,7168", "4096,4096,7168",
           "4,8192,4096,7168", "256,32,7168,2048"]


def layouts(scale):
    tested = T.scale_layouts(scale)
    return {"m_major": m_major(scale), "row_major": tested["row-major"], "copied": tested["misaligned"]}


def main(argv):
    timer = KernelTimer("cuda")
    for spec in argv or DEFAULT:
        dims = [int(x) for x in spec.split(",")]
        if len(dims) == 3:
            m, n, k = dims
            a, b = random_fp8((m, k), "cuda"), random_fp8((n, k), "cuda")
            sa, sb = random_scales((m, T.ceil_div(k, 128)), "cuda"), random_scales((T.ceil_div(n, 128), T.ceil_div(k, 128)), "cuda")
            call = lambda s: (lambda: fg.dense(a, b, s, sb))  # noqa: E731
            flops = 2 * m * n * k
        else:
            groups, rows, n, k = dims
            m = groups * rows
            a, b = random_fp8((m, k), "cuda"), random_fp8((groups, n, k), "cuda")
            sa = random_scales((m, T.ceil_div(k, 128)), "cuda")
            sb = random_scales((groups, T.ceil_div(n, 128), T.ceil_div(k, 128)), "cuda")
            offs = torch.arange(1, groups + 1, device="cuda", dtype=torch.int32) * rows
            call = lambda s: (lambda: fg.grouped_moe(a, b, offs, s, sb))  # noqa: E731
            flops = 2 * m * n * k
        named = layouts(sa)
        first = call(named["m_major"])()
        for s in named.values():
            assert torch.equal(call(s)(), first), spec
        times = timer.median_us_interleaved([call(s) for s in named.values()], iters=20)
        row = {"shape": dims, **{name: round(us, 2) for name, us in zip(named, times)}}
        row["tflops_m_major"] = round(flops / times[0] / 1e6, 1)
        print("LAYOUT", json.dumps(row), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
