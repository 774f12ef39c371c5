"""Verification and benchmark tables: the main job run by ``python -m torch_fp8gemm``.

Timing is kernel device time from CUPTI (torch.profiler), with the L2 cache flushed before every
call (a 512 MiB buffer is rewritten), median over ``iters`` calls after warm-up. Every kernel the
timed callable launches counts, so our op is charged for any layout copies it makes.
"""
from __future__ import annotations

import argparse
import datetime
import math
import statistics
import subprocess
import sys
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from . import ops
from . import testing as T

# The 19 dense DeepSeek-V3 shapes of shared/ANCHORS.md: (M, N, K).
DSV3_DENSE_SHAPES = [
    (m, n, k)
    for m in (64, 128, 4096)
    for n, k in ((2112, 7168), (24576, 1536), (32768, 512), (7168, 16384), (4096, 7168), (7168, 2048))
] + [(8192, 8192, 8192)]

QUICK_SHAPES = [(64, 7168, 2048), (128, 4096, 7168), (4096, 7168, 2048), (4096, 4096, 7168)]

_FLUSH_MARKER = "bitwise_not"  # the flush kernel's name; no timed callable launches one


def _log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------------------------
# Timing


class KernelTimer:
    def __init__(self, device, flush_bytes: int = 512 << 20):
        self.flush = torch.zeros(flush_bytes // 4, dtype=torch.int32, device=device)

    def median_us(self, fn: Callable[[], object], iters: int = 30, warmup: int = 3) -> float:
        for _ in range(warmup):
            fn()
        torch.cuda.synchronize()
        activities = [torch.profiler.ProfilerActivity.CUDA]
        with torch.profiler.profile(activities=activities) as prof:
            for _ in range(iters):
                self.flush.bitwise_not_()
                fn()
            torch.cuda.synchronize()
        kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        kernels.sort(key=lambda e: e.time_range.start)
        per_call: list[float] = []
        for event in kernels:
            if _FLUSH_MARKER in event.name:
                per_call.append(0.0)
            elif per_call:
                per_call[-1] += event.time_range.elapsed_us()
        if not per_call or max(per_call) == 0.0:
            raise RuntimeError("the profiler recorded no kernels for the timed callable")
        return statistics.median(per_call)


# --------------------------------------------------------------------------------------------
# torch's block-scaled FP8 GEMM (cuBLASLt) with the scale layouts it accepts


def torch_blockwise_scaled_mm(a, a_scale, b, b_scale) -> Optional[Callable[[], torch.Tensor]]:
    """A callable running F.scaled_mm BlockWise1x128 x BlockWise128x128 on our operands, or None.

    torch 2.11 returns wrong numbers without an error when ceil(K/128) % 4 != 0 unless the K-block
    dim of the scales is padded to a multiple of 4 (pytorch/pytorch#166752), so every candidate
    layout is checked against our reference answer before it is timed.
    """
    if not hasattr(F, "scaled_mm") or not hasattr(F, "ScalingType"):
        return None
    m, kb = a_scale.shape
    nb = b_scale.shape[0]
    kb4 = T.ceil_div(kb, 4) * 4
    a_mmajor = a_scale.t().contiguous().t()  # (M, Kb), stride (1, M)
    a_padded = torch.zeros(kb4, m, device=a.device)
    a_padded[:kb] = a_scale.t()
    b_padded = torch.zeros(nb, kb4, device=a.device)
    b_padded[:, :kb] = b_scale
    candidates = [
        (a_mmajor, b_scale.t()),
        (a_mmajor, b_padded.t()),
        (a_padded.t()[:, :], b_padded.t()),
    ]
    expected = T.reference_dense(a[:256].cpu(), a_scale[:256].cpu(), b.cpu(), b_scale.cpu()) if m <= 256 else None
    rows = min(m, 256)
    for sa, sb in candidates:
        def run(sa=sa, sb=sb):
            return F.scaled_mm(
                a, b.t(), sa, F.ScalingType.BlockWise1x128, sb, F.ScalingType.BlockWise128x128,
                output_dtype=torch.bfloat16,
            )

        try:
            out = run()
        except (RuntimeError, ValueError, TypeError, NotImplementedError):
            continue
        if expected is None:
            expected = T.reference_dense(a[:rows].cpu(), a_scale[:rows].cpu(), b.cpu(), b_scale.cpu())
        if T.relative_error(out[:rows].cpu(), expected) <= 1e-2:
            return run
    return None


# --------------------------------------------------------------------------------------------
# Tables


def _format_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def verify(device: str, large: bool) -> tuple[str, bool]:
    """Every op against the float64 reference on fresh random data; returns (table, all passed)."""
    dense_shapes = [(1, 8, 128), (3, 136, 144), (129, 264, 640), (1000, 2112, 512)]
    if large:
        dense_shapes += [(4097, 7176, 7168), (64, 24576, 1536), (128, 7168, 16384)]
    rows, ok = [], True

    tensor_core = T.uses_tensor_cores(device)

    def record(op, shape, out, expected, bar=None):
        nonlocal ok
        bar = T.error_bar(out, tensor_core) if bar is None else bar
        err = T.relative_error(out.cpu(), expected)
        passed = err <= bar and not torch.isnan(out).any().item()
        ok &= passed
        rows.append([op, shape, f"{err:.2e}", f"{bar:.1e}", "PASS" if passed else "FAIL"])
        _log(f"  verify {op:<20} {shape:<28} rel err {err:.2e} {'PASS' if passed else 'FAIL'}")

    for m, n, k in dense_shapes:
        a, sa, b, sb = T.random_fp8_operands(m, n, k)
        expected = T.reference_dense(a, sa, b, sb)
        args = [t.to(device) for t in (a, sa, b, sb)]
        T.poison_cuda_allocator(device, m * n * 4)
        record("dense bf16", f"{m}x{n}x{k}", ops.dense(args[0], args[2], args[1], args[3]), expected)
        out = ops.dense(args[0], args[2], args[1], args[3], out_dtype=torch.float32)
        record("dense fp32", f"{m}x{n}x{k}", out, expected)

    sizes = [0, 1, 127, 128, 129, 3]
    a, sa, b, sb = T.random_fp8_operands(sum(sizes) + 5, 264, 384, b_lead=(len(sizes),))
    offs = torch.tensor(sizes, dtype=torch.int32).cumsum(0, dtype=torch.int32)
    expected = T.reference_grouped_moe(a, sa, b, sb, offs)
    out = ops.grouped_moe(*(t.to(device) for t in (a, b, offs, sa, sb)))
    record("grouped_moe", f"G={len(sizes)} M={a.shape[0]} 264x384", out, expected)

    masked = torch.tensor([0, 5, 64, 33], dtype=torch.int32)
    a, sa, b, sb = T.random_fp8_operands(64, 264, 384, a_lead=(4,), b_lead=(4,))
    expected = T.reference_grouped_moe_masked(a, sa, b, sb, masked)
    out = ops.grouped_moe_masked(*(t.to(device) for t in (a, b, masked)), 32, sa.to(device), sb.to(device))
    record("grouped_moe_masked", "G=4 max_m=64 264x384", out, expected)

    x = torch.randn(129, 300)
    values, scale = ops.quantize_1x128(x.to(device))
    record("quantize_1x128", "129x300", T.dequantize_1x128_f64(values.cpu(), scale.cpu()), x.double(), 0.05)
    w = torch.randn(300, 260)
    values, scale = ops.quantize_128x128(w.to(device))
    record("quantize_128x128", "300x260", T.dequantize_128x128_f64(values.cpu(), scale.cpu()), w.double(), 0.05)
    return _format_table(["op", "shape", "rel err vs float64", "bar", "result"], rows), ok


def benchmark_dense(shapes, iters: int) -> str:
    device = "cuda"
    timer = KernelTimer(device)
    copy_src = torch.empty(1 << 30, dtype=torch.uint8, device=device)
    copy_dst = torch.empty_like(copy_src)
    copy_us = timer.median_us(lambda: copy_dst.copy_(copy_src), iters=10)
    copy_gbs = 2 * copy_src.numel() / copy_us / 1e3
    _log(f"  device-to-device copy: {copy_gbs:.0f} GB/s (read + write)")
    del copy_src, copy_dst

    header = ["M", "N", "K", "ours µs", "ours TFLOP/s", "ours GB/s", "% copy BW", "torch block TFLOP/s",
              "per-tensor TFLOP/s", "bf16 TFLOP/s", "× torch block", "× per-tensor", "× bf16"]
    rows, ratios_block = [], []
    for i, (m, n, k) in enumerate(shapes):
        _log(f"  [{i + 1}/{len(shapes)}] M={m} N={n} K={k}")
        x = torch.randn(m, k, device=device)
        w = torch.randn(n, k, device=device)
        a, sa = ops.quantize_1x128(x)
        b, sb = ops.quantize_128x128(w)
        flops = 2.0 * m * n * k
        nbytes = m * k + n * k + 4 * (sa.numel() + sb.numel()) + 2 * m * n

        ours_us = timer.median_us(lambda: ops.dense(a, b, sa, sb), iters)
        block = torch_blockwise_scaled_mm(a, sa, b, sb)
        block_us = timer.median_us(block, iters) if block else float("nan")
        one = torch.ones((), device=device)
        per_tensor_us = timer.median_us(
            lambda: torch._scaled_mm(a, b.t(), one, one, out_dtype=torch.bfloat16, use_fast_accum=True), iters
        )
        xb, wb = x.bfloat16(), w.bfloat16()
        bf16_us = timer.median_us(lambda: torch.mm(xb, wb.t()), iters)

        tflops = lambda us: flops / us / 1e6  # noqa: E731
        ratio_block = block_us / ours_us if block else float("nan")
        if block:
            ratios_block.append(ratio_block)
        gbs = nbytes / ours_us / 1e3
        rows.append([str(m), str(n), str(k), f"{ours_us:.1f}", f"{tflops(ours_us):.0f}", f"{gbs:.0f}",
                     f"{100 * gbs / copy_gbs:.0f}%", f"{tflops(block_us):.0f}" if block else "n/a (wrong/failed)",
                     f"{tflops(per_tensor_us):.0f}", f"{tflops(bf16_us):.0f}", f"{ratio_block:.2f}",
                     f"{per_tensor_us / ours_us:.2f}", f"{bf16_us / ours_us:.2f}"])
        _log(f"      ours {tflops(ours_us):.0f} TFLOP/s ({ours_us:.1f} µs), torch block "
             f"{tflops(block_us):.0f}, bf16 {tflops(bf16_us):.0f}")
    table = _format_table(header, rows)
    if ratios_block:
        geomean = math.exp(sum(math.log(r) for r in ratios_block) / len(ratios_block))
        table += f"\n\nGeometric mean of ours ÷ torch block-wise: {geomean:.3f} over {len(ratios_block)} shapes; " \
                 f"lowest {min(ratios_block):.3f}. Copy bandwidth this run: {copy_gbs:.0f} GB/s."
    return table


# MoE shapes of shared/ANCHORS.md: contiguous (G, rows per expert, N, K) with group sizes varied
# +-30% and not padded; masked (G, rows per expert, N, K); DeepSeek-V3 decode with 256 experts.
MOE_CONTIGUOUS_SHAPES = [(4, 8192, 4096, 7168), (4, 8192, 7168, 2048), (8, 4096, 4096, 7168), (8, 4096, 7168, 2048)]
MOE_DECODE_256_SHAPES = [(256, rows, n, k) for rows in (8, 16, 32, 64) for n, k in ((4096, 7168), (7168, 2048))]
MOE_MASKED_SHAPES = [(1, 1024, 4096, 7168), (1, 1024, 7168, 2048), (2, 512, 4096, 7168), (2, 512, 7168, 2048),
                     (4, 256, 4096, 7168), (4, 256, 7168, 2048)]


def _ragged_sizes(groups: int, rows: int, generator: torch.Generator) -> list[int]:
    """Group sizes of mean `rows`, each varied uniformly by up to +-30%, not padded."""
    factors = 0.7 + 0.6 * torch.rand(groups, generator=generator)
    return [max(0, int(round(rows * f))) for f in factors.tolist()]


def _grouped_kernel_ops(device: str):
    """The sm_90a grouped kernels, reached through private ops until they are the default (CUDA builds)."""
    if torch.device(device).type != "cuda":
        return None, None
    return (getattr(torch.ops.fp8gemm, "_sm90_grouped_moe", None),
            getattr(torch.ops.fp8gemm, "_sm90_grouped_moe_masked", None))


def benchmark_moe(iters: int, device: str = "cuda", timer: Optional[KernelTimer] = None) -> str:
    timer = timer or KernelTimer(device)
    gen = torch.Generator().manual_seed(0)
    kernel_op, masked_op = _grouped_kernel_ops(device)
    header = ["layout", "G", "rows/expert", "N", "K", "ours µs", "ours TFLOP/s", "ours GB/s",
              "rowwise _scaled_grouped_mm TFLOP/s", "bf16 _grouped_mm TFLOP/s", "dense per expert TFLOP/s",
              "× rowwise", "× bf16"]
    rows_out = []
    cases = [("contiguous", *s) for s in MOE_CONTIGUOUS_SHAPES + MOE_DECODE_256_SHAPES]
    cases += [("masked", *s) for s in MOE_MASKED_SHAPES]
    for i, (layout, groups, rows, n, k) in enumerate(cases):
        _log(f"  [{i + 1}/{len(cases)}] {layout} G={groups} rows/expert={rows} N={n} K={k}")
        w = torch.randn(groups, n, k, device=device)
        b, sb = ops.quantize_128x128(w)
        if layout == "contiguous":
            sizes = _ragged_sizes(groups, rows, gen)
            m = sum(sizes)
            offs = torch.tensor(sizes, dtype=torch.int32).cumsum(0, dtype=torch.int32).to(device)
            x = torch.randn(m, k, device=device)
            a, sa = ops.quantize_1x128(x)
            ours = (lambda: kernel_op(a, b, offs, sa, sb)) if kernel_op else (lambda: ops.grouped_moe(a, b, offs, sa, sb))
        else:
            max_m = 2 * rows
            masked = torch.randint(int(rows * 0.9), int(rows * 1.1) + 1, (groups,), generator=gen, dtype=torch.int32)
            sizes = masked.tolist()
            m = sum(sizes)
            masked = masked.to(device)
            x = torch.randn(groups, max_m, k, device=device)
            a, sa = ops.quantize_1x128(x)
            ours = (lambda: masked_op(a, b, masked, rows, sa, sb)) if masked_op else (
                lambda: ops.grouped_moe_masked(a, b, masked, rows, sa, sb))
        flops = 2.0 * m * n * k
        nbytes = m * k + groups * n * k + 4 * (m * T.ceil_div(k, 128) + sb.numel()) + 2 * m * n
        ours_us = timer.median_us(ours, iters)

        rowwise_us = bf16_us = dense_us = float("nan")
        if layout == "contiguous":
            x_rows = x
            try:
                w_fp8 = w.to(T.FP8)
                a_fp8 = x_rows.to(T.FP8)
                sa_row = torch.ones(m, device=device)
                sb_row = torch.ones(groups, n, device=device)
                rowwise_us = timer.median_us(lambda: torch._scaled_grouped_mm(
                    a_fp8, w_fp8.transpose(-2, -1), sa_row, sb_row, offs=offs, out_dtype=torch.bfloat16,
                    use_fast_accum=True), iters)
            except (RuntimeError, AttributeError) as exc:
                _log(f"      torch._scaled_grouped_mm unavailable here: {str(exc).splitlines()[0][:100]}")
            try:
                xb, wb = x_rows.bfloat16(), w.bfloat16()
                bf16_us = timer.median_us(lambda: torch._grouped_mm(xb, wb.transpose(-2, -1), offs=offs), iters)
            except (RuntimeError, AttributeError) as exc:
                _log(f"      torch._grouped_mm unavailable here: {str(exc).splitlines()[0][:100]}")
            bounds = [0] + torch.tensor(sizes).cumsum(0).tolist()

            def per_expert():
                for g in range(groups):
                    if bounds[g + 1] > bounds[g]:
                        ops.dense(a[bounds[g]:bounds[g + 1]], b[g], sa[bounds[g]:bounds[g + 1]], sb[g])

            dense_us = timer.median_us(per_expert, max(3, iters // 3))

        tflops = lambda us: flops / us / 1e6  # noqa: E731
        fmt = lambda us: "n/a" if math.isnan(us) else f"{tflops(us):.0f}"  # noqa: E731
        ratio = lambda us: "n/a" if math.isnan(us) else f"{us / ours_us:.2f}"  # noqa: E731
        rows_out.append([layout, str(groups), str(rows), str(n), str(k), f"{ours_us:.1f}", f"{tflops(ours_us):.0f}",
                         f"{nbytes / ours_us / 1e3:.0f}", fmt(rowwise_us), fmt(bf16_us), fmt(dense_us),
                         ratio(rowwise_us), ratio(bf16_us)])
        _log(f"      ours {tflops(ours_us):.0f} TFLOP/s ({ours_us:.1f} µs), rowwise {fmt(rowwise_us)}, bf16 {fmt(bf16_us)}")
    which = "the sm_90a grouped kernels (private ops)" if kernel_op else "the public ops"
    return _format_table(header, rows_out) + f"\n\nOurs = {which}. TFLOP/s count real rows only."


def _environment() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        sha = "?"
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
    return (f"date {datetime.date.today()}, GPU {gpu}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
            f"sm_90a kernels built: {ops.cuda_kernels_built()}, git {sha or '?'}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m torch_fp8gemm", description=__doc__)
    parser.add_argument("--shapes", choices=["dsv3", "quick"], default="dsv3", help="dense benchmark shape set")
    parser.add_argument("--suite", choices=["dense", "moe", "all"], default="dense", help="which benchmarks to run")
    parser.add_argument("--iters", type=int, default=30, help="timed calls per measurement (median)")
    parser.add_argument("--skip-bench", action="store_true", help="only verify")
    parser.add_argument("--results", help="append the tables (markdown) to this file")
    args = parser.parse_args(argv)

    env = _environment()
    _log(f"torch_fp8gemm: {env}")
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    if not cuda:
        _log("No CUDA device: verifying the CPU reference path on small shapes; the GPU kernels are absent here.")
    _log(f"Verifying every op on {device} against float64 references ...")
    verify_table, ok = verify(device, large=cuda)
    _log("\n" + verify_table + "\n")
    report = [f"### {env}", "", f"Command: `python -m torch_fp8gemm {' '.join(argv or sys.argv[1:])}`", "",
              verify_table]
    if cuda and not args.skip_bench and args.suite in ("dense", "all"):
        shapes = DSV3_DENSE_SHAPES if args.shapes == "dsv3" else QUICK_SHAPES
        _log(f"Benchmarking fp8gemm::dense on {len(shapes)} shapes (median of {args.iters}, L2 flushed) ...")
        bench_table = benchmark_dense(shapes, args.iters)
        _log("\n" + bench_table + "\n")
        report += ["", bench_table]
    if cuda and not args.skip_bench and args.suite in ("moe", "all"):
        _log(f"Benchmarking the MoE GEMMs (median of {args.iters}, L2 flushed) ...")
        moe_table = benchmark_moe(args.iters)
        _log("\n" + moe_table + "\n")
        report += ["", moe_table]
    if args.results:
        with open(args.results, "a") as f:
            f.write("\n" + "\n".join(report) + "\n")
        _log(f"Appended the tables to {args.results}")
    _log("All verifications passed." if ok else "VERIFICATION FAILED.")
    return 0 if ok else 1
