"""Shared test and benchmark helpers: independent float64 references, input makers and metrics.

The references here never call the extension: they re-derive the recipe in float64 from the fp8
values and scales, so they can judge both the CPU reference and the GPU kernels.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

SCALE_BLOCK = 128
FP8_MAX = 448.0
AMAX_FLOOR = 1e-12
FP8 = torch.float8_e4m3fn


def ceil_div(x: int, y: int) -> int:
    return (x + y - 1) // y


# --------------------------------------------------------------------------------------------
# Recipe in plain torch (the same formulas as csrc/ops/reference.cpp, written independently).


def quantize_1x128_torch(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [..., K] -> (fp8 [..., K], float32 scales [..., ceil(K/128)]) (contiguous scales)."""
    k = x.shape[-1]
    kb = ceil_div(k, SCALE_BLOCK)
    xf = torch.nn.functional.pad(x.float(), (0, kb * SCALE_BLOCK - k))
    groups = xf.unflatten(-1, (kb, SCALE_BLOCK))
    scale = groups.abs().amax(-1).clamp(min=AMAX_FLOOR) / FP8_MAX
    values = (groups / scale.unsqueeze(-1)).clamp(-FP8_MAX, FP8_MAX).flatten(-2)[..., :k]
    return values.to(FP8), scale


