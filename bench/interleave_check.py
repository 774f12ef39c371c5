import torch
from torch_fp8gemm import ops
from torch_fp8gemm.benchmark import KernelTimer, torch_blockwise_scaled_mm
t = KernelTimer("cuda")
for m, n, k in [(128, 32768, 512), (128, 24576, 1536), (128, 4096, 7168), (4096, 4096, 7168)]:
    x = torch.randn(m, k, device="cuda"); w = torch.randn(n, k, device="cuda")
    a, sa = ops.quantize_1x128(x); b, sb = ops.quantize_128x128(w)
    ours = lambda: ops.dense(a, b, sa, sb)
    xb, wb = x.bfloat16(), w.bfloat16()
    mm = lambda: torch.mm(xb, wb.t())
    block = torch_blockwise_scaled_mm(a, sa, b, sb)
    alone = t.median_us(ours, 20)
    with_mm = t.median_us_interleaved([ours, mm], 20)[0]
    with_block = t.median_us_interleaved([ours, block], 20)[0]
    with_self = t.median_us_interleaved([ours, ours], 20)
    print(f"{m}x{n}x{k}: alone {alone:.1f}, after mm {with_mm:.1f}, after block {with_block:.1f}, twice {with_self[0]:.1f}/{with_self[1]:.1f}", flush=True)
