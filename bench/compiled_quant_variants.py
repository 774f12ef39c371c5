"""How fast is Inductor's kernel for the 1x128 activation-quantization recipe, written several ways?

Under torch.compile, FP8Linear expresses the activation quantization in plain torch ops so that
Inductor can fuse it into the producer of the activation. When there is no producer to fuse into
(a layer benchmarked on its own), Inductor emits a standalone kernel; this script times that kernel
for a few spellings of the same recipe against the eager ``fp8gemm::quantize_1x128`` kernel and the
copy rate, and saves the generated Triton code of each under --out.

    python bench/compiled_quant_variants.py --out gpu_logs
"""
from __future__ import annotations

import argparse
import os
import re

import torch
from torch._inductor.utils import run_and_get_code

from torch_fp8gemm import ops
from torch_fp8gemm.bench.gemm import KernelTimer, copy_bandwidth_gbs
from torch_fp8gemm.nn import quantize_activations

FP8 = torch.float8_e4m3fn


def flatten_then_cast(x):
    """The recipe before 450d4bc: groups flattened back to [M, K], then cast to fp8."""
    m, k = x.shape
    groups = x.float().reshape(m, k // 128, 128)
    scale = groups.abs().amax(dim=-1).clamp(min=1e-12) / 448.0
    values = (groups / scale.unsqueeze(-1)).clamp(-448.0, 448.0).reshape(m, k)
    return values.to(FP8), scale.t().contiguous().t()


def flat_groups(x):
    """The groups as a 2-D [M * K/128, 128] view, keepdim amax."""
    m, k = x.shape
    groups = x.reshape(m * (k // 128), 128).float()
    scale = groups.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 448.0
    values = (groups / scale).clamp(-448.0, 448.0).to(FP8).reshape(m, k)
    return values, scale.reshape(m, k // 128).t().contiguous().t()


def flat_k_major(x):
    """flat_groups with the scales left K-major (the op would transpose them itself)."""
    m, k = x.shape
    groups = x.reshape(m * (k // 128), 128).float()
    scale = groups.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 448.0
    values = (groups / scale).clamp(-448.0, 448.0).to(FP8).reshape(m, k)
    return values, scale.reshape(m, k // 128)


# "library": the recipe FP8Linear traces (cast to fp8 on the [M, K/128, 128] view, then flatten).
VARIANTS = {"flatten_then_cast": flatten_then_cast, "library": quantize_activations, "flat_groups": flat_groups,
            "flat_k_major": flat_k_major}
_END_OF_KERNEL = "'" * 3 + ", device_str="


def _save_kernels(path: str, title: str, source: str) -> list:
    """Appends the Triton kernel definitions (not the whole wrapper module) of ``source`` to ``path``."""
    names = re.findall(r"def (triton_\w+)\(", source)
    lines, keep = [], False
    for line in source.splitlines():
        if line.startswith(("@triton_heuristics", "@triton.jit")):
            keep = True
        if keep or ".run(" in line:
            lines.append(line)
        if keep and line.startswith(_END_OF_KERNEL):
            keep = False
    with open(path, "a") as f:
        f.write(f"\n######## {title}: kernels {names}\n" + "\n".join(lines) + "\n")
    return names


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="gpu_logs")
    parser.add_argument("--iters", type=int, default=20)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    timer = KernelTimer("cuda")
    copy = copy_bandwidth_gbs(timer)
    print(f"copy bandwidth {copy:.0f} GB/s")
    for m, k in [(4096, 7168), (4096, 18432), (16384, 18432)]:
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        moved = m * k * 3 + 4 * m * (k // 128)
        us = timer.median_us(lambda: ops.quantize_1x128(x), iters=args.iters)
        print(f"{m}x{k} eager op: {us:.1f} us, {moved / us / 1e3 / copy:.0%} of copy")
        weight = torch.randn(k, device="cuda", dtype=torch.bfloat16)
        us = timer.median_us(lambda: ops.quantize_1x128(torch.nn.functional.rms_norm(x, (k,), weight, 1e-6)),
                             iters=args.iters)
        print(f"{m}x{k} eager rms_norm + op: {us:.1f} us")
        for name, fn in VARIANTS.items():
            torch._dynamo.reset()
            compiled = torch.compile(fn, fullgraph=True, dynamic=False)
            _, code = run_and_get_code(compiled, x)
            names = _save_kernels(os.path.join(args.out, "quant_code.txt"), f"{name} {m}x{k}", "\n".join(code))
            us = timer.median_us(lambda: compiled(x), iters=args.iters)
            print(f"{m}x{k} {name}: {us:.1f} us, {moved / us / 1e3 / copy:.0%} of copy, kernels {names}")
            # The same recipe behind an RMSNorm: what a real block compiles to (one fused kernel?).
            weight = torch.randn(k, device="cuda", dtype=torch.bfloat16)
            torch._dynamo.reset()
            normed = torch.compile(lambda x, fn=fn: fn(torch.nn.functional.rms_norm(x, (k,), weight, 1e-6)),
                                   fullgraph=True, dynamic=False)
            _, code = run_and_get_code(normed, x)
            names = _save_kernels(os.path.join(args.out, "quant_code.txt"), f"rms_norm+{name} {m}x{k}", "\n".join(code))
            us = timer.median_us(lambda: normed(x), iters=args.iters)
            print(f"{m}x{k} rms_norm + {name}: {us:.1f} us, kernels {names}")


if __name__ == "__main__":
    main()
