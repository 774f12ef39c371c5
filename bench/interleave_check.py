"""Does our dense kernel run slower right after another GEMM than after itself? Times fp8gemm::dense
alone, round-robin with torch.mm, with the block-wise cuBLASLt GEMM and with itself, for a few
shapes (the first round-robin dense run had three M = 128 shapes 13-26% slower than before; this
check, run right after, did not reproduce it: RESULTS.md, sixth session).

    python bench/interleave_check.py
"""
import torch

from torch_fp8gemm import ops
from torch_fp8gemm.benchmark import KernelTimer, torch_blockwise_scaled_mm

SHAPES = [(128, 32768, 512), (128, 24576, 1536), (128, 4096, 7168), (4096, 4096, 7168)]


def main() -> None:
    timer = KernelTimer("cuda")
    for m, n, k in SHAPES:
        x, w = torch.randn(m, k, device="cuda"), torch.randn(n, k, device="cuda")
        a, sa = ops.quantize_1x128(x)
        b, sb = ops.quantize_128x128(w)
        xb, wb = x.bfloat16(), w.bfloat16()

        def ours():
            return ops.dense(a, b, sa, sb)

        block = torch_blockwise_scaled_mm(a, sa, b, sb)
        alone = timer.median_us(ours, 20)
        after_mm = timer.median_us_interleaved([ours, lambda: torch.mm(xb, wb.t())], 20)[0]
        after_block = timer.median_us_interleaved([ours, block], 20)[0] if block else float("nan")
        twice = timer.median_us_interleaved([ours, ours], 20)
        print(f"{m}x{n}x{k}: alone {alone:.1f} us, after torch.mm {after_mm:.1f}, after block-wise "
              f"{after_block:.1f}, after itself {twice[0]:.1f} / {twice[1]:.1f}", flush=True)


if __name__ == "__main__":
    main()
