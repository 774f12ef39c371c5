"""Loading FP8 checkpoints (DeepSeek-V3/R1, Qwen3-FP8 and similar) into converted models.

Such checkpoints store each linear layer's ``weight`` in float8_e4m3fn with ``weight_scale_inv``
[ceil(N/128), ceil(K/128)] (float32, or UE8M0 as float8_e8m0fnu), and MoE experts one by one
(``...experts.{i}.gate_proj.weight`` ...). :func:`load_fp8_checkpoint` copies them bit for bit into a
model converted with ``fg.convert(model, inference=True)`` (on the meta device or not), stacking
per-expert tensors into :class:`~torch_fp8gemm.moe.FP8MoEExperts` buffers. It reads every shard's
header first and checks every key, shape and dtype before it copies anything (no half-loaded model),
then loads one shard at a time.
"""
import json
import os
import re
from collections import namedtuple
from typing import Callable, Mapping, Optional, Union

import torch
from torch import nn

from .moe import FP8MoEExperts

LoadResult = namedtuple("LoadResult", ["missing_keys", "unexpected_keys"])

_FP8 = torch.float8_e4m3fn
_E8M0 = torch.float8_e8m0fnu
# safetensors dtype names -> torch dtypes (what the header says, read before any data)
_ST_DTYPES = {
    "F8_E4M3": _FP8, "F8_E8M0": _E8M0, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F64": torch.float64, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}
# Per-expert keys: <experts module>.<i>.<projection>.<weight | weight_scale_inv>
_EXPERT_KEY = re.compile(r"^(?P<prefix>.+)\.(?P<index>\d+)\.(?P<proj>gate_proj|up_proj|down_proj)\.(?P<what>weight|weight_scale_inv)$")


class _Source:
    """One shard: its keys with (shape, dtype) from the header, and a loader of its tensors."""

    def __init__(self, name, entries, load):
        self.name, self.entries, self.load = name, entries, load


def _safetensors():
    try:
        from safetensors import safe_open
    except ImportError as exc:
        raise ImportError(
            "load_fp8_checkpoint: reading .safetensors files needs the `safetensors` package "
            "(`pip install safetensors`); a state dict in memory needs nothing else"
        ) from exc
    return safe_open


def _file_source(path):
    safe_open = _safetensors()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load_fp8_checkpoint: shard {path!r} does not exist")
    entries = {}
    with safe_open(path, framework="pt") as f:
        for key in f.keys():
            view = f.get_slice(key)
            dtype = _ST_DTYPES.get(view.get_dtype())
            if dtype is None:
                raise ValueError(f"load_fp8_checkpoint: `{key}` in {path!r} has an unsupported dtype {view.get_dtype()}")
            entries[key] = (tuple(view.get_shape()), dtype)

    def load(keys):
        with safe_open(path, framework="pt") as f:
            for key in keys:
                # own, allocator-aligned memory: a tensor read from the file may start at any byte,
                # and the GEMMs' TMA loads need 16-byte aligned fp8 rows
                yield key, f.get_tensor(key).clone()

    return _Source(path, entries, load)


def _sources(checkpoint):
    if isinstance(checkpoint, Mapping):
        state = dict(checkpoint)
        entries = {k: (tuple(v.shape), v.dtype) for k, v in state.items()}
        return [_Source("<state dict>", entries, lambda keys: ((k, state[k]) for k in keys))]
    path = os.fspath(checkpoint)
    if os.path.isdir(path):
        index = os.path.join(path, "model.safetensors.index.json")
        if os.path.isfile(index):
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
            shards = sorted(set(weight_map.values()))
            missing = [s for s in shards if not os.path.isfile(os.path.join(path, s))]
            if missing:
                key = next(k for k, s in weight_map.items() if s == missing[0])
                raise FileNotFoundError(
                    f"load_fp8_checkpoint: shard {missing[0]!r} named in {index!r} (for `{key}`, ...) does not exist"
                )
            return [_file_source(os.path.join(path, s)) for s in shards]
        files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
        if not files:
            raise FileNotFoundError(f"load_fp8_checkpoint: {path!r} has no model.safetensors.index.json and no .safetensors file")
        return [_file_source(os.path.join(path, f)) for f in files]
    if path.endswith(".safetensors"):
        return [_file_source(path)]
    raise ValueError(
        f"load_fp8_checkpoint: expected `checkpoint` to be a directory of safetensors shards, a .safetensors "
        f"file or a state dict, got {checkpoint!r}"
    )


def _renamer(key_map):
    if key_map is None:
        return lambda key: key
    if callable(key_map):
        return key_map
    rules = [(re.compile(pattern), replacement) for pattern, replacement in key_map.items()]

    def rename(key):
        for pattern, replacement in rules:
            key = pattern.sub(replacement, key)
        return key

    return rename


def _is_scale(name):
    return name.endswith("_scale_inv")


def _check_dtype(key, target_dtype, dtype, scale):
    """The rules of a bit-for-bit load: fp8 into fp8, float32 or UE8M0 scales into float32 scales."""
    if target_dtype == _FP8 and dtype != _FP8:
        raise ValueError(
            f"load_fp8_checkpoint: expected `{key}` to be float8_e4m3fn (the converted layer stores fp8 "
            f"values next to its weight_scale_inv), got {dtype}"
        )
    if scale and dtype not in (torch.float32, _E8M0):
        raise ValueError(f"load_fp8_checkpoint: expected `{key}` (a block scale) to be float32 or float8_e8m0fnu, got {dtype}")


def _as_float32_scale(tensor):
    return tensor.float() if tensor.dtype == _E8M0 else tensor


def load_fp8_checkpoint(
    model: nn.Module,
    checkpoint: Union[str, os.PathLike, Mapping[str, torch.Tensor]],
    *,
    strict: bool = True,
    key_map: Optional[Union[Callable[[str], Optional[str]], Mapping[str, str]]] = None,
) -> LoadResult:
    """Load an FP8 checkpoint into ``model`` (converted with ``fg.convert(model, inference=True)``).

    Args:
        checkpoint: a directory with ``model.safetensors.index.json`` and its shards (or just
            ``.safetensors`` files), one ``.safetensors`` file, or a state dict.
        strict: raise (before anything is copied) when the checkpoint and the model do not cover
            each other's keys, like ``load_state_dict``.
        key_map: renames checkpoint keys: a callable (return None to drop a key) or a dict of
            regex -> replacement applied in order.

    FP8Linear weights and ``weight_scale_inv`` are copied bit for bit (UE8M0 scales become the
    float32 powers of two they encode); per-expert keys ``<experts>.{i}.gate_proj|up_proj|down_proj.weight``
    (and ``.weight_scale_inv``) are stacked into an :class:`FP8MoEExperts` at ``<experts>``; every
    other tensor is loaded like ``load_state_dict(assign=True)`` does on the meta device and copied
    (cast to the parameter's dtype) otherwise. Never dequantizes. Needs ``safetensors`` for files.
    Returns ``LoadResult(missing_keys, unexpected_keys)``.
    """
    rename = _renamer(key_map)
    state = model.state_dict(keep_vars=True)
    modules = dict(model.named_modules())
    plan = {}  # checkpoint key -> (source, target)
    unexpected, covered, expert_slices = [], set(), {}
    sources = _sources(checkpoint)
    entries = [(source, ckpt_key, rename(ckpt_key), shape, dtype)
               for source in sources for ckpt_key, (shape, dtype) in source.entries.items()]
    renamed = {key for _, _, key, _, _ in entries}
    for source, ckpt_key, key, shape, dtype in entries:
        if key is None:
            continue
        if key in state:
            target = state[key]
            if tuple(target.shape) != shape:
                raise ValueError(
                    f"load_fp8_checkpoint: expected `{ckpt_key}` of shape {list(target.shape)} (as `{key}` in the "
                    f"model), got {list(shape)}"
                )
            _check_dtype(ckpt_key, target.dtype, dtype, _is_scale(key))
            if target.dtype != _FP8 and not _is_scale(key):
                beside = key.rsplit(".", 1)[0] + ".weight_scale_inv"
                if key.endswith(".weight") and beside in renamed:
                    raise ValueError(
                        f"load_fp8_checkpoint: `{ckpt_key}` has a weight_scale_inv beside it but the model's layer "
                        f"holds {target.dtype}: convert the model with fg.convert(model, inference=True) first"
                    )
            plan[ckpt_key] = (source, ("direct", key))
            covered.add(key)
            continue
        match = _EXPERT_KEY.match(key)
        experts = modules.get(match["prefix"]) if match else None
        if not isinstance(experts, FP8MoEExperts) or not experts.inference:
            unexpected.append(ckpt_key)
            continue
        index, proj, what = int(match["index"]), match["proj"], match["what"]
        e, h, i = experts.num_experts, experts.hidden_size, experts.intermediate_size
        if index >= e:
            raise ValueError(f"load_fp8_checkpoint: `{ckpt_key}` names expert {index}, but `{match['prefix']}` has {e}")
        if what == "weight":
            want = (i, h) if proj != "down_proj" else (h, i)
        else:
            if proj != "down_proj" and i % 128 != 0:
                raise ValueError(
                    f"load_fp8_checkpoint: `{ckpt_key}`: per-expert gate/up block scales stack into the fused "
                    f"[E, 2I, H] layout only when I % 128 == 0 (I = {i})"
                )
            want = (-(-i // 128), -(-h // 128)) if proj != "down_proj" else (-(-h // 128), -(-i // 128))
        if shape != want:
            raise ValueError(f"load_fp8_checkpoint: expected `{ckpt_key}` of shape {list(want)}, got {list(shape)}")
        _check_dtype(ckpt_key, _FP8 if what == "weight" else torch.float32, dtype, what != "weight")
        plan[ckpt_key] = (source, ("expert", match["prefix"], index, proj, what))
        expert_slices.setdefault(match["prefix"], set()).add((index, proj, what))
    for prefix, slices in expert_slices.items():
        experts = modules[prefix]
        full = {(g, p, w) for g in range(experts.num_experts) for p in ("gate_proj", "up_proj", "down_proj")
                for w in ("weight", "weight_scale_inv")}
        if slices == full:
            covered.update(f"{prefix}.{name}" for name in
                           ("gate_up_proj", "down_proj", "gate_up_proj_scale_inv", "down_proj_scale_inv"))
        else:  # an incomplete set of experts loads nothing into the stacked buffers (reported missing)
            for ckpt_key in [k for k, (_, t) in plan.items() if t[0] == "expert" and t[1] == prefix]:
                del plan[ckpt_key]
    missing = [key for key in state if key not in covered]
    if strict and (missing or unexpected):
        raise RuntimeError(
            "load_fp8_checkpoint: the checkpoint does not match the model (nothing was loaded): "
            f"missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}, "
            f"unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}"
        )

    stacked = {}  # (experts prefix, buffer name) -> the tensor being filled
    with torch.no_grad():
        for source in sources:
            keys = [k for k, (s, _) in plan.items() if s is source]
            for ckpt_key, tensor in source.load(keys):
                target = plan[ckpt_key][1]
                if target[0] == "direct":
                    _assign(model, target[1], state[target[1]], tensor)
                    continue
                _, prefix, index, proj, what = target
                experts = modules[prefix]
                name = ("down_proj" if proj == "down_proj" else "gate_up_proj") + ("_scale_inv" if what != "weight" else "")
                if (prefix, name) not in stacked:
                    current = getattr(experts, name)
                    stacked[prefix, name] = (torch.empty(current.shape, dtype=current.dtype)
                                             if current.device.type == "meta" else current)
                buffer = stacked[prefix, name]
                value = _as_float32_scale(tensor) if what != "weight" else tensor
                if proj == "down_proj":
                    buffer[index].copy_(value)
                else:
                    rows = value.shape[0]
                    start = 0 if proj == "gate_proj" else rows
                    buffer[index, start:start + rows].copy_(value)
    for (prefix, name), tensor in stacked.items():
        modules[prefix]._buffers[name] = tensor
    return LoadResult(missing, unexpected)


def _assign(model, key, target, tensor):
    """Load `tensor` at `key`: assigned where the model's tensor is on the meta device, copied otherwise."""
    if _is_scale(key):
        tensor = _as_float32_scale(tensor)
    owner_name, _, attr = key.rpartition(".")
    owner = model.get_submodule(owner_name) if owner_name else model
    if target.device.type != "meta":
        target.copy_(tensor)
        return
    value = tensor if target.dtype == _FP8 or _is_scale(key) else tensor.to(target.dtype)
    if value.data_ptr() % 16 != 0:  # a misaligned view of a caller's state dict: TMA needs 16-byte rows
        value = value.clone()
    if attr in owner._parameters:
        owner._parameters[attr] = nn.Parameter(value, requires_grad=target.requires_grad)
    else:
        owner._buffers[attr] = value
