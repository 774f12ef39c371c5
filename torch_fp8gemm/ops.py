"""Python face of the fp8gemm ops: typed wrappers, fake (meta) kernels and autograd.

The schemas and the CPU/CUDA kernels are registered in C++ (csrc/ops). Fakes live here, in Python,
so that shapes stay symbolic under ``torch.compile(dynamic=True)`` (a C++ Meta kernel with plain int
sizes recompiles per shape).

Recipe (DeepSeek-V3): ``a`` is scaled per 1x128 group along K, ``b`` per 128x128 block, and a
scale multiplies: dequantized = fp8 value * scale. High-precision operands (bf16/fp16/fp32) are
quantized by the op itself and receive gradients; float8 operands are constants (no gradient).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from . import _C  # noqa: F401  (registers the schemas before the registrations below)

__all__ = [
    "cuda_kernels_built",
    "dense",
    "grouped_moe",
    "grouped_moe_masked",
    "quantize_1x128",
    "quantize_128x128",
]

SCALE_BLOCK = 128
_FP8 = torch.float8_e4m3fn


def _ceil_div(x, y):
    return (x + y - 1) // y


def cuda_kernels_built() -> bool:
    """Whether this build of the extension contains the sm_90a CUDA kernels."""
    return bool(torch.ops.fp8gemm.cuda_kernels_built())


# --------------------------------------------------------------------------------------------
# Wrappers


def dense(
    a: torch.Tensor,
    b: torch.Tensor,
    a_scale: Optional[torch.Tensor] = None,
    b_scale: Optional[torch.Tensor] = None,
    bias: Optional[torch.Tensor] = None,
    out_dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """``out[M, N] = deq(a)[M, K] @ deq(b)[N, K].T (+ bias[N])``, FP32 accumulation.

    a: float8_e4m3fn [M, K] with ``a_scale`` float32 [M, ceil(K/128)] (one scale per 1x128 group;
       any strides; the M-major layout returned by :func:`quantize_1x128` avoids a copy), or
       bf16/fp16/fp32 [M, K] with ``a_scale=None`` (quantized per 1x128 group by the op).
    b: float8_e4m3fn [N, K] with ``b_scale`` float32 [ceil(N/128), ceil(K/128)], or high precision.
    Rules: K % 16 == 0, N % 8 == 0; fp8 operands contiguous along K with 16-byte aligned rows.
    Output: bf16 (default) or float32 (``out_dtype``).
    """
    return torch.ops.fp8gemm.dense(a, b, a_scale, b_scale, bias, out_dtype)


def grouped_moe(
    a: torch.Tensor,
    b: torch.Tensor,
    group_offsets: torch.Tensor,
    a_scale: Optional[torch.Tensor] = None,
    b_scale: Optional[torch.Tensor] = None,
    out_dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """Contiguous MoE GEMM: expert ``g`` owns rows ``[offs[g-1], offs[g])`` of ``a`` [M, K].

    ``b`` [G, N, K] (fp8 with ``b_scale`` [G, ceil(N/128), ceil(K/128)], or high precision);
    ``group_offsets`` int32 [G], cumulative row ends on ``a``'s device (like ``torch._grouped_mm``).
    Group sizes need no padding. Rows at or past ``offs[G-1]`` are zero. Out [M, N].
    """
    return torch.ops.fp8gemm.grouped_moe(a, b, group_offsets, a_scale, b_scale, out_dtype)


def grouped_moe_masked(
    a: torch.Tensor,
    b: torch.Tensor,
    masked_m: torch.Tensor,
    expected_m: int,
    a_scale: Optional[torch.Tensor] = None,
    b_scale: Optional[torch.Tensor] = None,
    out_dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """Masked MoE GEMM for decode under CUDA graphs: ``out[g] = deq(a[g]) @ deq(b[g]).T``.

    ``a`` [G, max_m, K] (``a_scale`` [G, max_m, ceil(K/128)]), ``b`` [G, N, K], ``masked_m`` int32
    [G] on the device (never read by the host): rows at or past ``masked_m[g]`` are zero.
    ``expected_m`` (typical rows per expert) only guides the kernel configuration. Out [G, max_m, N].
    """
    return torch.ops.fp8gemm.grouped_moe_masked(a, b, masked_m, expected_m, a_scale, b_scale, out_dtype)


def quantize_1x128(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token-group quantization: x [..., K] -> (fp8 [..., K], float32 scales [..., ceil(K/128)]).

    scale = max(amax, 1e-12) / 448 per 1x128 group; values saturate at +-448. The scales are a view
    of M-major storage (token index fastest, rows padded to 4), the layout the GEMM loads directly.
    """
    return torch.ops.fp8gemm.quantize_1x128(x)


