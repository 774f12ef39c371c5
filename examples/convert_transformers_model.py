"""Convert a small transformers model to FP8 with torch_fp8gemm; compare logits and speed with bf16.

The model is a real public architecture from transformers (Llama by default) built from a tiny
random config -- nothing is downloaded. The script

1. builds the bf16 model and a copy converted with ``torch_fp8gemm.convert`` (lm_head kept in bf16,
   as FP8 recipes usually do), plus, for MoE architectures whose experts use transformers' fused
   layout, the experts replaced by ``FP8MoEExperts``;
2. compares the logits of both on the same random tokens (cosine similarity per token; the bar
   is >= 0.99);
3. reports prefill tokens/s for bf16 eager, bf16 compiled, FP8 eager and FP8 compiled.

With ``--from-fp8-checkpoint DIR`` the FP8 model instead comes the way a real FP8 model does: the bf16
model is written to DIR as a DeepSeek-style FP8 checkpoint (safetensors shards with an index: fp8
``weight`` + ``weight_scale_inv`` per linear layer, experts one by one), and a model built on the meta
device, converted, is filled from it with ``torch_fp8gemm.load_fp8_checkpoint``.

    python examples/convert_transformers_model.py                 # Llama, GPU if there is one
    python examples/convert_transformers_model.py --arch qwen3_moe --batch 8 --seq 512
    python examples/convert_transformers_model.py --device cpu --iters 2   # CPU: reference ops, slow
    python examples/convert_transformers_model.py --arch qwen3_moe --from-fp8-checkpoint /tmp/fp8_ckpt

transformers is needed by this example only (``pip install transformers``), never by torch_fp8gemm.
Exit status: 0 if the cosine-similarity bar holds, 1 if not.
"""
from __future__ import annotations

import argparse
import copy
import sys
import time

import torch
import torch.nn.functional as F

import torch_fp8gemm as fg
from torch_fp8gemm.moe import FP8MoEExperts

# Tiny configs (hidden 512 so the projections clear torch_fp8gemm.nn.MIN_FEATURES). Keys are
# transformers model_type names, passed to AutoConfig.for_model.
TINY_CONFIGS = {
    "llama": dict(
        vocab_size=4096, hidden_size=512, intermediate_size=1536, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=2048,
    ),
    "qwen3_moe": dict(
        vocab_size=4096, hidden_size=512, intermediate_size=1536, moe_intermediate_size=512,
        num_experts=8, num_experts_per_tok=2, decoder_sparse_step=1, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=4, head_dim=64, max_position_embeddings=2048,
    ),
}
COSINE_BAR = 0.99


def import_transformers():
    try:
        import transformers
    except ImportError:
        sys.exit(
            "This example needs Hugging Face transformers, which torch_fp8gemm itself does not require:\n"
            "    pip install transformers"
        )
    return transformers


def build_model(transformers, arch: str, device, dtype) -> torch.nn.Module:
    config = transformers.AutoConfig.for_model(arch, **TINY_CONFIGS[arch])
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config)
    return model.to(device=device, dtype=dtype).eval()


def is_silu(act) -> bool:
    """Whether ``act`` computes SiLU (transformers' ACT2FN["silu"] is nn.SiLU or its own SiLU class)."""
    if not callable(act):
        return False
    probe = torch.linspace(-4, 4, 17)
    try:
        return torch.allclose(act(probe), F.silu(probe))
    except Exception:
        return False


