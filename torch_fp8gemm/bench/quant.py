"""Benchmark of the quantization ops against copy bandwidth and the plain-torch recipe.

``benchmark_quantize`` times ``fp8gemm::quantize_1x128`` (activations), ``quantize_1x128_transposed``
(weight-gradient operands) and ``quantize_128x128`` (weights) on bf16 inputs with the timer it is
given (``gemm.KernelTimer``: CUPTI kernel time, L2 flushed before every call). These kernels
are bound by memory bandwidth, so the yardstick is the device-to-device copy rate measured in the
same run (``gemm.copy_bandwidth_gbs``): bytes the op must move (input read, fp8 values and
float32 scales written, scale padding included) per second, as a percentage of it.

The baseline is the recipe in plain torch (``testing.quantize_1x128_torch`` /
``quantize_128x128_torch``: pad, abs, amax, divide, clamp, cast: the formulas of the ATen reference
that the ops fall back to on other GPUs); the transposed case pays the ``x.t().contiguous()`` copy
that it needs. Each row also states whether the op's output equals the CPU reference bit for bit on
a sample (256 rows, or 128 columns of the transposed form).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from .. import ops
from .. import testing as T
from .gemm import format_table

ACTIVATION_SHAPES = [(4096, 7168), (16384, 7168), (16384, 2048)]  # (M tokens, K)
WEIGHT_SHAPES = [(7168, 18432), (4096, 7168)]  # (N, K)
# Tiny shapes for smoke runs on the CPU (small=True): every code path, no meaningful timing.
SMALL_ACTIVATION_SHAPES = [(130, 300)]
SMALL_WEIGHT_SHAPES = [(200, 260)]

_KINDS = ("1x128", "1x128 transposed", "128x128")


def _round_up(x: int, multiple: int) -> int:
    return T.ceil_div(x, multiple) * multiple


def _bytes_moved(kind: str, rows: int, cols: int, elem: int) -> int:
    """Input read + fp8 values written + float32 scales written (the M-major padding included)."""
    values = rows * cols * (elem + 1)
    if kind == "1x128":
        return values + 4 * T.ceil_div(cols, 128) * _round_up(rows, 4)
    if kind == "1x128 transposed":
        return values + 4 * T.ceil_div(rows, 128) * _round_up(cols, 4)
    return values + 4 * T.ceil_div(rows, 128) * T.ceil_div(cols, 128)


def _callables(kind: str, x: torch.Tensor) -> tuple[Callable[[], object], Callable[[], object]]:
    """(ours, torch recipe) for one case."""
    if kind == "1x128":
        return (lambda: ops.quantize_1x128(x)), (lambda: T.quantize_1x128_torch(x))
    if kind == "1x128 transposed":
        return (lambda: ops.quantize_1x128_transposed(x)), (lambda: T.quantize_1x128_torch(x.t().contiguous()))
    return (lambda: ops.quantize_128x128(x)), (lambda: T.quantize_128x128_torch(x))


def _matches_reference_sample(kind: str, x: torch.Tensor) -> bool:
    """Whether the op's output equals the CPU reference bit for bit on a sample of independent
    groups: the first 256 rows (1x128, 128x128: two whole block rows) or 128 columns (transposed)."""
    values, scale = _callables(kind, x)[0]()
    if kind == "1x128":
        rows = min(x.shape[0], 256)
        ref_values, ref_scale = ops.quantize_1x128(x[:rows].cpu())
        values, scale = values[:rows], scale[:rows]
    elif kind == "1x128 transposed":
        cols = min(x.shape[1], 128)
        ref_values, ref_scale = ops.quantize_1x128_transposed(x[:, :cols].cpu())
        values, scale = values[:cols], scale[:cols]
    else:
        rows = min(x.shape[0], 256)
        ref_values, ref_scale = ops.quantize_128x128(x[:rows].cpu())
        values, scale = values[:rows], scale[: T.ceil_div(rows, 128)]
    return torch.equal(values.cpu().view(torch.uint8), ref_values.view(torch.uint8)) and torch.equal(
        scale.cpu(), ref_scale)


def benchmark_quantize(iters: int, timer, copy_gbs: float, *, device: str = "cuda", small: bool = False) -> str:
    """Markdown table: per case µs, GB/s, % of ``copy_gbs``, the torch recipe's µs and the speedup.

    ``timer``: an object with ``median_us(fn, iters)`` (gemm.KernelTimer on CUDA).
    ``copy_gbs``: device-to-device copy bandwidth (read + write) in GB/s, e.g. from
    gemm.copy_bandwidth_gbs. ``device``/``small``: tiny shapes on another device (smoke runs).
    """
    activations = SMALL_ACTIVATION_SHAPES if small else ACTIVATION_SHAPES
    weights = SMALL_WEIGHT_SHAPES if small else WEIGHT_SHAPES
    cases = [(kind, shape) for kind in _KINDS[:2] for shape in activations]
    cases += [(_KINDS[2], shape) for shape in weights]
    generator = torch.Generator(device=device).manual_seed(0)
    header = ["op", "shape", "dtype", "ours µs", "ours GB/s", "% of copy BW", "torch recipe µs", "× torch recipe",
              "bit-exact (sample)"]
    rows = []
    for kind, (r, c) in cases:
        x = torch.randn(r, c, device=device, dtype=torch.bfloat16, generator=generator)
        ours, recipe = _callables(kind, x)
        exact = _matches_reference_sample(kind, x)
        ours_us = timer.median_us(ours, iters)
        recipe_us = timer.median_us(recipe, max(3, iters // 3))
        gbs = _bytes_moved(kind, r, c, x.element_size()) / ours_us / 1e3
        percent = f"{100 * gbs / copy_gbs:.0f}%" if copy_gbs > 0 and math.isfinite(copy_gbs) else "n/a"
        rows.append([kind, f"{r}x{c}", "bf16", f"{ours_us:.1f}", f"{gbs:.0f}", percent, f"{recipe_us:.1f}",
                     f"{recipe_us / ours_us:.2f}", "yes" if exact else "NO"])
        print(f"  quantize {kind:<17} {r}x{c}: {ours_us:.1f} µs, {gbs:.0f} GB/s ({percent} of copy), "
              f"torch recipe {recipe_us:.1f} µs, bit-exact sample: {'yes' if exact else 'NO'}", flush=True)
        del x, ours, recipe
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
    notes = (
        f"GB/s = bytes the op must move (bf16 input read, fp8 values and float32 scales written, scale "
        f"padding included) ÷ time; % of copy BW against {copy_gbs:.0f} GB/s (device-to-device copy, read + "
        "write, same run). Shapes are [M tokens, K] for 1x128 (the transposed op returns fp8 [K, M] with "
        "scales per 128 tokens) and [N, K] for 128x128. Torch recipe: testing.quantize_1x128_torch / "
        "quantize_128x128_torch (the reference's formulas as separate torch kernels; the transposed case "
        "includes its x.t().contiguous() copy); × = its µs ÷ ours. Bit-exact: the op's bytes and scales "
        "equal the CPU reference on 256 rows (128 columns for the transposed op)."
    )
    return format_table(header, rows) + "\n\n" + notes