def quantize_128x128(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-block quantization: w [..., N, K] -> (fp8 [..., N, K], float32 [..., ceil(N/128), ceil(K/128)])."""
    return torch.ops.fp8gemm.quantize_128x128(w)


# --------------------------------------------------------------------------------------------
# Fake kernels: shapes, dtypes and strides only (they also serve device="meta").


def _out_dtype(out_dtype):
    return torch.bfloat16 if out_dtype is None else out_dtype


def _check_same_device(op, a, **others):
    for name, t in others.items():
        if t is not None:
            torch._check_value(
                t.device == a.device,
                lambda: f"{op}: expected `{name}` on the same device as `a` ({a.device}), got {t.device}",
            )


@torch.library.register_fake("fp8gemm::dense")
def _dense_fake(a, b, a_scale=None, b_scale=None, bias=None, out_dtype=None):
    _check_same_device("fp8gemm::dense", a, b=b, a_scale=a_scale, b_scale=b_scale, bias=bias)
    torch._check_value(a.dim() == 2 and b.dim() == 2, lambda: "fp8gemm::dense: expected 2-D `a` and `b`")
    torch._check_value(
        a.shape[1] == b.shape[1],
        lambda: f"fp8gemm::dense: expected `b` of shape [N, K] with K = {a.shape[1]}, got {tuple(b.shape)}",
    )
    return a.new_empty((a.shape[0], b.shape[0]), dtype=_out_dtype(out_dtype))


@torch.library.register_fake("fp8gemm::grouped_moe")
def _grouped_moe_fake(a, b, group_offsets, a_scale=None, b_scale=None, out_dtype=None):
    _check_same_device("fp8gemm::grouped_moe", a, b=b, group_offsets=group_offsets, a_scale=a_scale, b_scale=b_scale)
    torch._check_value(a.dim() == 2 and b.dim() == 3, lambda: "fp8gemm::grouped_moe: expected `a` [M, K], `b` [G, N, K]")
    torch._check_value(a.shape[1] == b.shape[2], lambda: "fp8gemm::grouped_moe: K of `a` and `b` differ")
    return a.new_empty((a.shape[0], b.shape[1]), dtype=_out_dtype(out_dtype))


@torch.library.register_fake("fp8gemm::grouped_moe_masked")
def _grouped_moe_masked_fake(a, b, masked_m, expected_m, a_scale=None, b_scale=None, out_dtype=None):
    _check_same_device("fp8gemm::grouped_moe_masked", a, b=b, masked_m=masked_m, a_scale=a_scale, b_scale=b_scale)
    torch._check_value(
        a.dim() == 3 and b.dim() == 3, lambda: "fp8gemm::grouped_moe_masked: expected `a` [G, max_m, K], `b` [G, N, K]"
    )
    torch._check_value(a.shape[2] == b.shape[2], lambda: "fp8gemm::grouped_moe_masked: K of `a` and `b` differ")
    return a.new_empty((a.shape[0], a.shape[1], b.shape[1]), dtype=_out_dtype(out_dtype))


@torch.library.register_fake("fp8gemm::quantize_1x128")
def _quantize_1x128_fake(x):
    lead = x.shape[:-1]
    tokens = 1
    for size in lead:
        tokens = tokens * size
    tokens_padded = _ceil_div(tokens, 4) * 4
    strides, running = [], 1
    for size in reversed(lead):  # contiguous strides of the token dims, as the C++ side computes
        strides.insert(0, running)
        running = running * torch.sym_max(size, 1)
    scale = torch.empty_strided(
        (*lead, _ceil_div(x.shape[-1], SCALE_BLOCK)), (*strides, tokens_padded), dtype=torch.float32, device=x.device
    )
    return torch.empty_like(x, dtype=_FP8, memory_format=torch.contiguous_format), scale


@torch.library.register_fake("fp8gemm::quantize_128x128")
def _quantize_128x128_fake(w):
    n, k = w.shape[-2], w.shape[-1]
    scale = w.new_empty((*w.shape[:-2], _ceil_div(n, SCALE_BLOCK), _ceil_div(k, SCALE_BLOCK)), dtype=torch.float32)
    return torch.empty_like(w, dtype=_FP8, memory_format=torch.contiguous_format), scale


# --------------------------------------------------------------------------------------------
# Autograd. Gradients flow to high-precision a, b and bias (straight-through the quantization);
# float8 operands are constants. Backward GEMMs run on the op itself, so they use the FP8 kernels:
# dgrad quantizes dy per 1x128 along N and W^T per 128x128; wgrad quantizes dy^T per 1x128 along M.


def _pad_dim(x: torch.Tensor, dim: int, multiple: int) -> torch.Tensor:
    size = x.shape[dim]
    extra = _ceil_div(size, multiple) * multiple - size
    if extra == 0:
        return x
    pad = [0, 0] * (x.dim() - 1 - (dim % x.dim())) + [0, extra]
    return F.pad(x, pad)


def _hp_gemm_nt(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """float32 x [M, R] @ y [N, R].T through fp8gemm::dense on high-precision operands.

    The reduction dim is zero-padded to 16 and N to 8 (the kernels' alignment); zeros add nothing.
    """
    n = y.shape[0]
    x = _pad_dim(x, 1, 16)
    y = _pad_dim(_pad_dim(y, 1, 16), 0, 8)
    return dense(x.contiguous(), y.contiguous(), out_dtype=torch.float32)[:, :n]


def _dequantize_activation(a, a_scale):
    if a.dtype != _FP8:
        return a
    scale = a_scale.repeat_interleave(SCALE_BLOCK, dim=-1)[..., : a.shape[-1]]
    return a.to(torch.float32) * scale


def _dequantize_weight(b, b_scale):
    if b.dtype != _FP8:
        return b
    scale = b_scale.repeat_interleave(SCALE_BLOCK, dim=-2)[..., : b.shape[-2], :]
    scale = scale.repeat_interleave(SCALE_BLOCK, dim=-1)[..., : b.shape[-1]]
    return b.to(torch.float32) * scale



def _with_defaults(inputs, count):
    # Traced calls may omit trailing defaulted arguments from `inputs`.
    return tuple(inputs) + (None,) * (count - len(inputs))


def _dense_setup_context(ctx, inputs, output):
    a, b, a_scale, b_scale, bias, _ = _with_defaults(inputs, 6)
    ctx.save_for_backward(a, b, a_scale, b_scale)
    ctx.bias_dtype = None if bias is None else bias.dtype


def _dense_backward(ctx, grad):
    a, b, a_scale, b_scale = ctx.saved_tensors
    need_a, need_b, _, _, need_bias, _ = _with_defaults(ctx.needs_input_grad, 6)
    grad_a = grad_b = grad_bias = None
    if need_a:  # dx [M, K] = dy [M, N] @ W [N, K]
        w = _dequantize_weight(b, b_scale)
        grad_a = _hp_gemm_nt(grad, w.t()).to(a.dtype)
    if need_b:  # dW [N, K] = dy^T [N, M] @ x [M, K]
        x = _dequantize_activation(a, a_scale)
        grad_b = _hp_gemm_nt(grad.t(), x.t()).to(b.dtype)
    if need_bias:
        grad_bias = grad.sum(0, dtype=torch.float32).to(ctx.bias_dtype)
    return grad_a, grad_b, None, None, grad_bias, None


torch.library.register_autograd("fp8gemm::dense", _dense_backward, setup_context=_dense_setup_context)


def _grouped_setup_context(ctx, inputs, output):
    a, b, group_offsets, a_scale, b_scale, _ = _with_defaults(inputs, 6)
    ctx.save_for_backward(a, b, group_offsets, a_scale, b_scale)


def _grouped_backward(ctx, grad):
    a, b, offsets, a_scale, b_scale = ctx.saved_tensors
    need_a, need_b = ctx.needs_input_grad[:2]
    grad_a = grad_b = None
    if need_a:  # da = dy @ W_g for each expert's rows: a grouped GEMM on W^T [G, K, N]
        w_t = _pad_dim(_dequantize_weight(b, b_scale).transpose(1, 2), 2, 16).contiguous()
        grad_a = grouped_moe(_pad_dim(grad, 1, 16).contiguous(), w_t, offsets, out_dtype=torch.float32).to(a.dtype)
    if need_b:
        # dW_g = dy_g^T @ x_g over each expert's own rows. A K-grouped FP8 kernel is future work;
        # this runs in float32 through a one-hot expert map (memory O(M * G * N)).
        rows = torch.arange(a.shape[0], device=a.device, dtype=torch.int32)
        expert = torch.searchsorted(offsets, rows, right=True)
        one_hot = (expert.unsqueeze(1) == torch.arange(b.shape[0], device=a.device).unsqueeze(0)).to(torch.float32)
        x = _dequantize_activation(a, a_scale).to(torch.float32)
        grad_b = torch.einsum("mg,mn,mk->gnk", one_hot, grad.to(torch.float32), x).to(b.dtype)
    return grad_a, grad_b, None, None, None, None


torch.library.register_autograd("fp8gemm::grouped_moe", _grouped_backward, setup_context=_grouped_setup_context)


def _masked_setup_context(ctx, inputs, output):
    a, b, masked_m, expected_m, a_scale, b_scale, _ = _with_defaults(inputs, 7)
    ctx.save_for_backward(a, b, masked_m, a_scale, b_scale)
    ctx.expected_m = expected_m


def _masked_backward(ctx, grad):
    a, b, masked_m, a_scale, b_scale = ctx.saved_tensors
    need_a, need_b = ctx.needs_input_grad[:2]
    grad_a = grad_b = None
    if need_a:
        w_t = _pad_dim(_dequantize_weight(b, b_scale).transpose(1, 2), 2, 16).contiguous()
        grad_a = grouped_moe_masked(
            _pad_dim(grad, 2, 16).contiguous(), w_t, masked_m, ctx.expected_m, out_dtype=torch.float32
        ).to(a.dtype)
    if need_b:  # rows at or past masked_m[g] produced constant zeros: they carry no gradient
        valid = torch.arange(a.shape[1], device=a.device).unsqueeze(0) < masked_m.unsqueeze(1)
        dy = grad.to(torch.float32) * valid.unsqueeze(-1)
        x = _dequantize_activation(a, a_scale).to(torch.float32)
        grad_b = torch.bmm(dy.transpose(1, 2), x).to(b.dtype)
    return grad_a, grad_b, None, None, None, None, None


torch.library.register_autograd(
    "fp8gemm::grouped_moe_masked", _masked_backward, setup_context=_masked_setup_context
)
