"""FP8 all-gather for FSDP2: a training-mode FP8Linear's weight gathered as float8 bytes plus 128x128
block scales instead of bf16/fp32 (about half the bytes of bf16).

``fg.convert(model, fp8_all_gather=True)`` wraps each converted layer's weight in an
:class:`FP8AllGatherWeight`. Before the all-gather every rank quantizes its shard of W per 128x128
block (FSDP2 shards dim 0, so with ``out_features % (128 * shards) == 0`` every block lies on one
rank); after it the layer holds a :class:`GatheredFP8Weight` (the fp8 W and its scales) and its
forward runs the GEMM on it directly. Since the blocks are the unsharded layer's blocks, outputs and
gradients are bit for bit those of the unsharded FP8 layer. Shards that do not fall on 128-row
boundaries are gathered in high precision (one warning per layer shape).

Outside FSDP2 the wrapper behaves as the plain weight (it unwraps itself in every op)."""
from __future__ import annotations

import warnings
from typing import Any, Optional

import torch
from torch.utils._pytree import tree_map_only

from . import ops

_BLOCK = 128
_aten = torch.ops.aten
# Ops whose results are still the (sharded) master weight or a piece of it: FSDP2 builds its shards,
# padding and copies with these, so their outputs keep the wrapper; every other op sees plain tensors.
_KEEP_WRAPPED = {
    _aten.empty_like.default, _aten.new_zeros.default, _aten.new_empty.default, _aten.slice.Tensor,
    _aten.copy_.default, _aten.view.default, _aten.as_strided.default, _aten._to_copy.default,
    _aten._pin_memory.default, _aten.split.Tensor, _aten.clone.default, _aten.detach.default,
    _aten.alias.default, _aten.chunk.default,
}
_warned: set = set()


