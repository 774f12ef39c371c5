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
    "dense_1x128",
    "grouped_moe",
    "grouped_moe_masked",
    "grouped_moe_wgrad",
    "quantize_1x128",
    "quantize_1x128_transposed",
    "quantize_128x128",
    "quantize_128x128_transposed",
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
       any strides; the M-major layout returned by :func:`quantize_1x128` is loaded in place, and so
       are row-major scales with 16-byte rows (ceil(K/128) % 4 == 0); other layouts are copied), or
       bf16/fp16/fp32 [M, K] with ``a_scale=None`` (quantized per 1x128 group by the op).
    b: float8_e4m3fn [N, K] with ``b_scale`` float32 [ceil(N/128), ceil(K/128)], or high precision.
    Rules: K % 16 == 0, N % 8 == 0; fp8 operands contiguous along K with 16-byte aligned rows.
    Output: bf16 (default) or float32 (``out_dtype``).
    """
    return torch.ops.fp8gemm.dense(a, b, a_scale, b_scale, bias, out_dtype)


def dense_1x128(
    a: torch.Tensor,
    b: torch.Tensor,
    a_scale: Optional[torch.Tensor] = None,
    b_scale: Optional[torch.Tensor] = None,
    out_dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """``out[M, N] = deq(a)[M, K] @ deq(b)[N, K].T`` with BOTH operands scaled per 1x128 group along K.

    The weight-gradient GEMM of the training recipe (dW = dy^T x, both operands quantized along the
    token dim). ``a_scale`` [M, ceil(K/128)], ``b_scale`` [N, ceil(K/128)] float32 (the M-major views
    that :func:`quantize_1x128` returns are used without a copy); high-precision operands are quantized
    per 1x128 group by the op. Rules as for :func:`dense` (K % 16 == 0, N % 8 == 0); no bias.
    """
    return torch.ops.fp8gemm.dense_1x128(a, b, a_scale, b_scale, out_dtype)


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
    [G] on the device (never read by the host). Out [G, max_m, N]: rows at or past ``masked_m[g]``
    are not written (their contents are unspecified: the output is allocated uninitialized), so the
    cost follows the rows that exist, not the capacity ``max_m``. ``expected_m`` (typical rows per
    expert) only guides the kernel configuration.
    """
    return torch.ops.fp8gemm.grouped_moe_masked(a, b, masked_m, expected_m, a_scale, b_scale, out_dtype)


SCALE_FORMATS = ("float32", "ue8m0")


def _check_scale_format(where: str, scale_format: str) -> None:
    if scale_format not in SCALE_FORMATS:
        raise ValueError(f"{where}: expected `scale_format` to be 'float32' or 'ue8m0', got {scale_format!r}")


def _pow2_scale(amax: torch.Tensor) -> torch.Tensor:
    """UE8M0 scale of groups with absolute maximum ``amax``: 2^ceil(log2(max(amax, 1e-12) / 448)), from
    the float's own exponent (exact, unlike a rounded log2). An infinite amax keeps an infinite scale
    (its group dequantizes to NaN, as with float32 scales)."""
    ratio = amax.float().clamp(min=1e-12) / 448.0
    mantissa, exponent = torch.frexp(ratio)  # ratio = mantissa * 2^exponent, mantissa in [0.5, 1)
    pow2 = torch.ldexp(torch.ones_like(ratio), exponent - (mantissa == 0.5).to(exponent.dtype))
    return torch.where(torch.isfinite(ratio), pow2, ratio)