def quantize_128x128_torch(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w [..., N, K] -> (fp8 [..., N, K], float32 scales [..., ceil(N/128), ceil(K/128)])."""
    n, k = w.shape[-2:]
    nb, kb = ceil_div(n, SCALE_BLOCK), ceil_div(k, SCALE_BLOCK)
    wf = torch.nn.functional.pad(w.float(), (0, kb * SCALE_BLOCK - k, 0, nb * SCALE_BLOCK - n))
    blocks = wf.unflatten(-1, (kb, SCALE_BLOCK)).unflatten(-3, (nb, SCALE_BLOCK))  # [..., nb, 128, kb, 128]
    scale = blocks.abs().amax(dim=(-3, -1)).clamp(min=AMAX_FLOOR) / FP8_MAX  # [..., nb, kb]
    values = (blocks / scale.unsqueeze(-2).unsqueeze(-1)).clamp(-FP8_MAX, FP8_MAX)
    values = values.flatten(-2).flatten(-3, -2)[..., :n, :k]
    return values.to(FP8), scale


def dequantize_1x128_f64(x_fp8: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    k = x_fp8.shape[-1]
    return x_fp8.double() * scale.double().repeat_interleave(SCALE_BLOCK, -1)[..., :k]


def dequantize_128x128_f64(w_fp8: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    n, k = w_fp8.shape[-2:]
    s = scale.double().repeat_interleave(SCALE_BLOCK, -2)[..., :n, :]
    return w_fp8.double() * s.repeat_interleave(SCALE_BLOCK, -1)[..., :k]


def reference_dense(a, a_scale, b, b_scale, bias=None) -> torch.Tensor:
    """float64 deq(a) @ deq(b).T (+ bias)."""
    out = dequantize_1x128_f64(a, a_scale) @ dequantize_128x128_f64(b, b_scale).T
    return out if bias is None else out + bias.double()


def reference_dense_1x128(a, a_scale, b, b_scale) -> torch.Tensor:
    """float64 deq(a) @ deq(b).T with both operands scaled per 1x128 group along K."""
    return dequantize_1x128_f64(a, a_scale) @ dequantize_1x128_f64(b, b_scale).T


def emulated_dgrad(dy: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """float64 dx = dy @ W of the training recipe: dy per 1x128 along N, W per 128x128 block."""
    return reference_dense(*quantize_1x128_torch(dy.float()), *quantize_128x128_torch(w.float().T.contiguous()))


def emulated_wgrad(dy: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """float64 dW = dy^T @ x of the training recipe: dy^T and x^T both per 1x128 along M (tokens)."""
    return reference_dense_1x128(*quantize_1x128_torch(dy.float().T.contiguous()),
                                 *quantize_1x128_torch(x.float().T.contiguous()))


def reference_grouped_moe(a, a_scale, b, b_scale, group_offsets) -> torch.Tensor:
    m, n = a.shape[0], b.shape[1]
    out = torch.zeros(m, n, dtype=torch.float64, device=a.device)
    start = 0
    for g, end in enumerate(group_offsets.tolist()):
        end = min(max(end, start), m)
        if end > start:
            out[start:end] = reference_dense(a[start:end], a_scale[start:end], b[g], b_scale[g])
        start = end
    return out


def masked_rows(masked_m, max_m: int) -> torch.Tensor:
    """bool [G, max_m]: the rows of a masked layout below masked_m[g] (the ones the op writes)."""
    return torch.arange(max_m, device=masked_m.device).unsqueeze(0) < masked_m.unsqueeze(1)


def reference_grouped_moe_masked(a, a_scale, b, b_scale, masked_m) -> torch.Tensor:
    out = dequantize_1x128_f64(a, a_scale) @ dequantize_128x128_f64(b, b_scale).transpose(-1, -2)
    for g, rows in enumerate(masked_m.tolist()):
        out[g, rows:] = 0
    return out


# --------------------------------------------------------------------------------------------
# Inputs and metrics


def random_fp8_operands(
    m: int,
    n: int,
    k: int,
    *,
    a_lead: tuple[int, ...] = (),
    b_lead: tuple[int, ...] = (),
    device="cpu",
    scale_range: tuple[float, float] = (0.5, 2.0),
    generator: Optional[torch.Generator] = None,
):
    """Fresh random fp8 operands with scales drawn log-uniformly from ``scale_range``.

    Returns (a [*a_lead, m, k], a_scale [*a_lead, m, ceil(k/128)], b [*b_lead, n, k],
    b_scale [*b_lead, ceil(n/128), ceil(k/128)]). Dense: no leads; contiguous MoE: b_lead=(G,);
    masked MoE: a_lead=b_lead=(G,).
    """

    def log_uniform(shape):
        lo, hi = math.log(scale_range[0]), math.log(scale_range[1])
        return torch.exp(torch.rand(shape, generator=generator, dtype=torch.float64) * (hi - lo) + lo).float().to(device)

    def fp8(shape):
        return (torch.randn(shape, generator=generator) * 100).clamp(-FP8_MAX, FP8_MAX).to(FP8).to(device)

    kb, nb = ceil_div(k, SCALE_BLOCK), ceil_div(n, SCALE_BLOCK)
    return fp8((*a_lead, m, k)), log_uniform((*a_lead, m, kb)), fp8((*b_lead, n, k)), log_uniform((*b_lead, nb, kb))


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Relative Frobenius error ||actual - expected|| / ||expected|| in float64 (0 for empty/zero)."""
    expected = expected.double()
    diff = (actual.double() - expected).norm().item()
    ref = expected.norm().item()
    if ref == 0:
        return diff
    return diff / ref


def m_major_scales(scale: torch.Tensor) -> torch.Tensor:
    """[M, kb] activation scales in the layout quantize_1x128 returns: M-major (row index fastest),
    K-block rows padded to 4 floats and 16-byte aligned, the same values."""
    m, kb = scale.shape
    storage = torch.empty(kb, ceil_div(m, 4) * 4, device=scale.device)
    storage[:, :m].copy_(scale.t())
    return storage[:, :m].t()


def scale_layouts(scale: torch.Tensor) -> dict[str, torch.Tensor]:
    """The activation scales [..., rows, K blocks] in each layout the GEMM ops take, same values:
    row-major, rows padded with NaN to a multiple of 4 K blocks plus 4 (the kernels must never read the
    padding), misaligned by one float (not 16-byte aligned: copied by the op) and, for 2-D scales,
    M-major (m_major_scales: as quantize_1x128 returns them, loaded in place)."""
    kb = scale.shape[-1]
    padded = torch.full((*scale.shape[:-1], ceil_div(kb, 4) * 4 + 4), float("nan"), device=scale.device)
    padded = padded[..., :kb]
    padded.copy_(scale)
    misaligned = torch.empty(scale.numel() + 1, device=scale.device)[1:].view(scale.shape)
    misaligned.copy_(scale)
    layouts = {"row-major": scale.contiguous(), "padded rows": padded, "misaligned": misaligned}
    if scale.dim() == 2:
        layouts["m-major"] = m_major_scales(scale)
    return layouts


def poison_cuda_allocator(device, nbytes: int) -> None:
    """Fill ``nbytes`` of cached device memory with NaN and release it, so that an output the kernel
    forgets to write shows up as NaN instead of a lucky zero."""
    if torch.device(device).type != "cuda" or nbytes <= 0:
        return
    block = torch.full((ceil_div(nbytes, 4),), float("nan"), dtype=torch.float32, device=device)
    del block


# Error bars (relative Frobenius error against the float64 product of the dequantized operands).
# BF16 output: its rounding dominates. One rounding is off by at most 2^-8 of the value (8 significant
# bits); over many elements the errors average to ~1.7e-3 (measured on the CPU reference and the H200),
# hence 2.5e-3. A handful of values cannot average: 8-element outputs exceeded 2.5e-3 in 3% of random
# draws on the CPU reference itself (worst 3.3e-3 in 2000 draws), so outputs of fewer than 1024
# elements are held to the worst-case bound, one BF16 rounding plus the FP32-out bar, on every backend.
# FP32 output: the ATen reference accumulates in FP32 (1e-5), but Hopper's FP8 wgmma accumulates each
# k32 instruction at reduced (~14-bit) precision inside the tensor core, which no promotion schedule
# can undo: measured 0.8-1.3e-4 on the H200 for every configuration and K, so the sm_90a kernels are
# held to 3e-4.
BF16_BAR = 2.5e-3
FP32_BAR_REFERENCE = 1e-5
FP32_BAR_TENSOR_CORE = 3e-4
BF16_BAR_SMALL_OUTPUT = 2.0**-8 + FP32_BAR_TENSOR_CORE
SMALL_OUTPUT_NUMEL = 1024


def error_bar(out: torch.Tensor, tensor_core: bool) -> float:
    if out.dtype == torch.float32:
        return FP32_BAR_TENSOR_CORE if tensor_core else FP32_BAR_REFERENCE
    return BF16_BAR_SMALL_OUTPUT if out.numel() < SMALL_OUTPUT_NUMEL else BF16_BAR


def uses_tensor_cores(device) -> bool:
    """Whether GEMM ops on `device` run the sm_90a kernels (else the ATen reference)."""
    device = torch.device(device)
    return device.type == "cuda" and torch.cuda.get_device_capability(device) == (9, 0)


def to_expert_blocks(t: torch.Tensor, dest: torch.Tensor, total: int) -> torch.Tensor:
    """t's rows at `dest` in a zeroed [total, C] buffer: the expert-block layout of the K-grouped weight
    gradient (ops._expert_block_layout) built as a tensor, the plain-torch statement of the layout that
    the op gathers inside its quantizer instead."""
    out = t.new_zeros((total, t.shape[1]))
    # Rows past the last expert all land on the spare block's first row (which of them is copied last
    # does not matter): zero it again so the buffer is the same on every run.
    out.index_copy_(0, dest, t)
    out[total - 128:].zero_()
    return out

