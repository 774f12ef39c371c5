"""Kernel-by-kernel time of one FP8Linear inference forward, eager and torch.compile'd, and the
Triton kernels Inductor generated: where a compiled forward spends more than the eager one.

    python bench/forward_breakdown.py [--k 18432 --n 7168 --tokens 4096]
"""
from __future__ import annotations

import argparse
import re
from collections import defaultdict

import torch
from torch import nn
from torch._inductor.utils import run_and_get_code

from torch_fp8gemm.bench.gemm import short_kernel_name
from torch_fp8gemm.nn import FP8Linear


def kernel_times(fn, iters: int) -> dict:
    """Mean µs per call of every kernel name (L2 not flushed: a breakdown, not a benchmark)."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            fn()
        torch.cuda.synchronize()
    times = defaultdict(float)
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            times[short_kernel_name(event.name, 70)] += event.time_range.elapsed_us() / iters
    return dict(sorted(times.items(), key=lambda kv: -kv[1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--k", type=int, default=18432)
    parser.add_argument("--n", type=int, default=7168)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--iters", type=int, default=10)
    args = parser.parse_args()
    linear = nn.Linear(args.k, args.n, bias=False, device="cuda", dtype=torch.bfloat16)
    fp8 = FP8Linear.from_linear(linear, inference=True)
    x = torch.randn(args.tokens, args.k, device="cuda", dtype=torch.bfloat16)
    compiled = torch.compile(fp8, fullgraph=True, dynamic=False)
    with torch.inference_mode():
        _, code = run_and_get_code(compiled, x)
        source = "\n".join(code)
        print("generated kernels:", re.findall(r"def (triton_\w+)\(", source))
        print("calls in the wrapper:")
        for line in source.splitlines():
            if ".run(" in line or "torch.ops." in line or "extern_kernels" in line or "reinterpret_tensor" in line:
                print("   ", line.strip()[:200])
        for label, fn in (("eager", lambda: fp8(x)), ("compiled", lambda: compiled(x))):
            times = kernel_times(fn, args.iters)
            print(f"{label}: total {sum(times.values()):.1f} us")
            for name, us in times.items():
                print(f"    {us:8.1f} us  {name}")


if __name__ == "__main__":
    main()