def _quantize_1x128_ue8m0(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """quantize_1x128 with power-of-two scales, in torch ops (any device); the same output layout."""
    lead, k = x.shape[:-1], x.shape[-1]
    kb = _ceil_div(k, SCALE_BLOCK)
    rows = x.reshape(-1, k).float()
    tokens = rows.shape[0]
    groups = torch.nn.functional.pad(rows, (0, kb * SCALE_BLOCK - k)).view(tokens, kb, SCALE_BLOCK)
    scale = _pow2_scale(groups.abs().amax(dim=-1))
    values = (groups / scale.unsqueeze(-1)).clamp(-448.0, 448.0).to(_FP8).view(tokens, kb * SCALE_BLOCK)[:, :k]
    storage = torch.empty(kb, _ceil_div(tokens, 4) * 4, dtype=torch.float32, device=x.device)  # M-major
    storage[:, :tokens] = scale.t()
    return values.reshape(*lead, k).contiguous(), storage[:, :tokens].t().view(*lead, kb)


def _quantize_128x128_ue8m0(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """quantize_128x128 with power-of-two scales, in torch ops (any device)."""
    lead, (n, k) = w.shape[:-2], w.shape[-2:]
    nb, kb = _ceil_div(n, SCALE_BLOCK), _ceil_div(k, SCALE_BLOCK)
    padded = torch.nn.functional.pad(w.float(), (0, kb * SCALE_BLOCK - k, 0, nb * SCALE_BLOCK - n))
    blocks = padded.view(*lead, nb, SCALE_BLOCK, kb, SCALE_BLOCK)
    scale = _pow2_scale(blocks.abs().amax(dim=(-3, -1)))
    values = (blocks / scale.unsqueeze(-1).unsqueeze(-3)).clamp(-448.0, 448.0).to(_FP8)
    return values.view(*lead, nb * SCALE_BLOCK, kb * SCALE_BLOCK)[..., :n, :k].contiguous(), scale


def quantize_1x128(x: torch.Tensor, scale_format: str = "float32") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token-group quantization: x [..., K] -> (fp8 [..., K], float32 scales [..., ceil(K/128)]).

    scale = max(amax, 1e-12) / 448 per 1x128 group; values saturate at +-448. The scales are a view
    of M-major storage (token index fastest, rows padded to 4), the layout the GEMM loads directly.
    ``scale_format="ue8m0"``: scale = 2^ceil(log2(max(amax, 1e-12) / 448)), a power of two (DeepSeek-V3.1
    and later), still float32; computed with torch ops (no custom kernel).
    """
    _check_scale_format("quantize_1x128", scale_format)
    if scale_format == "ue8m0":
        return _quantize_1x128_ue8m0(x)
    return torch.ops.fp8gemm.quantize_1x128(x)


def quantize_1x128_transposed(x: torch.Tensor, scale_format: str = "float32") -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] -> x^T quantized per 1x128 group along M: (fp8 [K, M], float32 scales [K, ceil(M/128)]).

    Equals ``quantize_1x128(x.t().contiguous())`` bit for bit, scale strides included (M-major:
    strides (1, round_up(K, 4))), in one pass over x. For weight-gradient GEMMs (dW = dy^T x), whose
    operands are quantized along the token dim M. Any M >= 0 and K >= 0; x of any strides.
    ``scale_format`` as :func:`quantize_1x128`.
    """
    _check_scale_format("quantize_1x128_transposed", scale_format)
    if scale_format == "ue8m0":
        return _quantize_1x128_ue8m0(x.t().contiguous())
    return torch.ops.fp8gemm.quantize_1x128_transposed(x)


def quantize_128x128(w: torch.Tensor, scale_format: str = "float32") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-block quantization: w [..., N, K] -> (fp8 [..., N, K], float32 [..., ceil(N/128), ceil(K/128)]).

    ``scale_format="ue8m0"``: power-of-two block scales, as :func:`quantize_1x128`."""
    _check_scale_format("quantize_128x128", scale_format)
    if scale_format == "ue8m0":
        return _quantize_128x128_ue8m0(w)
    return torch.ops.fp8gemm.quantize_128x128(w)


def quantize_128x128_transposed(w: torch.Tensor, scale_format: str = "float32") -> tuple[torch.Tensor, torch.Tensor]:
    """w [..., N, K] -> (fp8 w^T [..., K, N], float32 [..., ceil(K/128), ceil(N/128)]), contiguous.

    Equals the transposes of ``quantize_128x128(w)``'s outputs bit for bit (a 128x128 block has the
    same scale and values either way), written in one pass over w: the dgrad operand W^T of the
    training recipe, without an fp8 transpose afterwards. ``scale_format`` as :func:`quantize_128x128`.
    """
    _check_scale_format("quantize_128x128_transposed", scale_format)
    if scale_format == "ue8m0":
        values, scale = _quantize_128x128_ue8m0(w)
        return values.transpose(-1, -2).contiguous(), scale.transpose(-1, -2).contiguous()
    return torch.ops.fp8gemm.quantize_128x128_transposed(w)


# --------------------------------------------------------------------------------------------
# Fake kernels: shapes, dtypes and strides (they also serve device="meta"), after the front ends'
# argument checks.


def _out_dtype(out_dtype):
    return torch.bfloat16 if out_dtype is None else out_dtype


def _check_same_device(op, a, **others):
    for name, t in others.items():
        if t is not None:
            torch._check_value(
                t.device == a.device,
                lambda: f"{op}: expected `{name}` on the same device as `a` ({a.device}), got {t.device}",
            )


# The argument rules of the C++ front ends (csrc/ops/frontends.cpp), in their order and with their
# messages, for fake and meta tensors: a traced or meta call rejects what an eager one rejects.
# Rules on values (offsets, masks) need data and are checked by the eager ops only.
_HIGH_PRECISION = (torch.bfloat16, torch.float16, torch.float32)


def _sizes(sizes):
    return "[" + ", ".join(str(s) for s in sizes) + "]"


def _expect(op, cond, message):
    torch._check_value(cond, lambda: f"{op}: expected {message()}")


def _check_operand(op, name, t, dim, scale_name, scale):
    _expect(op, t.dtype == _FP8 or t.dtype in _HIGH_PRECISION,
            lambda: f"`{name}` to be float8_e4m3fn (with `{scale_name}`) or bfloat16/float16/float32, got {t.dtype}")
    _expect(op, t.dim() == dim, lambda: f"`{name}` to have {dim} dims, got {t.dim()} (shape {_sizes(t.shape)})")
    if t.dtype == _FP8:
        _expect(op, scale is not None,
                lambda: f"`{scale_name}` when `{name}` is float8_e4m3fn (dequantized value = fp8 value * scale), got None")
    else:
        _expect(op, scale is None,
                lambda: f"`{scale_name}` to be None when `{name}` is {t.dtype} (the op quantizes it itself), got a tensor")


def _check_out_dtype(op, out_dtype):
    dtype = _out_dtype(out_dtype)
    _expect(op, dtype in (torch.bfloat16, torch.float32),
            lambda: f"`out_dtype` to be torch.bfloat16 or torch.float32, got {dtype}")
    return dtype


def _check_gemm_dims(op, n, k):
    _expect(op, k % 16 == 0,
            lambda: f"K (the last dim of `a` and `b`) to be a multiple of 16 (16-byte aligned fp8 rows), got K = {k}")
    _expect(op, n % 8 == 0,
            lambda: f"N (`b`.size(-2)) to be a multiple of 8 (16-byte aligned bf16 output rows), got N = {n}")


def _check_scale(op, name, scale, sizes, rule):
    _expect(op, scale.dtype in (torch.float32, torch.float8_e8m0fnu),
            lambda: f"`{name}` to be float32 or float8_e8m0fnu (UE8M0), got {scale.dtype}")
    _expect(op, tuple(scale.shape) == tuple(sizes),
            lambda: f"`{name}` of shape {_sizes(sizes)} ({rule}), got {_sizes(scale.shape)}")


def _check_fp8_layout(op, name, t):
    if t.dtype != _FP8 or t.numel() == 0:
        return
    _expect(op, t.stride(-1) == 1,
            lambda: f"`{name}` to be contiguous along K (stride(-1) == 1), got strides {_sizes(t.stride())}")
    for d in range(t.dim() - 1):
        _expect(op, t.shape[d] == 1 or t.stride(d) % 16 == 0,
                lambda: f"`{name}` stride({d}) to be a multiple of 16 elements (16-byte aligned rows for TMA), "
                        f"got strides {_sizes(t.stride())}")


def _check_group_index(op, name, t, groups):
    _expect(op, t.dtype == torch.int32, lambda: f"`{name}` to be int32, got {t.dtype}")
    _expect(op, t.dim() == 1 and t.shape[0] == groups,
            lambda: f"`{name}` of shape [{groups}] (one entry per expert of `b`), got {_sizes(t.shape)}")


def _check_scales(op, a_scale, a_sizes, a_rule, b_scale, b_sizes, b_rule):
    if a_scale is not None:
        _check_scale(op, "a_scale", a_scale, a_sizes, a_rule)
    if b_scale is not None:
        _check_scale(op, "b_scale", b_scale, b_sizes, b_rule)


def _checked_output(op, a, b, sizes, dtype):
    """The last rules (the fp8 operands' layouts), then the output."""
    _check_fp8_layout(op, "a", a)
    _check_fp8_layout(op, "b", b)
    return a.new_empty(sizes, dtype=dtype)


def _check_grouped_operands(op, a, a_dim, b, a_scale, b_scale, out_dtype, **index):
    """The grouped ops' first rules: devices (``index``: the offsets or masks), operands, out_dtype."""
    _check_same_device(op, a, b=b, **index, a_scale=a_scale, b_scale=b_scale)
    _check_operand(op, "a", a, a_dim, "a_scale", a_scale)
    _check_operand(op, "b", b, 3, "b_scale", b_scale)
    return _check_out_dtype(op, out_dtype)


_A_SCALE_RULE = "[M, ceil(K/128)]: one scale per 1x128 group of `a`"
_EXPERT_SCALE_RULE = "[G, ceil(N/128), ceil(K/128)]: one scale per 128x128 block of each expert"


def _check_dense_operands(op, a, b, a_scale, b_scale, bias, out_dtype):
    _check_same_device(op, a, b=b, a_scale=a_scale, b_scale=b_scale, bias=bias)
    _check_operand(op, "a", a, 2, "a_scale", a_scale)
    _check_operand(op, "b", b, 2, "b_scale", b_scale)
    dtype = _check_out_dtype(op, out_dtype)
    m, k, n = a.shape[0], a.shape[1], b.shape[0]
    _expect(op, b.shape[1] == k,
            lambda: f"`b` of shape [N, K] with K = {k} (`a` is [M, K] and out = a @ b.T), got `b` of shape {_sizes(b.shape)}")
    _check_gemm_dims(op, n, k)
    return dtype, m, n, k


@torch.library.register_fake("fp8gemm::dense")
def _dense_fake(a, b, a_scale=None, b_scale=None, bias=None, out_dtype=None):
    op = "fp8gemm::dense"
    dtype, m, n, k = _check_dense_operands(op, a, b, a_scale, b_scale, bias, out_dtype)
    kb = _ceil_div(k, SCALE_BLOCK)
    _check_scales(op, a_scale, (m, kb), _A_SCALE_RULE, b_scale, (_ceil_div(n, SCALE_BLOCK), kb),
                  "[ceil(N/128), ceil(K/128)]: one scale per 128x128 block of `b`")
    if bias is not None:
        _expect(op, bias.dtype in _HIGH_PRECISION, lambda: f"`bias` to be bfloat16/float16/float32, got {bias.dtype}")
        _expect(op, bias.dim() == 1 and bias.shape[0] == n, lambda: f"`bias` of shape [{n}] (N), got {_sizes(bias.shape)}")
    return _checked_output(op, a, b, (m, n), dtype)


@torch.library.register_fake("fp8gemm::dense_1x128")
def _dense_1x128_fake(a, b, a_scale=None, b_scale=None, out_dtype=None):
    op = "fp8gemm::dense_1x128"
    dtype, m, n, k = _check_dense_operands(op, a, b, a_scale, b_scale, None, out_dtype)
    kb = _ceil_div(k, SCALE_BLOCK)
    _check_scales(op, a_scale, (m, kb), _A_SCALE_RULE, b_scale, (n, kb), "[N, ceil(K/128)]: one scale per 1x128 group of `b`")
    return _checked_output(op, a, b, (m, n), dtype)


@torch.library.register_fake("fp8gemm::grouped_moe")
def _grouped_moe_fake(a, b, group_offsets, a_scale=None, b_scale=None, out_dtype=None):
    op = "fp8gemm::grouped_moe"
    dtype = _check_grouped_operands(op, a, 2, b, a_scale, b_scale, out_dtype, group_offsets=group_offsets)
    m, k, groups, n = a.shape[0], a.shape[1], b.shape[0], b.shape[1]
    _expect(op, b.shape[2] == k, lambda: f"`b` of shape [G, N, K] with K = {k} (`a` is [M, K]), got `b` of shape {_sizes(b.shape)}")
    _check_gemm_dims(op, n, k)
    _check_group_index(op, "group_offsets", group_offsets, groups)
    kb = _ceil_div(k, SCALE_BLOCK)
    _check_scales(op, a_scale, (m, kb), _A_SCALE_RULE, b_scale, (groups, _ceil_div(n, SCALE_BLOCK), kb), _EXPERT_SCALE_RULE)
    return _checked_output(op, a, b, (m, n), dtype)


@torch.library.register_fake("fp8gemm::grouped_moe_masked")
def _grouped_moe_masked_fake(a, b, masked_m, expected_m, a_scale=None, b_scale=None, out_dtype=None):
    op = "fp8gemm::grouped_moe_masked"
    dtype = _check_grouped_operands(op, a, 3, b, a_scale, b_scale, out_dtype, masked_m=masked_m)
    groups, max_m, k, n = a.shape[0], a.shape[1], a.shape[2], b.shape[1]
    _expect(op, b.shape[0] == groups and b.shape[2] == k,
            lambda: f"`b` of shape [G, N, K] with G = {groups} and K = {k} (`a` is [G, max_m, K]), got `b` of shape "
                    f"{_sizes(b.shape)}")
    _check_gemm_dims(op, n, k)
    _check_group_index(op, "masked_m", masked_m, groups)
    _expect(op, expected_m >= 0, lambda: f"`expected_m` to be >= 0, got {expected_m}")
    kb = _ceil_div(k, SCALE_BLOCK)
    _check_scales(op, a_scale, (groups, max_m, kb), "[G, max_m, ceil(K/128)]: one scale per 1x128 group of `a`",
                  b_scale, (groups, _ceil_div(n, SCALE_BLOCK), kb), _EXPERT_SCALE_RULE)
    return _checked_output(op, a, b, (groups, max_m, n), dtype)


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


@torch.library.register_fake("fp8gemm::quantize_1x128_transposed")
def _quantize_1x128_transposed_fake(x):
    torch._check_value(
        x.dim() == 2,
        lambda: f"fp8gemm::quantize_1x128_transposed: expected `x` to have 2 dims ([M, K]), got {x.dim()}",
    )
    m, k = x.shape
    # x^T's scales as quantize_1x128 lays them out: M-major storage [ceil(M/128), round_up(K, 4)].
    scale = torch.empty_strided(
        (k, _ceil_div(m, SCALE_BLOCK)), (1, _ceil_div(k, 4) * 4), dtype=torch.float32, device=x.device
    )
    return x.new_empty((k, m), dtype=_FP8), scale


@torch.library.register_fake("fp8gemm::_quantize_1x128_transposed_rows")
def _quantize_1x128_transposed_rows_fake(x, rows):
    torch._check_value(
        x.dim() == 2,
        lambda: f"fp8gemm::_quantize_1x128_transposed_rows: expected `x` to have 2 dims ([M, K]), got {x.dim()}",
    )
    torch._check_value(
        rows.dim() == 1 and rows.dtype == torch.int64,
        lambda: "fp8gemm::_quantize_1x128_transposed_rows: expected `rows` to be a 1-D int64 tensor",
    )
    return _quantize_1x128_transposed_fake(x.new_empty((rows.shape[0], x.shape[1])))


@torch.library.register_fake("fp8gemm::quantize_128x128")
def _quantize_128x128_fake(w):
    n, k = w.shape[-2], w.shape[-1]
    scale = w.new_empty((*w.shape[:-2], _ceil_div(n, SCALE_BLOCK), _ceil_div(k, SCALE_BLOCK)), dtype=torch.float32)
    return torch.empty_like(w, dtype=_FP8, memory_format=torch.contiguous_format), scale


@torch.library.register_fake("fp8gemm::quantize_128x128_transposed")
def _quantize_128x128_transposed_fake(w):
    torch._check(w.dim() >= 2, lambda: f"fp8gemm::quantize_128x128_transposed: expected `w` to have at least 2 dims "
                                       f"([..., N, K]), got {w.dim()}")
    n, k = w.shape[-2], w.shape[-1]
    scale = w.new_empty((*w.shape[:-2], _ceil_div(k, SCALE_BLOCK), _ceil_div(n, SCALE_BLOCK)), dtype=torch.float32)
    return w.new_empty((*w.shape[:-2], k, n), dtype=_FP8), scale


# --------------------------------------------------------------------------------------------
# Autograd: the DeepSeek-V3 FP8 training recipe. With y = x W^T, x [M, K], W [N, K], dy [M, N]:
#   dgrad  dx = dy W:     dy quantized per 1x128 along N (its reduction dim); W^T [K, N] keeps W's
#                         128x128 blocks (the FP8 W transposed, or W^T quantized per block, which is
#                         the same values and scales) -> fp8gemm::dense / grouped_moe(_masked).
#   wgrad  dW = dy^T x:   dy^T [N, M] and x^T [K, M] both quantized per 1x128 along M (the tokens, the
#                         reduction dim) -> fp8gemm::dense_1x128, FP32 out, cast to W's dtype.
# Gradients flow to high-precision a, b and bias (straight through the quantization); float8
# operands are constants. Every backward GEMM runs on an FP8 kernel.


def _pad_dim(x: torch.Tensor, dim: int, multiple: int) -> torch.Tensor:
    """Zero-pads `dim` of x up to a multiple (float8 too: F.pad has no float8 kernels)."""
    dim = dim % x.dim()
    size = x.shape[dim]
    padded = _ceil_div(size, multiple) * multiple
    if padded == size:
        return x
    if x.dtype == _FP8:
        shape = list(x.shape)
        shape[dim] = padded
        out = torch.zeros(shape, dtype=_FP8, device=x.device)
        out.narrow(dim, 0, size).copy_(x)
        return out
    pad = [0, 0] * (x.dim() - 1 - dim) + [0, padded - size]
    return F.pad(x, pad)


def _dequantize_activation(a, a_scale):
    if a.dtype != _FP8:
        return a
    scale = a_scale.repeat_interleave(SCALE_BLOCK, dim=-1)[..., : a.shape[-1]]
    return a.to(torch.float32) * scale


def _transposed_weight(b, b_scale):
    """W^T [..., K, N] as an FP8 operand with 128x128 scales [..., ceil(K/128), ceil(N/128)]."""
    if b.dtype != _FP8:  # W^T's blocks are W's blocks: quantize and transpose in one pass
        return quantize_128x128_transposed(b)
    return b.transpose(-2, -1).contiguous(), b_scale.transpose(-2, -1).contiguous()


def _quantize_tokens_t(x: torch.Tensor):
    """x [M, R] -> x^T [R, M] quantized per 1x128 group along M (M zero-padded to 16)."""
    return torch.ops.fp8gemm.quantize_1x128_transposed(_pad_dim(x, 0, 16))


def _grad_dtype_out(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.bfloat16, torch.float32) else torch.float32


def _dgrad(grad, wt, wt_scale, dtype):
    """dx [M, K] = dy [M, N] @ W [N, K] as dy @ (W^T)^T: N (the reduction) zero-padded to 16."""
    grad = _pad_dim(grad, -1, 16)
    wt = _pad_dim(wt, -1, 16)
    return dense(grad.contiguous(), wt, None, wt_scale, out_dtype=_grad_dtype_out(dtype)).to(dtype)


def _wgrad(grad, x, dtype):
    """dW [N, K] = dy^T [N, M] @ x [M, K], both operands quantized per 1x128 along M. The kernel
    accumulates in FP32 and rounds once to a bf16/fp32 `dtype` (the same bits as FP32 out + cast,
    without the extra pass over dW)."""
    dyt, dyt_scale = _quantize_tokens_t(grad)
    xt, xt_scale = _quantize_tokens_t(x)
    return dense_1x128(dyt, xt, dyt_scale, xt_scale, out_dtype=_grad_dtype_out(dtype)).to(dtype)


def _need_grads(ctx, *operands):
    """needs_input_grad of the leading operands, False for float8 ones: a float8 operand is a
    constant even when it has requires_grad (a float8 gradient would be clamped to +-448)."""
    return tuple(bool(need) and t.dtype != _FP8 for need, t in zip(ctx.needs_input_grad, operands))


def _with_defaults(inputs, count):
    # Traced calls may omit trailing defaulted arguments from `inputs`.
    return tuple(inputs) + (None,) * (count - len(inputs))


def _dense_setup_context(ctx, inputs, output):
    a, b, a_scale, b_scale, bias, _ = _with_defaults(inputs, 6)
    ctx.save_for_backward(a, b, a_scale, b_scale)
    ctx.bias_dtype = None if bias is None else bias.dtype


def _dense_backward(ctx, grad):
    a, b, a_scale, b_scale = ctx.saved_tensors
    need_a, need_b = _need_grads(ctx, a, b)
    need_bias = _with_defaults(ctx.needs_input_grad, 6)[4]
    grad_a = grad_b = grad_bias = None
    if need_a:
        wt, wt_scale = _transposed_weight(b, b_scale)
        grad_a = _dgrad(grad, wt, wt_scale, a.dtype)
    if need_b:
        grad_b = _wgrad(grad, _dequantize_activation(a, a_scale), b.dtype)
    if need_bias:
        grad_bias = grad.sum(0, dtype=torch.float32).to(ctx.bias_dtype)
    return grad_a, grad_b, None, None, grad_bias, None


torch.library.register_autograd("fp8gemm::dense", _dense_backward, setup_context=_dense_setup_context)


def _dense_1x128_setup_context(ctx, inputs, output):
    a, b, a_scale, b_scale, _ = _with_defaults(inputs, 5)
    ctx.save_for_backward(a, b, a_scale, b_scale)


def _dense_1x128_backward(ctx, grad):
    a, b, a_scale, b_scale = ctx.saved_tensors
    need_a, need_b = _need_grads(ctx, a, b)
    grad_a = grad_b = None
    if need_a:  # dx = dy @ b: dy per 1x128 along N, b^T [K, N] per 1x128 along N
        bt = _pad_dim(_dequantize_activation(b, b_scale).t(), -1, 16).contiguous()
        grad_a = dense_1x128(_pad_dim(grad, -1, 16).contiguous(), bt, out_dtype=torch.float32).to(a.dtype)
    if need_b:
        grad_b = _wgrad(grad, _dequantize_activation(a, a_scale), b.dtype)
    return grad_a, grad_b, None, None, None


torch.library.register_autograd(
    "fp8gemm::dense_1x128", _dense_1x128_backward, setup_context=_dense_1x128_setup_context
)


@torch.library.custom_op("fp8gemm::grouped_moe_wgrad", mutates_args=())
def grouped_moe_wgrad(
    grad: torch.Tensor, x: torch.Tensor, group_offsets: torch.Tensor, num_groups: int,
    out_dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """dW [G, N, K] of grouped_moe (float32, or bf16 with ``out_dtype``): dW_g = dy_g^T x_g over
    expert g's own rows, accumulated in FP32 and rounded once.

    grad [M, N] and x [M, K] in high precision, ``group_offsets`` int32 [G] cumulative row ends.
    Each expert's rows are quantized per 1x128 group along the tokens (groups start at the expert's
    first row). On Hopper the experts' tokens are laid out padded to whole 128-token blocks on the
    device and one K-grouped FP8 GEMM (fp8gemm::_k_grouped_wgrad) reduces each expert over its own
    blocks: no host sync, capturable in a CUDA graph. Elsewhere the offsets are read on the host and
    each expert runs fp8gemm::dense_1x128 (the same numbers).
    """
    n, k = grad.shape[1], x.shape[1]
    dtype = torch.float32 if out_dtype is None else out_dtype
    torch._check_value(dtype in (torch.float32, torch.bfloat16),
                       lambda: f"fp8gemm::grouped_moe_wgrad: expected `out_dtype` float32 or bfloat16, got {dtype}")
    if _k_grouped_kernel_available(grad) and n % 8 == 0 and k % 8 == 0:
        return _k_grouped_wgrad(grad, x, group_offsets, num_groups, dtype)
    out = torch.zeros((num_groups, n, k), dtype=dtype, device=grad.device)
    start = 0
    for g, end in enumerate(group_offsets.tolist()):
        end = min(max(end, start), grad.shape[0])
        if end > start:
            out[g] = _wgrad(grad[start:end], x[start:end], dtype)
        start = end
    return out


def _k_grouped_kernel_available(t: torch.Tensor) -> bool:
    return (t.is_cuda and hasattr(torch.ops.fp8gemm, "_k_grouped_wgrad") and cuda_kernels_built()
            and torch.cuda.get_device_capability(t.device) == (9, 0))


def _expert_block_layout(group_offsets: torch.Tensor, m: int, num_groups: int):
    """Device-side layout for the K-grouped weight gradient: expert g's tokens go to rows starting at
    128 * bounds[g] (bounds = prefix sums of ceil(rows_g / 128)), so every 1x128 token group of the
    transposed quantization lies inside one expert. The padded row count is the static bound
    M + 127 G (rounded up to 128) plus one spare block that takes the rows past the last expert
    (zeroed, never read by the GEMM). Returns (dest [M] int64, inside [M] bool, bounds [G + 1] int64
    in blocks, total rows); no host sync."""
    device = group_offsets.device
    ends = group_offsets.to(torch.int64).clamp(0, m).cummax(0).values  # clamped, non-decreasing
    starts = torch.cat([ends.new_zeros(1), ends[:-1]])
    blocks = torch.div(ends - starts + 127, 128, rounding_mode="floor")
    bounds = torch.cat([blocks.new_zeros(1), blocks.cumsum(0)])
    padded_rows = _ceil_div(m + 127 * num_groups, 128) * 128
    tokens = torch.arange(m, device=device)
    expert = torch.searchsorted(ends, tokens, right=True)  # == G for rows past the last expert
    inside = expert < num_groups
    expert = expert.clamp(max=num_groups - 1)
    dest = torch.where(inside, bounds[expert] * 128 + tokens - starts[expert], torch.full_like(tokens, padded_rows))
    return dest, inside, bounds, padded_rows + 128


def _expert_block_rows(dest: torch.Tensor, total: int) -> torch.Tensor:
    """The inverse of `dest` as a gather map: rows [total] int64 with rows[dest[i]] = i, and -1 (a zero
    row) everywhere else, the spare block included (rows past the last expert all point into it)."""
    rows = torch.full((total,), -1, dtype=torch.int64, device=dest.device)
    rows.scatter_(0, dest, torch.arange(dest.shape[0], device=dest.device))
    rows[total - 128:] = -1
    return rows


def _k_grouped_wgrad(grad, x, group_offsets, num_groups, dtype):
    dest, _, bounds, total = _expert_block_layout(group_offsets, grad.shape[0], num_groups)
    # Gather into the expert-block layout inside the quantizer: no zero fill, no index_copy pass
    # (index_copy ran at ~0.65 TB/s on the H200, ~3.5 ms of a 16384-token MoE backward).
    rows = _expert_block_rows(dest, total)
    dyt, dyt_scale = torch.ops.fp8gemm._quantize_1x128_transposed_rows(grad, rows)
    xt, xt_scale = torch.ops.fp8gemm._quantize_1x128_transposed_rows(x, rows)
    return torch.ops.fp8gemm._k_grouped_wgrad(dyt, dyt_scale, xt, xt_scale, bounds.to(torch.int32).contiguous(),
                                              num_groups, dtype)


@grouped_moe_wgrad.register_fake
def _grouped_moe_wgrad_fake(grad, x, group_offsets, num_groups, out_dtype=None):
    dtype = torch.float32 if out_dtype is None else out_dtype
    return grad.new_empty((num_groups, grad.shape[1], x.shape[1]), dtype=dtype)


def _grouped_moe_wgrad_backward(ctx, grad):
    raise NotImplementedError("fp8gemm::grouped_moe_wgrad: double backward through grouped_moe is not supported")


grouped_moe_wgrad.register_autograd(_grouped_moe_wgrad_backward)


def _grouped_setup_context(ctx, inputs, output):
    a, b, group_offsets, a_scale, b_scale, _ = _with_defaults(inputs, 6)
    ctx.save_for_backward(a, b, group_offsets, a_scale, b_scale)


def _grouped_backward(ctx, grad):
    a, b, offsets, a_scale, b_scale = ctx.saved_tensors
    need_a, need_b = _need_grads(ctx, a, b)
    grad_a = grad_b = None
    if need_a:  # dx = dy @ W_g for each expert's rows: the grouped kernel on W^T [G, K, N]
        wt, wt_scale = _transposed_weight(b, b_scale)
        wt = _pad_dim(wt, -1, 16)
        grad_a = grouped_moe(_pad_dim(grad, -1, 16).contiguous(), wt, offsets, None, wt_scale,
                             out_dtype=_grad_dtype_out(a.dtype)).to(a.dtype)
    if need_b:
        x = _dequantize_activation(a, a_scale)
        grad_b = grouped_moe_wgrad(grad, x, offsets, b.shape[0], _grad_dtype_out(b.dtype)).to(b.dtype)
    return grad_a, grad_b, None, None, None, None


torch.library.register_autograd("fp8gemm::grouped_moe", _grouped_backward, setup_context=_grouped_setup_context)


def _masked_setup_context(ctx, inputs, output):
    a, b, masked_m, expected_m, a_scale, b_scale, _ = _with_defaults(inputs, 7)
    ctx.save_for_backward(a, b, masked_m, a_scale, b_scale)
    ctx.expected_m = expected_m


def _masked_backward(ctx, grad):
    a, b, masked_m, a_scale, b_scale = ctx.saved_tensors
    need_a, need_b = _need_grads(ctx, a, b)
    grad_a = grad_b = None
    groups, max_m = a.shape[0], a.shape[1]
    # Rows at or past masked_m[g] are outside the product: they carry no gradient.
    valid = (torch.arange(max_m, device=a.device).unsqueeze(0) < masked_m.unsqueeze(1)).unsqueeze(-1)
    if need_a:
        wt, wt_scale = _transposed_weight(b, b_scale)
        wt = _pad_dim(wt, -1, 16)
        grad_a = grouped_moe_masked(_pad_dim(grad, -1, 16).contiguous(), wt, masked_m, ctx.expected_m, None,
                                    wt_scale, out_dtype=_grad_dtype_out(a.dtype))
        grad_a = torch.where(valid, grad_a, 0).to(a.dtype)  # the op leaves those rows unwritten
    if need_b:
        # With dy and x zeroed past masked_m[g] (zeros leave the 1x128 token groups' scales as if the
        # rows were absent), expert g's block of max_m rows is its group.
        dy = (grad * valid).reshape(groups * max_m, -1)
        x = (_dequantize_activation(a, a_scale) * valid).reshape(groups * max_m, -1)
        ends = torch.arange(1, groups + 1, device=a.device, dtype=torch.int32) * max_m
        grad_b = grouped_moe_wgrad(dy, x, ends, groups, _grad_dtype_out(b.dtype)).to(b.dtype)
    return grad_a, grad_b, None, None, None, None, None


torch.library.register_autograd(
    "fp8gemm::grouped_moe_masked", _masked_backward, setup_context=_masked_setup_context
)
