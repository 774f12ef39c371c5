"""Mixture-of-Experts experts on ``fp8gemm::grouped_moe``: :class:`FP8MoEExperts`.

The module computes, for each token t and each of its top-k experts e with routing weight r::

    out[t] = sum_k r[t, k] * down_e( silu(gate_e(x[t])) * up_e(x[t]) )

It takes the routing as input (router logits, top-k selection and weight normalization differ
between model families and stay in the model) and replaces only the expert loop:

1. sort the (token, expert) pairs by expert (stable argsort), gather the token rows in that order;
2. build the int32 cumulative row ends per expert on the device (``searchsorted``), the contiguous
   layout ``grouped_moe`` takes -- no padding, no host round trip;
3. one grouped GEMM for gate and up together (``gate_up_proj`` [E, 2I, H]), SiLU gating, one
   grouped GEMM for down (``down_proj`` [E, H, I]);
4. un-permute (a row gather by the inverse sort order) and sum the top-k rows of each token
   weighted by the routing weights in float32.

Both permutations are row gathers in forward and backward (``_gather_rows``): the gradient of the
token gather is a gather by the inverse order plus a sum over each token's k copies, not torch's
scatter-add (atomics) or accumulating ``index_put``; no step depends on atomics' order.

Nothing in forward reads device data on the host (no ``.item()``/``.tolist()``/``nonzero``), so it
traces with ``torch.compile(fullgraph=True, dynamic=True)`` and shapes do not depend on routing,
which CUDA graphs need. In inference mode the activations are quantized once per token before the
gather (T rows, not T*k), and under torch.compile the quantization of the SiLU-gated activations
is traced so Inductor fuses it into the gating kernel (see ``torch_fp8gemm.nn.quantize_activations``).

Weights follow transformers' fused experts layout (``gate_up_proj`` [E, 2I, H] with gate rows first,
``down_proj`` [E, H, I]; transformers >= 5 ``*Experts`` modules, also the forward signature
``(hidden_states, top_k_index, top_k_weights)``). Adapters: :meth:`FP8MoEExperts.from_fused`,
:meth:`~FP8MoEExperts.from_experts` (separate stacked gate/up/down) and
:meth:`~FP8MoEExperts.from_modules` (a list of per-expert MLP modules, as in Mixtral/Qwen3-MoE/
DeepSeek-V3 in transformers 4.x). Like :class:`~torch_fp8gemm.nn.FP8Linear` it has a training mode
(high-precision Parameters quantized on the fly, autograd) and an inference mode (fp8 buffers plus
``*_scale_inv`` float32 128x128 block scales; dequantized = fp8 * scale).
"""
from __future__ import annotations

from typing import Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from . import ops
from .nn import _check_scale_format_mode, apply_keeping_quantized_dtypes, quantize_activations

__all__ = ["FP8MoEExperts"]

_FP8 = torch.float8_e4m3fn
_PROJECTIONS = ("gate_up_proj", "down_proj")


def _out_dtype_for(dtype: torch.dtype) -> torch.dtype:
    return torch.bfloat16 if dtype == torch.bfloat16 else torch.float32


class _GatherRows(torch.autograd.Function):
    """out = x[index] for an index that takes every row of x exactly `copies` times, with
    `inverse` the positions of x's copies: out[inverse[r * copies + j]] = x[r] for j < copies.
    Backward gathers too (grad_x[r] = sum_j grad_out[inverse[r * copies + j]]), instead of the
    scatter-add that index_select / advanced indexing run in their backward."""

    @staticmethod
    def forward(x, index, inverse, copies):
        return x.index_select(0, index)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, index, inverse, copies = inputs
        ctx.save_for_backward(inverse)
        ctx.copies = copies

    @staticmethod
    def backward(ctx, grad):
        (inverse,) = ctx.saved_tensors
        gathered = grad.index_select(0, inverse)
        if ctx.copies > 1:
            gathered = gathered.view(-1, ctx.copies, grad.shape[-1]).sum(dim=1)
        return gathered, None, None, None


def _gather_rows(x: torch.Tensor, index: torch.Tensor, inverse: torch.Tensor, copies: int = 1) -> torch.Tensor:
    """x[index] (rows), differentiable through row gathers only; see _GatherRows."""
    if not (torch.is_grad_enabled() and x.requires_grad):
        return x.index_select(0, index)
    return _GatherRows.apply(x, index, inverse, copies)


