"""Module API: :class:`FP8Linear`, a drop-in ``nn.Linear`` on ``fp8gemm::dense``, and :func:`convert`.

Two modes, chosen when the module is built:

* **training** (default): the weight stays a high-precision ``nn.Parameter`` (the master copy the
  optimizer updates); every forward hands it to ``fp8gemm::dense``, which quantizes the activations
  per 1x128 group and the weight per 128x128 block and has autograd. The state_dict is exactly the
  one of ``nn.Linear`` (``weight``, ``bias``), as in torchao's float8 training.
* **inference**: the weight is quantized once and kept as two buffers, ``weight``
  (float8_e4m3fn [N, K]) and ``weight_scale_inv`` (float32 [ceil(N/128), ceil(K/128)]), plus the
  ``bias`` Parameter. That is the block-FP8 checkpoint format of DeepSeek-V3/R1, Qwen3-FP8 and
  transformers' ``FineGrainedFP8Config``, so such checkpoints load without dequantizing.

About the name ``weight_scale_inv``: despite "inv", the stored number *multiplies* --
dequantized = fp8 * weight_scale_inv. It is the inverse of the quantization factor 448 / amax that
was divided out. DeepSeek-V3's ``inference/kernel.py`` (``weight_dequant``: ``y = x * s``) and
transformers' ``integrations/finegrained_fp8.py`` (``act_quant``: ``s = amax / 448; y = x / s``;
the block GEMM accumulates ``dot(a, b) * a_s * b_s``) both use it that way, and so does
``fp8gemm::dense``'s ``b_scale``: the buffer is passed to the op unchanged.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn

try:  # torch builds without torch.distributed have no DTensor (and no tensor parallelism)
    from torch.distributed.tensor import DTensor as _DTensor
except ImportError:  # pragma: no cover
    _DTensor = None

from . import ops
from .fsdp import FP8AllGatherWeight, GatheredFP8Weight, gathered_linear

__all__ = ["FP8Linear", "ConversionReport", "convert", "plan_conversion", "quantize_activations", "MIN_FEATURES"]

logger = logging.getLogger("torch_fp8gemm")

_FP8 = torch.float8_e4m3fn
_BLOCK = ops.SCALE_BLOCK

# Layers smaller than this in either dimension are left in high precision by `convert`. Estimated
# from H200 rooflines (to be replaced by measured break-even points from the benchmark):
# * out_features (N): eager mode spends a separate pass over the activations to quantize them
#   (~3 bytes/element at ~4 TB/s). The GEMM saves 2*M*N*K*(1/750 - 1/1300) TFLOP-s going from
#   measured bf16 (~750 TFLOP/s) to FP8 (~1300 TFLOP/s) rates, which repays that pass only for
#   N >~ 660; under torch.compile the quantization fuses into the producer and the bar is lower.
# * in_features (K): a GEMM with bf16 output does ~K flops per byte it moves, so it is compute-bound
#   at FP8 speed (~2 PFLOP/s against ~4.8 TB/s) only for K >~ 400; below that both dtypes are
#   limited by memory and FP8 only adds the quantization.
# Small layers are also launch-bound, where the extra quantization kernel costs most.
MIN_FEATURES = 512


def apply_keeping_quantized_dtypes(module: nn.Module, apply: Callable[[], nn.Module], weights) -> nn.Module:
    """Runs ``apply`` (a module's ``nn.Module._apply``) with the fp8 buffers ``weights`` and their
    ``<name>_scale_inv`` float32 scales viewed as same-width integers, so dtype conversions pass them
    by while device moves still copy them bit for bit."""
    hidden = {}
    for name in weights:
        hidden[name] = (_FP8, torch.uint8)
        hidden[f"{name}_scale_inv"] = (torch.float32, torch.int32)
    for name, (_, as_int) in hidden.items():
        module._buffers[name] = module._buffers[name].view(as_int)
    try:
        return apply()
    finally:
        for name, (dtype, _) in hidden.items():
            module._buffers[name] = module._buffers[name].view(dtype)


def _check_scale_format_mode(where: str, scale_format: str, inference: bool) -> None:
    ops._check_scale_format(where, scale_format)
    if scale_format == "ue8m0" and not inference:
        raise ValueError(
            f"{where}: `scale_format='ue8m0'` needs `inference=True` (the training recipe quantizes inside the "
            "GEMM ops, with float32 scales)"
        )


def _is_dtensor(t) -> bool:
    return _DTensor is not None and isinstance(t, _DTensor)


def _check_fp8_all_gather(where: str, fp8_all_gather: bool, inference: bool) -> None:
    if fp8_all_gather and inference:
        raise ValueError(
            f"{where}: `fp8_all_gather=True` needs `inference=False` (it gathers a training-mode master "
            f"weight as FP8; an inference-mode layer already holds an fp8 weight)"
        )


def _check_features(in_features: int, out_features: int, *, where: str = "FP8Linear") -> None:
    """The kernels' alignment rules, as ValueErrors naming the argument (see README, "Shapes")."""
    if in_features % 16 != 0:
        raise ValueError(
            f"{where}: expected `in_features` to be a multiple of 16 (K: 16-byte aligned fp8 rows for TMA), "
            f"got {in_features}"
        )
    if out_features % 8 != 0:
        raise ValueError(
            f"{where}: expected `out_features` to be a multiple of 8 (N: 16-byte aligned bf16 output rows), "
            f"got {out_features}"
        )


def _out_dtype_for(dtype: torch.dtype) -> torch.dtype:
    """The op writes bf16 or fp32; anything but bf16 (fp32, fp16) is computed in fp32 and cast."""
    return torch.bfloat16 if dtype == torch.bfloat16 else torch.float32


def quantize_activations(x: torch.Tensor, scale_format: str = "float32") -> tuple[torch.Tensor, torch.Tensor]:
    """1x128 quantization of activations x [M, K] for ``fp8gemm::dense`` / ``grouped_moe``.

    Eager: the ``fp8gemm::quantize_1x128`` op (a CUDA kernel on the GPU). Under torch.compile: the
    same recipe in plain torch ops, which Inductor fuses into the kernel that produces ``x`` (the
    preceding norm, activation or gating) instead of spending a separate pass over memory. The
    scales are written M-major (token index fastest), the layout the GPU kernel loads; it uses them
    in place when M % 4 == 0 and otherwise copies them (M * K/128 floats).
    Padding the rows to 4 here would add a guard on M % 4 that torch.export rejects for a dynamic M.
    Results can differ from eager in the last fp8 bit where the fused producer keeps fp32 instead
    of rounding to bf16 first.
    """
    m, k = x.shape
    if scale_format == "ue8m0":  # power-of-two scales: torch ops in eager and traced code alike
        return ops.quantize_1x128(x, scale_format="ue8m0")
    if not torch.compiler.is_compiling() or not isinstance(k, int) or k % _BLOCK != 0:
        # K % 128 != 0 stays on the op: torch 2.14.1's Inductor C++ backend miscompiled the padded
        # variant of this recipe inside the MoE module (the fp8 store loop covered only the first
        # 128 columns), so only whole 128-element groups -- no padding, no slicing -- are traced.
        return ops.quantize_1x128(x)
    k_blocks = k // _BLOCK
    groups = x.float().reshape(m, k_blocks, _BLOCK)
    # 448 = largest finite e4m3; the 1e-12 floor gives an all-zero group a finite scale (as the op).
    # Literals, not module-level floats: Dynamo would trace those as inputs and compile twice.
    scale = groups.abs().amax(dim=-1).clamp(min=1e-12) / 448.0
    # Cast to fp8 on the [M, K/128, 128] view, then flatten: Inductor then emits one kernel that reads
    # x once and writes values and (M-major) scales. Flattening first (bf16/fp32 [M, K], then cast)
    # made it split off the cast into a second kernel that reads x again: 118 vs 72 us at 4096 x
    # 18432 on the H200, 46% vs 75% of the copy rate (bench/compiled_quant_variants.py).
    values = (groups / scale.unsqueeze(-1)).clamp(-448.0, 448.0).to(_FP8).reshape(m, k)
    return values, scale.t().contiguous().t()  # M-major


def dequantize_128x128(weight: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """fp8 [..., N, K] with scales [..., ceil(N/128), ceil(K/128)] -> ``dtype`` (fp8 * scale)."""
    n, k = weight.shape[-2:]
    s = scale.float().repeat_interleave(_BLOCK, dim=-2)[..., :n, :].repeat_interleave(_BLOCK, dim=-1)[..., :k]
    return (weight.float() * s).to(dtype)


class FP8Linear(nn.Linear):
    """``nn.Linear`` computed by ``fp8gemm::dense`` (FP8 e4m3, 1x128 activation / 128x128 weight scales).

    Same constructor as ``nn.Linear`` plus ``inference``. Inputs may have any leading shape
    ``[..., in_features]``; the output has the input's dtype. Requires ``in_features % 16 == 0`` and
    ``out_features % 8 == 0`` (the kernels' alignment); :func:`convert` skips layers that break it.

    Training mode (``inference=False``): ``weight`` is the usual high-precision Parameter, quantized
    on the fly in every forward; gradients flow to the input, the weight and the bias.

    Inference mode (``inference=True``): ``weight`` is a float8_e4m3fn buffer and
    ``weight_scale_inv`` a float32 buffer of 128x128 block scales (dequantized = fp8 * scale),
    quantized once when the module is built. Loading a state_dict with an fp8 ``weight`` and its
    ``weight_scale_inv`` copies both as they are; loading a high-precision ``weight`` quantizes it.
    ``module.to(dtype)`` / ``.half()`` leave both buffers' dtypes alone (only devices change).
    Gradients still flow to the input (and bias) if it requires grad, e.g. for adapters on a frozen
    FP8 base model.

    torch.compile: the forward traces with ``fullgraph=True`` and dynamic leading dims (one graph
    for all batch and sequence sizes). In inference mode the activation quantization is traced as
    plain torch ops (:func:`quantize_activations`) so Inductor fuses it into the producer of the
    input, e.g. the preceding RMSNorm.

    ``scale_format="ue8m0"`` (inference mode only): power-of-two scales for the weight this module
    quantizes and for the activations it quantizes without gradients (DeepSeek-V3.1 and later);
    with gradients enabled the op quantizes the input itself, with float32 scales.

    ``fp8_all_gather=True`` (training mode only): under FSDP2's ``fully_shard`` the weight is
    all-gathered as fp8 bytes plus 128x128 block scales, each rank quantizing its own shard (see
    :mod:`torch_fp8gemm.fsdp`); the weight becomes a new Parameter (an
    :class:`~torch_fp8gemm.fsdp.FP8AllGatherWeight` over the same storage), so enable it before
    building optimizers.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device=None,
        dtype=None,
        *,
        inference: bool = False,
        scale_format: str = "float32",
        fp8_all_gather: bool = False,
    ) -> None:
        _check_features(in_features, out_features)
        _check_scale_format_mode("FP8Linear", scale_format, inference)
        _check_fp8_all_gather("FP8Linear", fp8_all_gather, inference)
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.inference = bool(inference)
        self.scale_format = scale_format
        if self.inference:
            self._quantize_weight_()
        if fp8_all_gather:
            self.enable_fp8_all_gather()

    @property
    def fp8_all_gather(self) -> bool:
        weight = self._parameters.get("weight")
        local = getattr(weight, "_local_tensor", weight)  # a DTensor shard under FSDP2
        return isinstance(local, (FP8AllGatherWeight, GatheredFP8Weight))

    def enable_fp8_all_gather(self) -> None:
        """Let FSDP2 all-gather this (training-mode) layer's weight as FP8 (see the class docs)."""
        _check_fp8_all_gather("FP8Linear.enable_fp8_all_gather", True, self.inference)
        weight = self._parameters["weight"]
        if not isinstance(weight, FP8AllGatherWeight):
            self.weight = nn.Parameter(FP8AllGatherWeight(weight.data), requires_grad=weight.requires_grad)

    @classmethod
    def from_linear(cls, linear: nn.Linear, inference: bool = False, scale_format: str = "float32") -> "FP8Linear":
        """Build an FP8Linear from ``linear`` without copying in training mode.

        The module is constructed on the meta device (no allocation, no random init) and then takes
        ``linear``'s own ``weight`` and ``bias`` Parameters, so optimizers, weight tying and FSDP
        wrappers that hold them keep working. With ``inference=True`` the weight is quantized once
        (on its current device) into the ``weight``/``weight_scale_inv`` buffers; ``bias`` is still
        the original Parameter.
        """
        if not isinstance(linear, nn.Linear):
            raise ValueError(
                f"FP8Linear.from_linear: expected `linear` to be an nn.Linear, got {type(linear).__name__}"
            )
        _check_scale_format_mode("FP8Linear.from_linear", scale_format, inference)
        with torch.device("meta"):
            new = cls(linear.in_features, linear.out_features, bias=False)
        new.weight = linear.weight
        new.bias = linear.bias
        new.scale_format = scale_format
        new.train(linear.training)
        if inference:
            new.inference = True
            new._quantize_weight_()
        return new

    @classmethod
    def from_fp8(
        cls,
        weight: torch.Tensor,
        weight_scale_inv: torch.Tensor,
        bias: Optional[torch.Tensor] = None,
        *,
        scale_format: str = "float32",
    ) -> "FP8Linear":
        """An inference-mode FP8Linear around an already quantized weight: fp8 ``weight`` [N, K] and its
        128x128 block scales ``weight_scale_inv`` [ceil(N/128), ceil(K/128)] (float32, or UE8M0 as
        float8_e8m0fnu, kept as the float32 powers of two they encode), taken without dequantizing
        (e.g. from transformers' fine-grained FP8 layers, which :func:`convert` swaps this way).
        ``scale_format`` applies to the activations."""
        n, k = weight.shape
        if weight.dtype != _FP8 or tuple(weight_scale_inv.shape) != (-(-n // _BLOCK), -(-k // _BLOCK)):
            raise ValueError(
                f"FP8Linear.from_fp8: expected a float8_e4m3fn `weight` [N, K] with `weight_scale_inv` "
                f"[ceil(N/128), ceil(K/128)], got {weight.dtype} {list(weight.shape)} and {list(weight_scale_inv.shape)}"
            )
        with torch.device("meta"):
            new = cls(k, n, bias=False)
        del new.weight
        new.register_buffer("weight", weight.detach())
        new.register_buffer("weight_scale_inv", weight_scale_inv.detach().float())
        new.bias = bias if bias is None or isinstance(bias, nn.Parameter) else nn.Parameter(bias)
        new.inference = True
        new.scale_format = scale_format
        return new

    def _quantize_weight_(self) -> None:
        """Replace the high-precision weight Parameter by fp8 + scale buffers (inference mode)."""
        weight = self._parameters.pop("weight")
        weight_fp8, weight_scale = ops.quantize_128x128(weight.detach(), scale_format=self.scale_format)
        self.register_buffer("weight", weight_fp8)
        self.register_buffer("weight_scale_inv", weight_scale)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.dim() == 0 or input.shape[-1] != self.in_features:
            raise ValueError(
                f"FP8Linear: expected `input` of shape [..., in_features={self.in_features}], "
                f"got {list(input.shape)}"
            )
        if _is_dtensor(self.weight) or _is_dtensor(input):
            return self._tensor_parallel_forward(input)
        x = input.reshape(-1, self.in_features)
        out_dtype = _out_dtype_for(input.dtype)
        if isinstance(self.weight, GatheredFP8Weight):  # FSDP2 gathered it as fp8 (fp8_all_gather)
            out = gathered_linear(x, self.weight, self.bias, out_dtype)
        elif not self.inference:
            out = ops.dense(x, self.weight, None, None, self.bias, out_dtype)
        elif torch.is_grad_enabled() and input.requires_grad:
            # Let the op quantize the activations: it then also returns their gradient.
            out = ops.dense(x, self.weight, None, self.weight_scale_inv, self.bias, out_dtype)
        else:
            x_fp8, x_scale = quantize_activations(x, self.scale_format)
            out = ops.dense(x_fp8, self.weight, x_scale, self.weight_scale_inv, self.bias, out_dtype)
        out = out.to(input.dtype)
        # A 2-D input returns the GEMM's own output, not a view of it (FSDP2 warns about views: an
        # in-place op on one would skip its backward hook); inputs with more dims get the [..., N] view.
        return out if input.dim() == 2 else out.reshape(*input.shape[:-1], self.out_features)

    def _tensor_parallel_forward(self, input: torch.Tensor) -> torch.Tensor:
        """ColwiseParallel (weight Shard(0): out_features split) or RowwiseParallel (weight Shard(1):
        in_features split) on a 1-D mesh: each rank runs the GEMM on its local shards, every 128x128
        weight block and 1x128 activation group lying on one rank (the splits must fall on 128-element
        boundaries), and returns its columns (Shard(-1)) or its partial sum (Partial(); the bias is
        added to the reduced sum)."""
        from torch.distributed.tensor import DTensor, Partial, Shard

        name = f"FP8Linear(in_features={self.in_features}, out_features={self.out_features})"
        weight = self.weight
        if self.inference or not _is_dtensor(weight) or weight.device_mesh.ndim != 1 or len(weight.placements) != 1:
            raise ValueError(
                f"{name}: tensor parallelism needs a training-mode layer whose weight is a DTensor on a 1-D "
                f"mesh (parallelize_module with ColwiseParallel or RowwiseParallel), got "
                f"{'an inference-mode layer' if self.inference else type(weight).__name__ + ' weight'}"
            )
        mesh, (placement,) = weight.device_mesh, weight.placements
        shards = mesh.size()
        if placement not in (Shard(0), Shard(1)):
            raise ValueError(f"{name}: tensor parallelism shards the weight along dim 0 or 1, got {placement}")
        dim, size = (0, self.out_features) if placement == Shard(0) else (1, self.in_features)
        if size % (_BLOCK * shards) != 0:
            what = "out_features" if dim == 0 else "in_features"
            raise ValueError(
                f"{name}: {'Colwise' if dim == 0 else 'Rowwise'}Parallel over {shards} ranks splits {what}={size} into "
                f"{size / shards:g} per rank; the 128x128 scale blocks need whole blocks per rank "
                f"({what} % {_BLOCK * shards} == 0)"
            )
        x = input.to_local() if _is_dtensor(input) else input
        local_k = self.in_features // (shards if dim == 1 else 1)
        if x.shape[-1] != local_k:
            raise ValueError(f"{name}: expected this rank's input [..., {local_k}], got {list(x.shape)}")
        bias = (self.bias.to_local() if _is_dtensor(self.bias) else self.bias) if dim == 0 else None
        out = ops.dense(x.reshape(-1, local_k), weight.to_local(), None, None, bias, _out_dtype_for(x.dtype))
        out = out.to(x.dtype).reshape(*x.shape[:-1], -1)
        if dim == 0:
            return DTensor.from_local(out, mesh, [Shard(out.dim() - 1)], run_check=False)
        out = DTensor.from_local(out, mesh, [Partial()], run_check=False)
        # the replicated bias joins after the partial sums are reduced (DTensor reduces them first)
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        mode = "inference" if self.inference else "training"
        ue8m0 = ", scale_format=ue8m0" if getattr(self, "scale_format", "float32") == "ue8m0" else ""
        gather = ", fp8_all_gather=True" if self.fp8_all_gather else ""
        return f"{super().extra_repr()}, mode={mode}{ue8m0}{gather}"

    # ---------------------------------------------------------------------------------------
    # Checkpoints and dtype conversion

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        """Accept both checkpoint flavours in both modes, never dequantizing an fp8 checkpoint
        into an inference module.

        * fp8 ``weight`` + ``weight_scale_inv``: copied as they are (inference); dequantized into
          the master weight (training).
        * high-precision ``weight`` (a plain nn.Linear checkpoint): copied (training); quantized
          per 128x128 block (inference).
        Inconsistent entries are reported through ``error_msgs``, so ``load_state_dict`` raises
        its usual RuntimeError listing every problem.
        """
        weight_key, scale_key = prefix + "weight", prefix + "weight_scale_inv"
        weight = state_dict.get(weight_key)
        scale = state_dict.get(scale_key)
        if weight is not None and weight.dtype == _FP8:
            if scale is None:
                error_msgs.append(
                    f"{type(self).__name__}: `{weight_key}` is float8_e4m3fn but `{scale_key}` is missing; "
                    f"the 128x128 block scales are needed to interpret it"
                )
                del state_dict[weight_key]
            elif not self.inference:
                master = self._parameters["weight"]
                state_dict[weight_key] = dequantize_128x128(weight, scale, master.dtype)
                del state_dict[scale_key]
        elif weight is not None:
            if scale is not None:
                error_msgs.append(
                    f"{type(self).__name__}: `{scale_key}` goes with a float8_e4m3fn `{weight_key}`, "
                    f"got a {weight.dtype} weight"
                )
                del state_dict[scale_key]
            elif self.inference:
                if self.weight.device.type != "meta":
                    weight = weight.to(self.weight.device)
                state_dict[weight_key], state_dict[scale_key] = ops.quantize_128x128(weight)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def _apply(self, fn, recurse=True):
        """Keep the fp8 weight and its float32 scales out of dtype conversions.

        ``model.to(torch.bfloat16)`` / ``.half()`` convert every floating-point buffer, which would
        turn the fp8 weight into bf16 and round the scales. The buffers go through ``fn`` viewed as
        integers of the same width (so device moves, ``to_empty`` and ``share_memory_`` still
        apply, bit for bit) and are viewed back afterwards.
        """
        if not getattr(self, "inference", False):  # also while nn.Linear.__init__ runs
            return super()._apply(fn, recurse)
        return apply_keeping_quantized_dtypes(self, lambda: super(FP8Linear, self)._apply(fn, recurse), ("weight",))


# --------------------------------------------------------------------------------------------
# Conversion


@dataclass
class ConversionReport:
    """What :func:`convert` did: fully qualified names of converted layers, and skipped ones with why."""

    converted: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    inference: bool = False
    converted_experts: list[str] = field(default_factory=list)  # transformers FP8Experts -> FP8MoEExperts

    def __str__(self) -> str:
        mode = "inference" if self.inference else "training"
        lines = [
            f"torch_fp8gemm.convert: {len(self.converted)} nn.Linear -> FP8Linear ({mode}), "
            f"{len(self.skipped)} skipped"
        ]
        if self.converted_experts:
            lines.append(f"  {len(self.converted_experts)} transformers FP8Experts -> FP8MoEExperts (inference): "
                         + ", ".join(self.converted_experts))
        lines += [f"  skipped {fqn or '<root>'}: {reason}" for fqn, reason in self.skipped.items()]
        return "\n".join(lines)


def _is_transformers_fp8_linear(module: nn.Module) -> bool:
    """transformers' fine-grained FP8 layer (transformers.integrations.finegrained_fp8.FP8Linear):
    an nn.Linear subclass holding an fp8 ``weight`` with block scales ``weight_scale_inv``."""
    return (type(module).__name__ == "FP8Linear" and type(module).__module__.startswith("transformers.")
            and hasattr(module, "weight_scale_inv") and hasattr(module, "block_size"))


def _transformers_fp8_scheme_reason(module: nn.Module) -> Optional[str]:
    """What transformers' FP8 modules (FP8Linear, FP8Experts) must share with ours to be taken over
    as they are: 128x128 weight blocks and activations scaled at run time."""
    kind = type(module).__name__
    if tuple(module.block_size or ()) != (128, 128):
        return f"transformers {kind} with block_size={module.block_size}: only 128x128 blocks are taken"
    if getattr(module, "activation_scheme", "dynamic") != "dynamic":
        return f"transformers {kind} with static activation scales: only dynamic activation scaling is taken"
    return None


def _transformers_fp8_reason(module: nn.Module) -> Optional[str]:
    """Why a transformers FP8Linear cannot be taken over as it is (its fp8 weight and scales, copied)."""
    reason = _transformers_fp8_scheme_reason(module)
    if reason is not None:
        return reason
    if module.weight.dtype != _FP8:
        return f"transformers FP8Linear holding a {module.weight.dtype} weight (not fp8)"
    return None


def _skip_reason(module: nn.Module, fqn: str, module_filter_fn, min_features: int) -> Optional[str]:
    """Why ``module`` stays as it is, or None if it converts. The order is the order of authority:
    the user's filter, then what the kernels cannot run, then what would not be faster."""
    if isinstance(module, FP8Linear):
        return "already an FP8Linear"
    fp8_already = _is_transformers_fp8_linear(module)
    reason = _transformers_fp8_reason(module) if fp8_already else None
    if reason is not None:
        return reason
    if type(module) is not nn.Linear and not fp8_already:
        # Owners of Linear subclasses (e.g. nn.MultiheadAttention's out_proj) may read .weight directly.
        return f"{type(module).__name__} is a subclass of nn.Linear; only plain nn.Linear is converted"
    if module_filter_fn is not None and not module_filter_fn(module, fqn):
        return "excluded by module_filter_fn"
    k, n = module.in_features, module.out_features
    if k % 16 != 0:
        return f"in_features={k} is not a multiple of 16 (kernel alignment)"
    if n % 8 != 0:
        return f"out_features={n} is not a multiple of 8 (kernel alignment)"
    if not fp8_already and (k < min_features or n < min_features):  # an fp8 layer is taken at any size
        return f"too small for FP8 to win: in_features={k}, out_features={n}, both must be >= {min_features}"
    return None


def _is_transformers_fp8_experts(module: nn.Module) -> bool:
    return type(module).__name__ == "FP8Experts" and type(module).__module__.startswith("transformers.")


def _experts_skip_reason(module: nn.Module) -> Optional[str]:
    """Why a transformers FP8Experts module is kept: what FP8MoEExperts does not compute the same way."""
    reason = _transformers_fp8_scheme_reason(module)
    if reason is not None:
        return reason
    if not getattr(module, "has_gate", False) or getattr(module, "has_bias", False):
        return "transformers FP8Experts without a gate or with biases: FP8MoEExperts runs gated experts without bias"
    if any(getattr(module, name, None) is not None for name in ("swiglu_alpha", "swiglu_limit", "gate_softcap", "up_softcap")):
        return "transformers FP8Experts with a clamped or softcapped SwiGLU: FP8MoEExperts computes silu(gate) * up"
    probe = torch.linspace(-4, 4, 17)
    try:
        silu = torch.allclose(module.act_fn(probe), torch.nn.functional.silu(probe))
    except Exception:  # noqa: BLE001 - an activation that does not take a tensor is not SiLU
        silu = False
    if not silu:
        return "transformers FP8Experts whose activation is not SiLU"
    if getattr(module, "gate_up_proj", None) is None or module.gate_up_proj.dtype != _FP8:
        return "transformers FP8Experts without fp8 fused gate_up_proj weights"
    return None


def _linear_layers(model: nn.Module):
    """(fqn, module) for every nn.Linear (subclasses included), each module once."""
    return [(fqn, m) for fqn, m in model.named_modules() if isinstance(m, nn.Linear)]


def plan_conversion(
    model: nn.Module,
    *,
    module_filter_fn: Optional[Callable[[nn.Module, str], bool]] = None,
    inference: bool = False,
    min_features: int = MIN_FEATURES,
) -> ConversionReport:
    """Dry run of :func:`convert`: the report of what it would convert and skip; ``model`` is untouched."""
    report = ConversionReport(inference=inference)
    for fqn, module in _linear_layers(model):
        reason = _skip_reason(module, fqn, module_filter_fn, min_features)
        if reason is None:
            report.converted.append(fqn)
        else:
            report.skipped[fqn] = reason
    for fqn, module in model.named_modules():
        if fqn and _is_transformers_fp8_experts(module):  # a child: convert replaces it in its parent
            reason = ("excluded by module_filter_fn" if module_filter_fn is not None and not module_filter_fn(module, fqn)
                      else _experts_skip_reason(module))
            if reason is None:
                report.converted_experts.append(fqn)
            else:
                report.skipped[fqn] = reason
    return report


def _keep_inputs(module: nn.Module, args):
    return None


def _disable_fused_fast_path(layer: nn.TransformerEncoderLayer) -> None:
    """nn.TransformerEncoderLayer in eval mode without grad runs a fused kernel that reads
    ``linear1.weight`` / ``linear2.weight`` itself and never calls the FP8Linear modules; a module
    with a forward pre-hook makes it take the regular path (its own rule), which calls them."""
    if not getattr(layer, "_fp8gemm_fast_path_disabled", False):
        layer.register_forward_pre_hook(_keep_inputs)
        layer._fp8gemm_fast_path_disabled = True


def convert(
    model: nn.Module,
    *,
    module_filter_fn: Optional[Callable[[nn.Module, str], bool]] = None,
    inference: bool = False,
    min_features: int = MIN_FEATURES,
    scale_format: str = "float32",
    fp8_all_gather: bool = False,
) -> nn.Module:
    """Swap every eligible ``nn.Linear`` in ``model`` for an :class:`FP8Linear`, in place.

    Args:
        module_filter_fn: ``fn(module, fqn) -> bool``, called for each plain nn.Linear; return False
            to keep a layer in high precision (e.g. ``lambda m, fqn: fqn != "lm_head"``).
        inference: build inference-mode layers (fp8 weight + ``weight_scale_inv`` buffers,
            quantized now) instead of training-mode layers (the original Parameters, reused).
        min_features: layers with ``in_features`` or ``out_features`` below this stay in high
            precision because FP8 would not be faster (see :data:`MIN_FEATURES`); 0 disables it.
        scale_format: ``"ue8m0"`` (with ``inference=True``) gives the layers power-of-two scales for
            their weights and activations (see :class:`FP8Linear`).
        fp8_all_gather: training mode: FSDP2 all-gathers the converted layers' weights as FP8 (see
            :class:`FP8Linear`; their weights become new Parameters over the same storage).

    Layers the kernels cannot take (``in_features % 16``, ``out_features % 8``) and Linear subclasses
    are always skipped. Returns ``model`` (or the new module when ``model`` itself is a converted
    nn.Linear). The :class:`ConversionReport` is logged at INFO level on the ``torch_fp8gemm``
    logger and attached as ``model.fp8gemm_conversion_report``; :func:`plan_conversion` returns the
    same report without converting. A layer shared by several parents is converted once and
    stays shared. In inference mode a weight tied to another module (e.g. ``lm_head`` and the
    embedding) gets its own fp8 copy while the other module keeps the original; exclude such layers
    with ``module_filter_fn`` (training mode reuses the Parameter, so ties hold).
    """
    _check_scale_format_mode("convert", scale_format, inference)
    _check_fp8_all_gather("convert", fp8_all_gather, inference)
    report = plan_conversion(
        model, module_filter_fn=module_filter_fn, inference=inference, min_features=min_features
    )
    converted = set(report.converted)
    eligible = {id(m) for fqn, m in _linear_layers(model) if fqn in converted}
    replaced: dict[int, FP8Linear] = {}

    def swap(module: nn.Module) -> nn.Module:
        if id(module) not in replaced:
            if _is_transformers_fp8_linear(module):
                replaced[id(module)] = FP8Linear.from_fp8(module.weight, module.weight_scale_inv, module.bias,
                                                          scale_format=scale_format)
            else:
                replaced[id(module)] = FP8Linear.from_linear(module, inference=inference, scale_format=scale_format)
                if fp8_all_gather:
                    replaced[id(module)].enable_fp8_all_gather()
        return replaced[id(module)]

    if id(model) in eligible:
        model = swap(model)
    else:
        for parent in list(model.modules()):
            for name, child in list(parent._modules.items()):  # every name, even of a repeated child
                if id(child) in eligible:
                    setattr(parent, name, swap(child))
                    if isinstance(parent, nn.TransformerEncoderLayer):
                        _disable_fused_fast_path(parent)
    if report.converted_experts:
        from .moe import FP8MoEExperts  # moe imports this module

        for fqn in report.converted_experts:
            old = model.get_submodule(fqn)
            new = FP8MoEExperts.from_fp8(old.gate_up_proj, old.gate_up_proj_scale_inv, old.down_proj,
                                         old.down_proj_scale_inv, scale_format=scale_format)
            parent_name, _, name = fqn.rpartition(".")
            setattr(model.get_submodule(parent_name), name, new)
    model.fp8gemm_conversion_report = report
    logger.info("%s", report)
    return model