class FP8AllGatherWeight(torch.Tensor):
    """A high-precision master weight [N, K] that FSDP2 all-gathers as FP8 (see the module docs)."""

    @staticmethod
    def __new__(cls, tensor: torch.Tensor):
        return torch.Tensor._make_wrapper_subclass(
            cls, tensor.size(), strides=tensor.stride(), storage_offset=tensor.storage_offset(),
            dtype=tensor.dtype, layout=tensor.layout, device=tensor.device, requires_grad=tensor.requires_grad)

    def __init__(self, tensor: torch.Tensor):
        self._tensor = tensor

    def __repr__(self) -> str:
        return f"FP8AllGatherWeight({self._tensor!r})"

    def __tensor_flatten__(self):
        return ["_tensor"], None

    @staticmethod
    def __tensor_unflatten__(inner, meta, outer_size, outer_stride):
        return FP8AllGatherWeight(inner["_tensor"])

    def __reduce_ex__(self, protocol):  # saved (torch.save) as the plain weight it stands for
        return (torch.Tensor.clone, (self._tensor,))

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        plain_args, plain_kwargs = tree_map_only(FP8AllGatherWeight, lambda t: t._tensor, (args, kwargs))
        out = func(*plain_args, **plain_kwargs)
        if func not in _KEEP_WRAPPED:
            return out
        return tree_map_only(torch.Tensor, lambda t: t if isinstance(t, FP8AllGatherWeight) else FP8AllGatherWeight(t), out)

    # FSDP2 all-gather extension -------------------------------------------------------------
    def fsdp_pre_all_gather(self, mesh, outer_size, outer_stride, module, mp_policy):
        local = self._tensor
        dtype = getattr(mp_policy, "param_dtype", None)
        if dtype is not None:
            local = local.to(dtype)  # quantize what the bf16 all-gather would have sent
        n = outer_size[0]
        shards = mesh.size()
        if shards == 1:  # nothing is gathered (and FSDP2 then keeps only a first all-gather input)
            return (local,), ("plain", n)
        if len(outer_size) != 2 or n % (_BLOCK * shards) != 0:
            key = (tuple(outer_size), shards)
            if key not in _warned:
                _warned.add(key)
                warnings.warn(
                    f"FP8 all-gather: a weight of shape {list(outer_size)} over {shards} shards does not split "
                    f"into 128-row blocks per shard (needs out_features % {_BLOCK * shards} == 0); "
                    f"it is gathered in {local.dtype} instead", stacklevel=2)
            # every rank sends ceil(n / shards) rows (FSDP2's padded shard), the gather is cut back to n
            rows = -(-n // shards)
            padded = local.new_zeros((rows, *local.shape[1:]))
            padded[: local.shape[0]].copy_(local)
            return (padded,), ("plain", n)
        data, scale = ops.quantize_128x128(local.contiguous())
        return (data, scale), ("fp8", n)

    def fsdp_post_all_gather(self, outputs, metadata, param_dtype, *, out: Optional[torch.Tensor] = None):
        kind, n = metadata
        if kind == "plain":
            (full,) = outputs
            if out is not None:
                return None
            return full.view(-1, *full.shape[1:])[:n], (full,)
        data, scale = outputs
        k = data.shape[-1]
        data = data.view(-1, k)
        scale = scale.view(-1, scale.shape[-1])
        if out is not None:  # later iterations: `out` already views the same all-gather buffers
            return None
        return GatheredFP8Weight(data, scale, param_dtype), (data, scale)


class GatheredFP8Weight(torch.Tensor):
    """The all-gathered weight [N, K] (dtype: the master weight's) as its fp8 bytes and 128x128 block
    scales. FP8Linear computes with it directly; other uses are not supported."""

    @staticmethod
    def __new__(cls, data: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype):
        return torch.Tensor._make_wrapper_subclass(cls, data.size(), dtype=dtype, device=data.device,
                                                   requires_grad=False)

    def __init__(self, data: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype):
        self._data, self._scale = data, scale

    def __repr__(self) -> str:
        return f"GatheredFP8Weight(shape={list(self.shape)}, dtype={self.dtype})"

    def __tensor_flatten__(self):
        return ["_data", "_scale"], self.dtype

    @staticmethod
    def __tensor_unflatten__(inner, dtype, outer_size, outer_stride):
        return GatheredFP8Weight(inner["_data"], inner["_scale"], dtype)

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        # FSDP2 re-views the unsharded parameter (as_strided to its own size) and detaches it.
        if func in (_aten.as_strided.default, _aten.view.default, _aten.detach.default, _aten.alias.default):
            w = args[0]
            return GatheredFP8Weight(w._data, w._scale, w.dtype)
        raise NotImplementedError(
            f"GatheredFP8Weight (an FP8 all-gathered weight) supports only FP8Linear's forward, got {func}")


class _GatheredWeightLinear(torch.autograd.Function):
    """out = x @ W^T (+ bias) on the gathered fp8 W; the same forward and backward kernels (and bits)
    as fp8gemm::dense on the high-precision weight, whose blocks these are."""

    @staticmethod
    def forward(ctx: Any, x, weight: GatheredFP8Weight, bias, out_dtype):
        ctx.save_for_backward(x, weight._data, weight._scale)
        ctx.weight_dtype = weight.dtype
        ctx.bias_dtype = None if bias is None else bias.dtype
        return ops.dense(x, weight._data, None, weight._scale, bias, out_dtype)

    @staticmethod
    def backward(ctx: Any, grad):
        x, data, scale = ctx.saved_tensors
        need_x, need_w, need_bias = ctx.needs_input_grad[:3]
        grad_x = grad_w = grad_bias = None
        if need_x:
            grad_x = ops._dgrad(grad, data.t().contiguous(), scale.t().contiguous(), x.dtype)
        if need_w:
            grad_w = ops._wgrad(grad, x, ctx.weight_dtype)
        if need_bias:
            grad_bias = grad.sum(0, dtype=torch.float32).to(ctx.bias_dtype)
        return grad_x, grad_w, grad_bias, None


def gathered_linear(x: torch.Tensor, weight: GatheredFP8Weight, bias, out_dtype) -> torch.Tensor:
    return _GatheredWeightLinear.apply(x, weight, bias, out_dtype)
