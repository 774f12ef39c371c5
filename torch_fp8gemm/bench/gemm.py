"""Verification and benchmark tables: the main job run by ``python -m torch_fp8gemm``.

Timing is kernel device time from CUPTI (torch.profiler), with the L2 cache flushed before every
call (a 512 MiB buffer is rewritten), median over ``iters`` calls after warm-up. The methods compared
in one table row are timed round-robin (``KernelTimer.median_us_interleaved``), so the GPU's clock
drift over a run does not favour whichever ran first. Every kernel the
timed callable launches counts, so our op is charged for any layout copies it makes. Off CUDA
(smoke runs) ``WallTimer`` stands in with the host clock. Layer-level benchmarks (FP8Linear,
FP8MoEExperts, training steps) are in ``torch_fp8gemm.bench.layers``.
"""
from __future__ import annotations

import argparse
import datetime
import math
import re
import statistics
import subprocess
import sys
import time
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .. import ops
from .. import testing as T
from ..nn import dequantize_128x128

# The 19 dense DeepSeek-V3 GEMM shapes (decode M = 64, 128; prefill M = 4096; 8192^3): (M, N, K).
DSV3_DENSE_SHAPES = [
    (m, n, k)
    for m in (64, 128, 4096)
    for n, k in ((2112, 7168), (24576, 1536), (32768, 512), (7168, 16384), (4096, 7168), (7168, 2048))
] + [(8192, 8192, 8192)]

QUICK_SHAPES = [(64, 7168, 2048), (128, 4096, 7168), (4096, 7168, 2048), (4096, 4096, 7168)]

_FLUSH_MARKER = "bitwise_not"  # the flush kernel's name; no timed callable launches one


def _log(msg: str) -> None:
    print(msg, flush=True)


def write_report(path: str, report: list) -> None:
    """Writes the report (the tables with their date/GPU/commit header) to ``path``, replacing it:
    markdown, or JSON ``{"report": [lines]}`` when the name ends in .json."""
    import json

    with open(path, "w") as f:
        if path.endswith(".json"):
            json.dump({"report": report}, f, indent=1)
        else:
            f.write("\n".join(report) + "\n")
    _log(f"Wrote the tables to {path}")


# --------------------------------------------------------------------------------------------
# Timing


_GEMM_KINDS = {"0": "FP8 GEMM dense", "1": "FP8 GEMM grouped", "2": "FP8 GEMM grouped", "3": "FP8 GEMM dense 1x128"}


def kernel_category(name: str) -> str:
    """Coarse class of a CUDA kernel by its (demangled) name, for time breakdowns."""
    if "sm90_fp8_gemm_kernel" in name:
        match = re.search(r"GemmKind\)(\d)", name)
        return _GEMM_KINDS.get(match.group(1) if match else "", "FP8 GEMM")
    if "quantize_" in name:
        return "FP8 quantization"
    if "split_k_reduce" in name:
        return "split-K reduce"
    if "zero_unowned_rows" in name:
        return "grouped zero fill"
    if "triton" in name:
        return "Inductor (Triton)"
    if "gemm" in name.lower() or "cutlass" in name.lower() or "sm90_xmma" in name:
        return "other GEMM (cuBLAS)"
    return "other torch kernels"


def short_kernel_name(name: str, width: int = 90) -> str:
    """A demangled kernel name without its template arguments and parameter list, plus the first
    functor named in them, e.g. 'at::native::elementwise_kernel[direct_copy_kernel_cuda]'."""
    depth, kept = 0, []
    for ch in name:
        if ch in "<(":
            depth += 1
        elif ch in ">)":
            depth = max(depth - 1, 0)
        elif depth == 0:
            kept.append(ch)
    # "(anonymous namespace)::" loses its parentheses above and leaves "::::" behind.
    short = "".join(kept).replace("void ", "").replace("::::", "::").strip()
    # torch's elementwise/reduce launchers carry the functor in their template arguments.
    inner = [f for f in re.findall(r"(\w+_(?:kernel|functor|op)\w*)", name)
             if f not in short and not f.startswith(("gpu_kernel", "launch_"))]
    if inner:
        short += f"[{inner[0]}]"
    return short[:width] or name[:width]