class FP8MoEExperts(nn.Module):
    """The experts of an MoE block (SiLU-gated MLPs) run as two FP8 grouped GEMMs.

    Args:
        num_experts: E.
        hidden_size: H, the model dimension (multiple of 16).
        intermediate_size: I, each expert's MLP width (multiple of 16).
        inference: store fp8 weights with 128x128 block scales (quantized once) instead of
            high-precision Parameters.

    ``forward(hidden_states [..., H], top_k_index [T, k] int, top_k_weights [T, k] or [T, E])``
    returns [..., H] in the input dtype. Expert ids must be in [0, E); they are not checked, since
    that would need a host sync. ``top_k_weights`` of shape [T, E] (dense, DeepSeek-V2 style) are
    gathered at ``top_k_index``.
    """

    def __init__(
        self,
        num_experts: int,
        hidden_size: int,
        intermediate_size: int,
        device=None,
        dtype=None,
        *,
        inference: bool = False,
        scale_format: str = "float32",
    ) -> None:
        super().__init__()
        _check_scale_format_mode("FP8MoEExperts", scale_format, inference)
        if num_experts < 1:
            raise ValueError(f"FP8MoEExperts: expected `num_experts` >= 1, got {num_experts}")
        for name, size in (("hidden_size", hidden_size), ("intermediate_size", intermediate_size)):
            if size % 16 != 0:
                raise ValueError(
                    f"FP8MoEExperts: expected `{name}` to be a multiple of 16 (it is K of one grouped GEMM: "
                    f"16-byte aligned fp8 rows), got {size}"
                )
        self.num_experts, self.hidden_size, self.intermediate_size = num_experts, hidden_size, intermediate_size
        factory = {"device": device, "dtype": dtype}
        self.gate_up_proj = nn.Parameter(torch.empty(num_experts, 2 * intermediate_size, hidden_size, **factory))
        self.down_proj = nn.Parameter(torch.empty(num_experts, hidden_size, intermediate_size, **factory))
        self.reset_parameters()
        self.inference = bool(inference)
        self.scale_format = scale_format
        if self.inference:
            self._quantize_weights_()

    def reset_parameters(self) -> None:
        """nn.Linear's default init, per expert (fan_in = the last dim)."""
        for name in _PROJECTIONS:
            weight = getattr(self, name)
            if weight.dtype != _FP8 and weight.device.type != "meta":
                bound = 1.0 / weight.shape[-1] ** 0.5
                with torch.no_grad():
                    weight.uniform_(-bound, bound)

    # ---------------------------------------------------------------------------------------
    # Adapters

    @classmethod
    def from_fused(
        cls, gate_up_proj: torch.Tensor, down_proj: torch.Tensor, *, inference: bool = False,
        scale_format: str = "float32",
    ) -> "FP8MoEExperts":
        """From transformers' fused layout: ``gate_up_proj`` [E, 2I, H] (gate rows, then up rows) and
        ``down_proj`` [E, H, I]. Parameters are reused as they are in training mode (no copy), e.g.
        ``FP8MoEExperts.from_fused(block.experts.gate_up_proj, block.experts.down_proj)``."""
        if gate_up_proj.dim() != 3 or down_proj.dim() != 3:
            raise ValueError(
                f"FP8MoEExperts.from_fused: expected 3-D `gate_up_proj` [E, 2I, H] and `down_proj` [E, H, I], "
                f"got {tuple(gate_up_proj.shape)} and {tuple(down_proj.shape)}"
            )
        e, two_i, h = gate_up_proj.shape
        if two_i % 2 != 0 or tuple(down_proj.shape) != (e, h, two_i // 2):
            raise ValueError(
                f"FP8MoEExperts.from_fused: expected `down_proj` of shape [E, H, I] = [{e}, {h}, {two_i // 2}] "
                f"to match `gate_up_proj` [E, 2I, H] = {list(gate_up_proj.shape)}, got {list(down_proj.shape)}"
            )
        _check_scale_format_mode("FP8MoEExperts.from_fused", scale_format, inference)
        with torch.device("meta"):
            new = cls(e, h, two_i // 2)
        new.gate_up_proj = _as_parameter(gate_up_proj)
        new.down_proj = _as_parameter(down_proj)
        new.scale_format = scale_format
        if inference:
            new.inference = True
            new._quantize_weights_()
        return new

    @classmethod
    def from_fp8(
        cls,
        gate_up_proj: torch.Tensor,
        gate_up_proj_scale_inv: torch.Tensor,
        down_proj: torch.Tensor,
        down_proj_scale_inv: torch.Tensor,
        *,
        scale_format: str = "float32",
    ) -> "FP8MoEExperts":
        """Inference-mode experts around already quantized fused weights: fp8 ``gate_up_proj`` [E, 2I, H]
        and ``down_proj`` [E, H, I] with their 128x128 block scales (float32, or UE8M0 as
        float8_e8m0fnu, kept as the float32 values they encode), taken without dequantizing (e.g. from
        transformers' fine-grained FP8 experts, which :func:`torch_fp8gemm.convert` swaps this way).
        ``scale_format`` applies to the activations."""
        e, two_i, h = gate_up_proj.shape
        i = two_i // 2
        want = {
            "gate_up_proj": (gate_up_proj, (e, two_i, h)),
            "down_proj": (down_proj, (e, h, i)),
            "gate_up_proj_scale_inv": (gate_up_proj_scale_inv, (e, -(-two_i // 128), -(-h // 128))),
            "down_proj_scale_inv": (down_proj_scale_inv, (e, -(-h // 128), -(-i // 128))),
        }
        for name, (tensor, shape) in want.items():
            fp8 = not name.endswith("_scale_inv")
            if tuple(tensor.shape) != shape or (tensor.dtype == _FP8) != fp8:
                raise ValueError(
                    f"FP8MoEExperts.from_fp8: expected `{name}` of shape {list(shape)} "
                    f"({'float8_e4m3fn' if fp8 else 'a float scale'}), got {tensor.dtype} {list(tensor.shape)}"
                )
        with torch.device("meta"):
            new = cls(e, h, i, inference=True, scale_format=scale_format)
        for name, (tensor, _) in want.items():
            new._buffers[name] = tensor.detach() if name in _PROJECTIONS else tensor.detach().float()
        return new

    @classmethod
    def from_experts(
        cls, w_gate: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor, *, inference: bool = False,
        scale_format: str = "float32",
    ) -> "FP8MoEExperts":
        """From stacked per-expert weights in nn.Linear's [out, in] convention: ``w_gate`` and ``w_up``
        [E, I, H], ``w_down`` [E, H, I]. Gate and up are concatenated into one tensor, so this copies."""
        if w_gate.shape != w_up.shape:
            raise ValueError(
                f"FP8MoEExperts.from_experts: expected `w_up` of the same shape as `w_gate` [E, I, H] = "
                f"{list(w_gate.shape)}, got {list(w_up.shape)}"
            )
        return cls.from_fused(torch.cat([w_gate.detach(), w_up.detach()], dim=1), w_down.detach(), inference=inference,
                              scale_format=scale_format)

    @classmethod
    def from_modules(
        cls,
        experts: Iterable[nn.Module],
        *,
        gate: str = "gate_proj",
        up: str = "up_proj",
        down: str = "down_proj",
        inference: bool = False,
        scale_format: str = "float32",
    ) -> "FP8MoEExperts":
        """From a list of per-expert MLPs with three nn.Linear children (no bias), e.g. a transformers
        4.x ``block.experts`` ModuleList: Qwen3-MoE/DeepSeek-V3 use the default names; Mixtral uses
        ``gate="w1", up="w3", down="w2"``. The weights are stacked, so this copies."""
        experts = list(experts)
        if not experts:
            raise ValueError("FP8MoEExperts.from_modules: expected at least one module in `experts`")
        stacks = []
        for name in (gate, up, down):
            layers = [getattr(expert, name, None) for expert in experts]
            for i, layer in enumerate(layers):
                if not isinstance(layer, nn.Linear) or layer.bias is not None:
                    raise ValueError(
                        f"FP8MoEExperts.from_modules: expected `experts[{i}].{name}` to be an nn.Linear without bias, "
                        f"got {type(layer).__name__ if layer is not None else 'no such attribute'}"
                        + ("" if layer is None or not isinstance(layer, nn.Linear) else " with a bias")
                    )
            stacks.append(torch.stack([layer.weight.detach() for layer in layers]))
        return cls.from_experts(*stacks, inference=inference, scale_format=scale_format)

    def _quantize_weights_(self) -> None:
        """Replace the high-precision Parameters by fp8 + ``<name>_scale_inv`` buffers."""
        for name in _PROJECTIONS:
            weight = self._parameters.pop(name)
            weight_fp8, weight_scale = ops.quantize_128x128(weight.detach(), scale_format=self.scale_format)
            self.register_buffer(name, weight_fp8)
            self.register_buffer(f"{name}_scale_inv", weight_scale)

    # ---------------------------------------------------------------------------------------
    # Forward

    def _grouped(
        self,
        x: torch.Tensor,
        name: str,
        offsets: torch.Tensor,
        out_dtype: torch.dtype,
        rows: Optional[tuple] = None,
    ) -> torch.Tensor:
        """``grouped_moe`` of ``x[rows[0]]`` (or ``x``) with projection ``name``; ``rows`` is the
        (index, inverse, copies) of ``_gather_rows``.

        In inference mode without gradients the activations are quantized before the gather, so the
        T token rows are quantized once instead of T*k times."""
        weight = getattr(self, name)
        if not self.inference or (torch.is_grad_enabled() and x.requires_grad):
            # high-precision activations: the op quantizes them itself and returns their gradient
            scale = getattr(self, f"{name}_scale_inv") if self.inference else None
            a = x if rows is None else _gather_rows(x, *rows)
            return ops.grouped_moe(a, weight, offsets, None, scale, out_dtype)
        x_fp8, x_scale = quantize_activations(x, self.scale_format)
        if rows is not None:
            x_fp8, x_scale = x_fp8.index_select(0, rows[0]), x_scale[rows[0]]
        return ops.grouped_moe(x_fp8, weight, offsets, x_scale, getattr(self, f"{name}_scale_inv"), out_dtype)

    def forward(
        self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor
    ) -> torch.Tensor:
        x = hidden_states.reshape(-1, self.hidden_size)
        tokens, top_k = x.shape[0], top_k_index.shape[-1]
        top_k_index = top_k_index.reshape(tokens, top_k)
        if top_k_weights.shape[-1] == top_k:
            routing = top_k_weights.reshape(tokens, top_k)
        elif top_k_weights.shape[-1] == self.num_experts:
            routing = top_k_weights.reshape(tokens, self.num_experts).gather(1, top_k_index)
        else:
            raise ValueError(
                f"FP8MoEExperts: expected `top_k_weights` of shape [T, k] = [{tokens}, {top_k}] or "
                f"[T, E] = [{tokens}, {self.num_experts}], got {list(top_k_weights.shape)}"
            )

        # 1. sort the T*k (token, expert) pairs by expert; row r of the sorted problem is token order[r] // k
        expert_ids = top_k_index.reshape(-1)
        order = torch.argsort(expert_ids, stable=True)
        token_of_row = order // top_k
        # position of pair p = t * k + j in the sorted problem (the inverse permutation)
        position = torch.empty_like(order).scatter_(0, order, torch.arange(order.shape[0], device=order.device))
        # 2. cumulative row ends per expert, int32 on the device: offsets[e] = #pairs with id <= e
        experts = torch.arange(self.num_experts, device=expert_ids.device, dtype=expert_ids.dtype)
        offsets = torch.searchsorted(expert_ids[order], experts, right=True).to(torch.int32)
        # 3. gate/up grouped GEMM, SiLU gating, down grouped GEMM
        out_dtype = _out_dtype_for(hidden_states.dtype)
        gate_up = self._grouped(x, "gate_up_proj", offsets, out_dtype, rows=(token_of_row, position, top_k))
        gate, up = gate_up.chunk(2, dim=-1)
        hidden = (F.silu(gate) * up).to(hidden_states.dtype)
        down = self._grouped(hidden, "down_proj", offsets, out_dtype)
        # 4. back to (token, k) order, weighted sum over k in float32
        unsorted = _gather_rows(down, position, order).view(tokens, top_k, self.hidden_size)
        out = (unsorted.float() * routing.float().unsqueeze(-1)).sum(dim=1)
        return out.to(hidden_states.dtype).reshape(hidden_states.shape)

    def extra_repr(self) -> str:
        mode = "inference" if self.inference else "training"
        return (
            f"num_experts={self.num_experts}, hidden_size={self.hidden_size}, "
            f"intermediate_size={self.intermediate_size}, mode={mode}"
        )

    def _apply(self, fn, recurse=True):
        """As FP8Linear._apply: dtype conversions leave the fp8 weights and float32 scales alone."""
        if not getattr(self, "inference", False):
            return super()._apply(fn, recurse)
        return apply_keeping_quantized_dtypes(
            self, lambda: super(FP8MoEExperts, self)._apply(fn, recurse), _PROJECTIONS
        )


def _as_parameter(t: torch.Tensor) -> nn.Parameter:
    return t if isinstance(t, nn.Parameter) else nn.Parameter(t)