def replace_fused_experts(model: torch.nn.Module, inference: bool, scale_format: str = "float32") -> list[str]:
    """Swap transformers' fused experts modules (3-D ``gate_up_proj`` [E, 2I, H] and ``down_proj``
    [E, H, I], forward(hidden_states, top_k_index, top_k_weights), SiLU) for FP8MoEExperts.

    transformers 4.x keeps experts as a ModuleList of MLPs looped over by the block's own forward;
    those are left alone here (their Linear layers are handled by ``convert``), see
    ``FP8MoEExperts.from_modules`` for stacking them into a module you call from your block."""
    replaced = []
    for fqn, module in list(model.named_modules()):
        gate_up, down = getattr(module, "gate_up_proj", None), getattr(module, "down_proj", None)
        fused = isinstance(gate_up, torch.Tensor) and isinstance(down, torch.Tensor) and gate_up.dim() == 3
        if not fused or getattr(module, "experts_are_transposed", False):
            continue
        if getattr(module, "gate_up_proj_bias", None) is not None:
            continue
        if not is_silu(getattr(module, "act_fn", None)):
            continue
        parent_name, _, name = fqn.rpartition(".")
        setattr(model.get_submodule(parent_name), name, FP8MoEExperts.from_fused(gate_up, down, inference=inference,
                                                                                      scale_format=scale_format))
        replaced.append(fqn)
    return replaced


def lm_head_excluded(module, fqn) -> bool:
    return not fqn.endswith("lm_head")


def write_fp8_checkpoint(model: torch.nn.Module, path: str, shards: int = 2, scale_format: str = "float32") -> None:
    """``model`` as an FP8 checkpoint in ``path``: the layers convert would take as fp8 ``weight`` +
    ``weight_scale_inv``, fused experts as per-expert ``{i}.gate_proj|up_proj|down_proj`` tensors,
    everything else as it is; ``shards`` safetensors files and ``model.safetensors.index.json``.
    ``scale_format="ue8m0"``: power-of-two scales stored as float8_e8m0fnu (DeepSeek-V3.1 style)."""
    import json
    import os

    from safetensors.torch import save_file

    os.makedirs(path, exist_ok=True)
    state = {k: v.detach() for k, v in model.state_dict().items()}

    def quantize(w):
        values, scale = fg.quantize_128x128(w, scale_format=scale_format)
        return values, scale.to(torch.float8_e8m0fnu) if scale_format == "ue8m0" else scale

    ckpt = {}
    for fqn in fg.nn.plan_conversion(model, module_filter_fn=lm_head_excluded, inference=True).converted:
        weight = state.pop(f"{fqn}.weight")
        ckpt[f"{fqn}.weight"], ckpt[f"{fqn}.weight_scale_inv"] = quantize(weight)
    for fqn, module in model.named_modules():
        gate_up, down = getattr(module, "gate_up_proj", None), getattr(module, "down_proj", None)
        if isinstance(gate_up, torch.Tensor) and gate_up.dim() == 3:
            state.pop(f"{fqn}.gate_up_proj"), state.pop(f"{fqn}.down_proj")
            inter = gate_up.shape[1] // 2
            for e in range(gate_up.shape[0]):
                for proj, w in (("gate_proj", gate_up[e, :inter]), ("up_proj", gate_up[e, inter:]), ("down_proj", down[e])):
                    ckpt[f"{fqn}.{e}.{proj}.weight"], ckpt[f"{fqn}.{e}.{proj}.weight_scale_inv"] = quantize(w)
    ckpt.update(state)
    keys, weight_map = sorted(ckpt), {}
    for s in range(shards):
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: ckpt[k].contiguous().cpu().clone() for k in keys[s::shards]}  # clone: tied weights share storage
        save_file(part, os.path.join(path, name))
        weight_map.update({k: name for k in part})
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)


def load_from_fp8_checkpoint(transformers, reference, path: str, device, scale_format: str = "float32"):
    """The FP8 model built on the meta device, converted, and filled from the checkpoint at ``path``."""
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(reference.config).to(torch.bfloat16).eval()
    # A checkpoint whose config says "scale_fmt": "ue8m0" quantizes activations with power-of-two
    # scales too: scale_format="ue8m0" (its weight scales load as they are either way).
    experts = replace_fused_experts(model, inference=True, scale_format=scale_format)
    fg.convert(model, inference=True, module_filter_fn=lm_head_excluded, scale_format=scale_format)
    result = fg.load_fp8_checkpoint(model, path)
    print(f"load_fp8_checkpoint: {result}")
    # Non-persistent buffers (rotary frequencies) are not in checkpoints: they follow from the config,
    # so they are taken from the model built the usual way.
    for name, buffer in reference.named_buffers():
        owner, _, attr = name.rpartition(".")
        target = model.get_submodule(owner)
        if getattr(target, attr).device.type == "meta":
            target._buffers[attr] = buffer.clone()
    return model.to(device), experts