class KernelTimer:
    """Median kernel time (CUPTI) of one call. After each measurement, ``last_breakdown`` maps
    kernel_category() to the mean µs per call spent in that class of kernels, and ``last_other``
    the five costliest kernels of the "other torch kernels" class (shortened name -> mean µs)."""

    def __init__(self, device, flush_bytes: int = 512 << 20):
        self.flush = torch.zeros(flush_bytes // 4, dtype=torch.int32, device=device)
        self.last_breakdown: Optional[dict] = None
        self.last_other: Optional[dict] = None

    def median_us(self, fn: Callable[[], object], iters: int = 30, warmup: int = 3) -> float:
        return self.median_us_interleaved([fn], iters, warmup)[0]

    def median_us_interleaved(self, fns: list, iters: int = 30, warmup: int = 3) -> list:
        """Median kernel time of each callable, timed round-robin (call 1 of each, call 2 of each,
        ...) in one profiler session. A GPU's clock drifts by several percent with temperature
        and power over a run; interleaving exposes every callable to the same drift, so ratios
        between them do not depend on which ran first. ``last_breakdown``/``last_other`` describe
        the first callable."""
        for _ in range(warmup):
            for fn in fns:
                fn()
        torch.cuda.synchronize()
        activities = [torch.profiler.ProfilerActivity.CUDA]
        with torch.profiler.profile(activities=activities) as prof:
            for _ in range(iters):
                for fn in fns:
                    self.flush.bitwise_not_()
                    fn()
            torch.cuda.synchronize()
        kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        kernels.sort(key=lambda e: e.time_range.start)
        per_call: list[list[float]] = [[] for _ in fns]  # per callable, µs of each of its calls
        by_category: dict = {}
        other: dict = {}
        calls = -1  # index of the current call over all callables (a flush starts the next one)
        for event in kernels:
            if _FLUSH_MARKER in event.name:
                calls += 1
                per_call[calls % len(fns)].append(0.0)
            elif calls >= 0:
                elapsed = event.time_range.elapsed_us()
                per_call[calls % len(fns)][-1] += elapsed
                if calls % len(fns) == 0:
                    category = kernel_category(event.name)
                    by_category[category] = by_category.get(category, 0.0) + elapsed
                    if category == "other torch kernels":
                        short = short_kernel_name(event.name)
                        other[short] = other.get(short, 0.0) + elapsed
        if any(not times or max(times) == 0.0 for times in per_call):
            raise RuntimeError("the profiler recorded no kernels for a timed callable")
        first = len(per_call[0])
        self.last_breakdown = {c: us / first for c, us in sorted(by_category.items(), key=lambda kv: -kv[1])}
        self.last_other = {c: us / first for c, us in sorted(other.items(), key=lambda kv: -kv[1])[:5]}
        return [statistics.median(times) for times in per_call]


class WallTimer:
    """KernelTimer's interface on the host clock: median wall time of ``fn`` (synchronizing CUDA
    when timing a GPU). For devices without CUPTI kernel records, i.e. CPU smoke runs; it counts
    launch overhead and Python time, so its figures are not comparable with KernelTimer's."""

    def __init__(self, device="cpu"):
        self.cuda = torch.device(device).type == "cuda"
        self.last_breakdown: Optional[dict] = None  # no kernel records on the host clock

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def median_us(self, fn: Callable[[], object], iters: int = 30, warmup: int = 3) -> float:
        for _ in range(warmup):
            fn()
        self._sync()
        times = []
        for _ in range(iters):
            start = time.perf_counter()
            fn()
            self._sync()
            times.append((time.perf_counter() - start) * 1e6)
        return statistics.median(times)

    def median_us_interleaved(self, fns: list, iters: int = 30, warmup: int = 3) -> list:
        return [self.median_us(fn, iters, warmup) for fn in fns]


def timer_for(device):
    """KernelTimer (CUPTI device time) on CUDA; WallTimer elsewhere (KernelTimer needs CUDA)."""
    return KernelTimer(device) if torch.device(device).type == "cuda" else WallTimer(device)


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


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table (every benchmark table of the package and of bench/ goes through here)."""
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
    written = T.masked_rows(masked, 64)  # rows at or past masked[g] are unspecified
    record("grouped_moe_masked", "G=4 max_m=64 264x384", out.cpu()[written], expected[written])

    x = torch.randn(129, 300)
    values, scale = ops.quantize_1x128(x.to(device))
    record("quantize_1x128", "129x300", T.dequantize_1x128_f64(values.cpu(), scale.cpu()), x.double(), 0.05)
    w = torch.randn(300, 260)
    values, scale = ops.quantize_128x128(w.to(device))
    record("quantize_128x128", "300x260", T.dequantize_128x128_f64(values.cpu(), scale.cpu()), w.double(), 0.05)
    return format_table(["op", "shape", "rel err vs float64", "bar", "result"], rows), ok


def copy_bandwidth_gbs(timer: "KernelTimer", device: str = "cuda") -> float:
    """Device-to-device copy rate of a 1 GiB buffer (bytes read + written per second), the yardstick
    of the bandwidth-bound kernels, measured in the same run as they are."""
    copy_src = torch.empty(1 << 30, dtype=torch.uint8, device=device)
    copy_dst = torch.empty_like(copy_src)
    copy_us = timer.median_us(lambda: copy_dst.copy_(copy_src), iters=10)
    copy_gbs = 2 * copy_src.numel() / copy_us / 1e3
    _log(f"  device-to-device copy: {copy_gbs:.0f} GB/s (read + write)")
    return copy_gbs


def benchmark_dense(shapes, iters: int) -> str:
    device = "cuda"
    timer = KernelTimer(device)
    copy_gbs = copy_bandwidth_gbs(timer, device)

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

        block = torch_blockwise_scaled_mm(a, sa, b, sb)
        one = torch.ones((), device=device)
        xb, wb = x.bfloat16(), w.bfloat16()
        fns = [lambda: ops.dense(a, b, sa, sb),
               lambda: torch._scaled_mm(a, b.t(), one, one, out_dtype=torch.bfloat16, use_fast_accum=True),
               lambda: torch.mm(xb, wb.t())] + ([block] if block else [])
        times = timer.median_us_interleaved(fns, iters)  # round-robin: every method sees the same clocks
        ours_us, per_tensor_us, bf16_us = times[:3]
        block_us = times[3] if block else float("nan")

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
    table = format_table(header, rows)
    if ratios_block:
        geomean = math.exp(sum(math.log(r) for r in ratios_block) / len(ratios_block))
        table += f"\n\nGeometric mean of ours ÷ torch block-wise: {geomean:.3f} over {len(ratios_block)} shapes; " \
                 f"lowest {min(ratios_block):.3f}. Copy bandwidth this run: {copy_gbs:.0f} GB/s."
    return table


# DeepSeek-V3-sized MoE shapes: contiguous (G, rows per expert, N, K) with group sizes varied
# +-30% and not padded; masked (G, rows per expert, N, K); DeepSeek-V3 decode with 256 experts.
MOE_CONTIGUOUS_SHAPES = [(4, 8192, 4096, 7168), (4, 8192, 7168, 2048), (8, 4096, 4096, 7168), (8, 4096, 7168, 2048)]
MOE_DECODE_256_SHAPES = [(256, rows, n, k) for rows in (8, 16, 32, 64) for n, k in ((4096, 7168), (7168, 2048))]
MOE_MASKED_SHAPES = [(1, 1024, 4096, 7168), (1, 1024, 7168, 2048), (2, 512, 4096, 7168), (2, 512, 7168, 2048),
                     (4, 256, 4096, 7168), (4, 256, 7168, 2048)]
# (layout, G, rows per expert, N, K) for smoke runs on the CPU (small=True): every code path, tiny sizes.
MOE_SMALL_CASES = [("contiguous", 3, 40, 256, 384), ("masked", 2, 24, 256, 384)]

# Largest float32 temporary (elements) while generating or dequantizing operands: 256 MiB. At
# G=256, N x K = 4096 x 7168 a float32 copy of all expert weights would take 30 GB.
_CHUNK_ELEMENTS = 1 << 26

# What an unavailable baseline raises (missing op, unsupported device, dtype or layout, a compile
# failure); it then reads n/a.
BASELINE_ERRORS = (RuntimeError, AttributeError, NotImplementedError, TypeError, ValueError, AssertionError)


def ragged_sizes(groups: int, rows: int, generator: torch.Generator) -> list[int]:
    """Group sizes of mean `rows`, each varied uniformly by up to +-30%, not padded."""
    factors = 0.7 + 0.6 * torch.rand(groups, generator=generator)
    return [max(0, int(round(rows * f))) for f in factors.tolist()]


def _row_chunks(rows: int, k: int):
    """(start, end) row ranges of at most _CHUNK_ELEMENTS elements of width k."""
    step = max(1, _CHUNK_ELEMENTS // max(k, 1))
    return [(start, min(start + step, rows)) for start in range(0, rows, step)]


def random_fp8(shape: tuple[int, ...], device) -> torch.Tensor:
    """fp8 e4m3 [..., R, K] holding randn * 100 saturated at +-448 (as testing.random_fp8_operands).

    Filled one matrix (expert) at a time and in row chunks, so the float32 draws never exceed
    _CHUNK_ELEMENTS: no float32 tensor of the full shape exists."""
    out = torch.empty(shape, dtype=T.FP8, device=device)
    if out.numel() == 0:
        return out
    rows, k = shape[-2], shape[-1]
    for matrix in out.view(-1, rows, k):
        for start, end in _row_chunks(rows, k):
            draw = torch.randn((end - start, k), device=device).mul_(100).clamp_(-T.FP8_MAX, T.FP8_MAX)
            matrix[start:end].copy_(draw)
    return out


def random_scales(shape: tuple[int, ...], device) -> torch.Tensor:
    """Positive float32 scales, log-uniform in [0.5, 2] (as testing.random_fp8_operands)."""
    return torch.empty(shape, device=device).uniform_(math.log(0.5), math.log(2.0)).exp_()


def m_major(scale: torch.Tensor) -> torch.Tensor:
    """[M, kb] activation scales in quantize_1x128's M-major layout (testing.m_major_scales): the
    layout the GPU kernels load in place; any other would be copied inside the timed op."""
    return T.m_major_scales(scale)


def _dequantize_rows_bf16(values: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """fp8 [..., R, K] with 1x128 scales [..., R, ceil(K/128)] -> bf16 [..., R, K], in row chunks."""
    k = values.shape[-1]
    out = torch.empty(values.shape, dtype=torch.bfloat16, device=values.device)
    flat_values, flat_out = values.reshape(-1, k), out.view(-1, k)
    flat_scale = scale.reshape(-1, scale.shape[-1])
    for start, end in _row_chunks(flat_values.shape[0], k):
        expanded = flat_scale[start:end].repeat_interleave(T.SCALE_BLOCK, dim=-1)[:, :k]
        flat_out[start:end] = flat_values[start:end].float() * expanded
    return out


def _dequantize_blocks_bf16(values: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """fp8 [G, N, K] with 128x128 block scales [G, ceil(N/128), ceil(K/128)] -> bf16, one expert at a time."""
    out = torch.empty(values.shape, dtype=torch.bfloat16, device=values.device)
    for g in range(values.shape[0]):
        out[g] = dequantize_128x128(values[g], scale[g], torch.bfloat16)
    return out


def _rowwise_scales(a_scale: torch.Tensor, b_scale: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row scales for torch._scaled_grouped_mm derived from our block scales: each row of A takes the
    largest of its 1x128 scales ([M] or [G, max_m]), each weight row (output column) the largest of
    its 128x128 blocks ([G, N]). Same fp8 bytes, coarser scaling: a speed baseline, not an equal answer."""
    a_row = a_scale.amax(dim=-1).contiguous()
    b_row = b_scale.amax(dim=-1).repeat_interleave(T.SCALE_BLOCK, dim=-1)[..., :n].contiguous()
    return a_row, b_row


def _failure_reason(exc: BaseException, width: int) -> str:
    """The first line of an exception's message (or its type), for an "n/a" log line."""
    text = str(exc).strip()
    return text.splitlines()[0][:width] if text else type(exc).__name__


def _time_baseline(name: str, fn: Callable[[], object], timer, iters: int) -> float:
    """Median µs of a torch baseline, or NaN (logged) where this torch/device lacks it."""
    try:
        return timer.median_us(fn, iters)
    except BASELINE_ERRORS as exc:
        _log(f"      {name} unavailable here: {_failure_reason(exc, 100)}")
        return float("nan")


def _runs_here(name: str, fn: Callable[[], object]) -> bool:
    """Whether a torch baseline runs on this torch/device (one call; the reason is logged if not)."""
    try:
        fn()
        return True
    except BASELINE_ERRORS as exc:
        _log(f"      {name} unavailable here: {_failure_reason(exc, 100)}")
        return False


def _moe_case(layout: str, groups: int, rows: int, n: int, k: int, *, iters: int, device, timer,
              generator: torch.Generator) -> list[str]:
    """Times one MoE GEMM; returns its table row. Every operand lives in this frame only, so the
    caller frees the case's memory by returning from it (plus torch.cuda.empty_cache())."""
    kb, nb = T.ceil_div(k, T.SCALE_BLOCK), T.ceil_div(n, T.SCALE_BLOCK)
    # FP8 operands drawn directly (no high-precision tensor to quantize), weights one expert at a time.
    b = random_fp8((groups, n, k), device)
    sb = random_scales((groups, nb, kb), device)
    if layout == "contiguous":
        sizes = ragged_sizes(groups, rows, generator)
        m_rows = sum(sizes)
        a = random_fp8((m_rows, k), device)
        sa = m_major(random_scales((m_rows, kb), device))
        offs = torch.tensor(sizes, dtype=torch.int32).cumsum(0, dtype=torch.int32).to(device)
        ours = lambda: ops.grouped_moe(a, b, offs, sa, sb)  # noqa: E731
        bounds = [0] + torch.tensor(sizes).cumsum(0).tolist()
        expert_rows = [(a[bounds[g]:bounds[g + 1]], sa[bounds[g]:bounds[g + 1]]) for g in range(groups)]
        grouped_kwargs = {"offs": offs}
        out_rows = m_rows
        rows_label = str(rows)
    else:
        max_m = 2 * rows
        masked = torch.randint(int(rows * 0.9), int(rows * 1.1) + 1, (groups,), generator=generator,
                               dtype=torch.int32)
        sizes = masked.tolist()
        masked = masked.to(device)
        a = random_fp8((groups, max_m, k), device)
        sa = m_major(random_scales((groups * max_m, kb), device)).unflatten(0, (groups, max_m))
        ours = lambda: ops.grouped_moe_masked(a, b, masked, rows, sa, sb)  # noqa: E731
        expert_rows = [(a[g, :sizes[g]], sa[g, :sizes[g]]) for g in range(groups)]
        grouped_kwargs = {}  # 3-D x 3-D: a batched GEMM over all max_m rows of every expert
        out_rows = sum(sizes)  # the op writes only the rows below masked_m[g]
        rows_label = f"{rows} (max_m {max_m})"
    m = sum(sizes)
    active = sum(1 for size in sizes if size > 0)
    flops = 2.0 * m * n * k
    # Bytes the op must move: the experts' fp8 rows of A and their scales, the fp8 weights and block
    # scales of experts that own rows, and every output row it writes (bf16).
    nbytes = m * k + 4 * m * kb + active * (n * k + 4 * nb * kb) + 2 * out_rows * n

    # Floor: one fp8gemm::dense per expert (scales re-laid M-major beforehand, so no copies are timed).
    per_expert_args = [(a_g, m_major(sa_g), b[g], sb[g]) for g, (a_g, sa_g) in enumerate(expert_rows)
                       if a_g.shape[0] > 0]

    def per_expert():
        for a_g, sa_g, b_g, sb_g in per_expert_args:
            ops.dense(a_g, b_g, sa_g, sb_g)

    dense_us = timer.median_us(per_expert, max(3, iters // 3))
    del per_expert_args, expert_rows

    # torch's rowwise FP8 grouped GEMM on the same fp8 bytes (fast accumulation, as torchao uses it).
    # Ours and it are timed round-robin (the bar compares them: the same clock drift for both).
    a_row, b_row = _rowwise_scales(sa, sb, n)
    rowwise = lambda: torch._scaled_grouped_mm(  # noqa: E731
        a, b.transpose(-2, -1), a_row, b_row, out_dtype=torch.bfloat16, use_fast_accum=True, **grouped_kwargs)
    if _runs_here("torch._scaled_grouped_mm", rowwise):
        ours_us, rowwise_us = timer.median_us_interleaved([ours, rowwise], iters)
    else:
        ours_us, rowwise_us = timer.median_us(ours, iters), float("nan")
    del a_row, b_row

    # bf16 grouped GEMM on the dequantized operands (built chunk by chunk, freed right after).
    a_bf16, b_bf16 = _dequantize_rows_bf16(a, sa), _dequantize_blocks_bf16(b, sb)
    bf16_us = _time_baseline("torch._grouped_mm", lambda: torch._grouped_mm(
        a_bf16, b_bf16.transpose(-2, -1), **grouped_kwargs), timer, iters)
    del a_bf16, b_bf16

    tflops = lambda us: flops / us / 1e6  # noqa: E731
    fmt = lambda us: "n/a" if math.isnan(us) else f"{tflops(us):.0f}"  # noqa: E731
    ratio = lambda us: "n/a" if math.isnan(us) else f"{us / ours_us:.2f}"  # noqa: E731
    _log(f"      ours {tflops(ours_us):.0f} TFLOP/s ({ours_us:.1f} µs), rowwise {fmt(rowwise_us)}, "
         f"bf16 {fmt(bf16_us)}, dense per expert {fmt(dense_us)}")
    return [layout, str(groups), rows_label, str(n), str(k), f"{ours_us:.1f}", f"{tflops(ours_us):.0f}",
            f"{nbytes / ours_us / 1e3:.0f}", fmt(rowwise_us), fmt(bf16_us), fmt(dense_us),
            ratio(rowwise_us), ratio(bf16_us), ratio(dense_us)]


def benchmark_moe(iters: int, device: str = "cuda", timer=None, small: bool = False) -> str:
    """The public ``fp8gemm::grouped_moe`` / ``grouped_moe_masked`` ops against torch's grouped GEMMs
    and a loop of ``fp8gemm::dense`` per expert. ``small``: tiny cases (CPU smoke runs)."""
    timer = timer or timer_for(device)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    header = ["layout", "G", "rows/expert", "N", "K", "ours µs", "ours TFLOP/s", "ours GB/s",
              "rowwise _scaled_grouped_mm TFLOP/s", "bf16 _grouped_mm TFLOP/s", "dense per expert TFLOP/s",
              "× rowwise", "× bf16", "× dense per expert"]
    if small:
        cases = MOE_SMALL_CASES
    else:
        cases = [("contiguous", *s) for s in MOE_CONTIGUOUS_SHAPES + MOE_DECODE_256_SHAPES]
        cases += [("masked", *s) for s in MOE_MASKED_SHAPES]
    rows_out = []
    for i, (layout, groups, rows, n, k) in enumerate(cases):
        _log(f"  [{i + 1}/{len(cases)}] {layout} G={groups} rows/expert={rows} N={n} K={k}")
        rows_out.append(_moe_case(layout, groups, rows, n, k, iters=iters, device=device, timer=timer,
                                  generator=gen))
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
    notes = (
        "Ours = the public ops `fp8gemm::grouped_moe` / `grouped_moe_masked` (the sm_90a grouped kernels), "
        "operands fp8 with 1x128 / 128x128 scales. TFLOP/s count real rows only (2·m·N·K, m = rows the "
        "experts own) for every column; × = baseline µs ÷ ours µs. GB/s = bytes the op must move (fp8 "
        "expert rows and weights of experts with rows, their scales, every bf16 output row written) ÷ time. "
        "Masked rows: mean rows per expert, ±10%, in buffers of max_m rows; the torch baselines take the "
        "3-D batched form (no offsets, no mask) and compute all max_m rows. Rowwise: the same fp8 bytes "
        "with per-row scales. bf16: the dequantized operands. Dense per expert: one `fp8gemm::dense` per "
        "expert, kernel times summed (launch gaps not counted)."
    )
    return format_table(header, rows_out) + "\n\n" + notes


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
    parser.add_argument("--suite", choices=["dense", "moe", "quant", "all"], default="dense",
                        help="which benchmarks to run (quant: the quantization kernels vs copy bandwidth)")
    parser.add_argument("--skip-verify", action="store_true", help="skip the verification table")
    parser.add_argument("--iters", type=int, default=30, help="timed calls per measurement (median)")
    parser.add_argument("--skip-bench", action="store_true", help="only verify")
    parser.add_argument("--out", help="write the tables to this file (markdown, or JSON for a .json name)")
    args = parser.parse_args(argv)

    env = _environment()
    _log(f"torch_fp8gemm: {env}")
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    if not cuda:
        _log("No CUDA device: verifying the CPU reference path on small shapes; the GPU kernels are absent here.")
    report = [f"### {env}", "", f"Command: `python -m torch_fp8gemm {' '.join(argv or sys.argv[1:])}`"]
    ok = True
    if not args.skip_verify:
        _log(f"Verifying every op on {device} against float64 references ...")
        verify_table, ok = verify(device, large=cuda)
        _log("\n" + verify_table + "\n")
        report += ["", verify_table]
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
    if cuda and not args.skip_bench and args.suite in ("quant", "all"):
        from .quant import benchmark_quantize

        _log(f"Benchmarking the quantization kernels (median of {args.iters}, L2 flushed) ...")
        timer = KernelTimer("cuda")
        quant_table = benchmark_quantize(args.iters, timer, copy_bandwidth_gbs(timer))
        _log("\n" + quant_table + "\n")
        report += ["", quant_table]
    if not cuda and not args.skip_bench:
        _log(f"No benchmark table for --suite {args.suite}: it times the GPU kernels, and there is no CUDA device.")
    if args.out:
        write_report(args.out, report)
    _log("All verifications passed." if ok else "VERIFICATION FAILED.")
    return 0 if ok else 1