@torch.no_grad()
def logits(model, input_ids):
    return model(input_ids=input_ids, use_cache=False).logits.float()


@torch.no_grad()
def tokens_per_second(model, input_ids, iters: int, warmup: int) -> float:
    def sync():
        if input_ids.device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):  # includes torch.compile's compilation for compiled models
        model(input_ids=input_ids, use_cache=False)
    sync()
    start = time.perf_counter()
    for _ in range(iters):
        model(input_ids=input_ids, use_cache=False)
    sync()
    return input_ids.numel() * iters / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=sorted(TINY_CONFIGS), default="llama")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--training-mode", action="store_true",
                        help="convert to training-mode FP8Linear (bf16 master weights) instead of inference mode")
    parser.add_argument("--fullgraph", action="store_true", help="torch.compile(fullgraph=True) for the whole model")
    parser.add_argument("--from-fp8-checkpoint", metavar="DIR",
                        help="write the model as an FP8 safetensors checkpoint to DIR and load it into a meta-device model")
    parser.add_argument("--no-speed", action="store_true", help="compare logits only (no tokens/s runs)")
    parser.add_argument("--scale-format", choices=["float32", "ue8m0"], default="float32",
                        help="with --from-fp8-checkpoint: the checkpoint's scale format (ue8m0: as DeepSeek-V3.1)")
    args = parser.parse_args()

    transformers = import_transformers()
    device, dtype, inference = torch.device(args.device), torch.bfloat16, not args.training_mode
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, device {device}"
          f" ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU reference ops'}),"
          f" torch_fp8gemm CUDA kernels built: {fg.cuda_kernels_built()}")

    reference = build_model(transformers, args.arch, device, dtype)
    if args.from_fp8_checkpoint:
        write_fp8_checkpoint(reference, args.from_fp8_checkpoint, scale_format=args.scale_format)
        print(f"wrote an FP8 checkpoint of the model to {args.from_fp8_checkpoint}")
        model, experts = load_from_fp8_checkpoint(transformers, reference, args.from_fp8_checkpoint, device,
                                                  args.scale_format)
    else:
        model = copy.deepcopy(reference)
        experts = replace_fused_experts(model, inference)
        fg.convert(model, inference=inference, module_filter_fn=lm_head_excluded)
    print(model.fp8gemm_conversion_report)
    if experts:
        print(f"FP8MoEExperts replaced {len(experts)} experts modules: {', '.join(experts)}")

    input_ids = torch.randint(0, reference.config.vocab_size, (args.batch, args.seq), device=device)
    ref_logits, fp8_logits = logits(reference, input_ids), logits(model, input_ids)
    cosine = F.cosine_similarity(ref_logits.flatten(0, 1), fp8_logits.flatten(0, 1), dim=-1)
    print(f"logits cosine similarity per token vs bf16: mean {cosine.mean():.5f}, min {cosine.min():.5f} "
          f"(bar {COSINE_BAR})")

    if args.no_speed:
        return 0 if cosine.min().item() >= COSINE_BAR else 1
    compile_kwargs = {"fullgraph": args.fullgraph, "dynamic": False}
    runs = {
        "bf16 eager": reference,
        "bf16 compiled": torch.compile(reference, **compile_kwargs),
        "FP8 eager": model,
        "FP8 compiled": torch.compile(model, **compile_kwargs),
    }
    print(f"\nprefill, batch {args.batch} x seq {args.seq}, {args.iters} iterations after {args.warmup} warm-up")
    baseline = None
    for name, run in runs.items():
        rate = tokens_per_second(run, input_ids, args.iters, args.warmup)
        baseline = baseline or rate
        print(f"  {name:14s} {rate:12,.0f} tokens/s   {rate / baseline:5.2f}x bf16 eager")
    return 0 if cosine.min().item() >= COSINE_BAR else 1


if __name__ == "__main__":
    sys.exit(main())
