"""load_fp8_checkpoint: sharded/single-file safetensors and state dicts, per-expert and fused expert
layouts, UE8M0 scales, key_map, strict and the bad inputs (CPU)."""
import json
import re

import pytest
import torch
from torch import nn

import torch_fp8gemm as fg
from torch_fp8gemm.checkpoint import load_fp8_checkpoint
from torch_fp8gemm.moe import FP8MoEExperts

safetensors_torch = pytest.importorskip("safetensors.torch")

E, H, I = 4, 256, 128


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.Linear(H, H)
        self.norm = nn.LayerNorm(H)
        self.mlp = nn.Module()
        self.mlp.experts = FP8MoEExperts(E, H, I, inference=True)


def converted_meta_model():
    with torch.device("meta"):
        model = Block()
    return fg.convert(model, inference=True, min_features=0)


def bf16_weights(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "attn": torch.randn(H, H, generator=g),
        "attn_bias": torch.randn(H, generator=g),
        "gate": torch.randn(E, I, H, generator=g) * 0.1,
        "up": torch.randn(E, I, H, generator=g) * 0.1,
        "down": torch.randn(E, H, I, generator=g) * 0.1,
    }


def fp8_checkpoint(w, e8m0=False):
    """The keys a DeepSeek-style FP8 checkpoint holds: fp8 weights, scales, experts one by one."""
    def scale(s):
        return s.to(torch.float8_e8m0fnu) if e8m0 else s

    ckpt = {}
    ckpt["attn.weight"], s = fg.quantize_128x128(w["attn"])
    ckpt["attn.weight_scale_inv"] = scale(s)
    ckpt["attn.bias"] = w["attn_bias"]
    ckpt["norm.weight"], ckpt["norm.bias"] = torch.full((H,), 1.5), torch.full((H,), 0.25)
    for e in range(E):
        for proj, t in (("gate_proj", w["gate"][e]), ("up_proj", w["up"][e]), ("down_proj", w["down"][e])):
            q, s = fg.quantize_128x128(t)
            ckpt[f"mlp.experts.{e}.{proj}.weight"] = q
            ckpt[f"mlp.experts.{e}.{proj}.weight_scale_inv"] = scale(s)
    return ckpt


def expected_model(w):
    model = Block()
    model.attn.weight.data.copy_(w["attn"])
    model.attn.bias.data.copy_(w["attn_bias"])
    model.norm.weight.data.fill_(1.5)
    model.norm.bias.data.fill_(0.25)
    model.mlp.experts = FP8MoEExperts.from_experts(w["gate"], w["up"], w["down"], inference=True)
    return fg.convert(model, inference=True, min_features=0)


def assert_same_state(model, expected):
    got, want = model.state_dict(), expected.state_dict()
    assert got.keys() == want.keys()
    for key in want:
        assert got[key].dtype == want[key].dtype and torch.equal(got[key].view(torch.uint8), want[key].view(torch.uint8)), key


def write_shards(tmp_path, ckpt, shards=2):
    keys = sorted(ckpt)
    weight_map = {}
    for s in range(shards):
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: ckpt[k].contiguous() for k in keys[s::shards]}
        safetensors_torch.save_file(part, str(tmp_path / name))
        weight_map.update({k: name for k in part})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return tmp_path


@pytest.mark.parametrize("form", ["sharded", "single", "state_dict"])
def test_loads_bit_for_bit_and_runs(form, tmp_path):
    w = bf16_weights()
    ckpt = fp8_checkpoint(w)
    if form == "sharded":
        source = write_shards(tmp_path, ckpt)
    elif form == "single":
        source = tmp_path / "model.safetensors"
        safetensors_torch.save_file({k: v.contiguous() for k, v in ckpt.items()}, str(source))
    else:
        source = ckpt
    model = converted_meta_model()
    result = load_fp8_checkpoint(model, source)
    assert result.missing_keys == [] and result.unexpected_keys == []
    expected = expected_model(w)
    assert_same_state(model, expected)
    x = torch.randn(8, H)
    idx = torch.randint(0, E, (8, 2))
    weights = torch.rand(8, 2)
    assert torch.equal(model.attn(x), expected.attn(x))
    assert torch.equal(model.mlp.experts(x, idx, weights), expected.mlp.experts(x, idx, weights))


def test_fused_expert_layout_and_ue8m0_scales(tmp_path):
    w = bf16_weights(1)
    per_expert = fp8_checkpoint(w, e8m0=True)
    fused = {k: v for k, v in per_expert.items() if ".experts." not in k}
    experts = FP8MoEExperts.from_experts(w["gate"], w["up"], w["down"], inference=True)
    for name in ("gate_up_proj", "down_proj"):
        fused[f"mlp.experts.{name}"] = getattr(experts, name)
        fused[f"mlp.experts.{name}_scale_inv"] = getattr(experts, f"{name}_scale_inv").to(torch.float8_e8m0fnu)
    for name, ckpt in (("per_expert", per_expert), ("fused", fused)):
        (tmp_path / name).mkdir()
        model = converted_meta_model()
        assert load_fp8_checkpoint(model, write_shards(tmp_path / name, ckpt)) == ([], [])
        scale = model.attn.weight_scale_inv
        assert scale.dtype == torch.float32
        assert torch.equal(torch.exp2(torch.log2(scale).round()), scale), "UE8M0 scales are powers of two"
        assert torch.equal(scale, per_expert["attn.weight_scale_inv"].float())
        assert torch.equal(model.mlp.experts.gate_up_proj_scale_inv,
                           experts.gate_up_proj_scale_inv.to(torch.float8_e8m0fnu).float())


def test_key_map_dict_and_callable():
    ckpt = {f"model.layers.0.{k}": v for k, v in fp8_checkpoint(bf16_weights()).items()}
    for key_map in ({r"^model\.layers\.0\.": ""}, lambda k: k.removeprefix("model.layers.0.")):
        model = converted_meta_model()
        assert load_fp8_checkpoint(model, ckpt, key_map=key_map) == ([], [])
    dropped = load_fp8_checkpoint(converted_meta_model(), ckpt, strict=False,
                                  key_map=lambda k: None if "norm" in k else k.removeprefix("model.layers.0."))
    assert dropped.missing_keys == ["norm.weight", "norm.bias"] and dropped.unexpected_keys == []


def test_strict_rejects_before_loading_anything_and_non_strict_reports():
    ckpt = fp8_checkpoint(bf16_weights())
    ckpt["lm_head.weight"] = torch.zeros(8, H)
    del ckpt["norm.bias"]
    model = converted_meta_model()
    with pytest.raises(RuntimeError, match=r"nothing was loaded.*missing keys \['norm.bias'\].*unexpected keys \['lm_head.weight'\]"):
        load_fp8_checkpoint(model, ckpt)
    assert model.attn.weight.device.type == "meta", "a strict failure must not load a part"
    result = load_fp8_checkpoint(model, ckpt, strict=False)
    assert result.missing_keys == ["norm.bias"] and result.unexpected_keys == ["lm_head.weight"]
    assert model.attn.weight.device.type == "cpu"


def test_an_incomplete_set_of_experts_loads_nothing_into_them():
    ckpt = fp8_checkpoint(bf16_weights())
    del ckpt["mlp.experts.3.down_proj.weight"]
    model = converted_meta_model()
    result = load_fp8_checkpoint(model, ckpt, strict=False)
    assert "mlp.experts.down_proj" in result.missing_keys
    assert model.mlp.experts.gate_up_proj.device.type == "meta"


def test_missing_shard_names_it(tmp_path):
    write_shards(tmp_path, fp8_checkpoint(bf16_weights()))
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"shard 'model-00002-of-00002.safetensors'"):
        load_fp8_checkpoint(converted_meta_model(), tmp_path)


@pytest.mark.parametrize(
    "change,fragment",
    [
        (lambda c: c.update({"attn.weight": c["attn.weight"][:128]}), "expected `attn.weight` of shape [256, 256]"),
        (lambda c: c.update({"attn.weight_scale_inv": torch.ones(1, 2)}), "expected `attn.weight_scale_inv` of shape [2, 2]"),
        (lambda c: c.update({"attn.weight": torch.zeros(H, H, dtype=torch.bfloat16)}), "expected `attn.weight` to be float8_e4m3fn"),
        (lambda c: c.update({"attn.weight_scale_inv": torch.ones(2, 2, dtype=torch.float16)}),
         "expected `attn.weight_scale_inv` (a block scale) to be float32 or float8_e8m0fnu"),
        (lambda c: c.update({"mlp.experts.1.up_proj.weight": torch.zeros(I, I, dtype=torch.float8_e4m3fn)}),
         "expected `mlp.experts.1.up_proj.weight` of shape [128, 256]"),
        (lambda c: c.update({"mlp.experts.7.up_proj.weight": c["mlp.experts.1.up_proj.weight"]}),
         "`mlp.experts.7.up_proj.weight` names expert 7, but `mlp.experts` has 4"),
    ],
)
def test_bad_checkpoints_name_the_key(change, fragment):
    ckpt = fp8_checkpoint(bf16_weights())
    change(ckpt)
    model = converted_meta_model()
    with pytest.raises(ValueError, match="^load_fp8_checkpoint: " + re.escape(fragment)):
        load_fp8_checkpoint(model, ckpt)
    assert model.attn.weight.device.type == "meta"


def test_an_unconverted_layer_with_a_scale_beside_its_weight():
    ckpt = fp8_checkpoint(bf16_weights())
    ckpt["attn.weight"] = ckpt["attn.weight"].float()
    with torch.device("meta"):
        model = Block()  # not converted: attn holds a float32 weight
    with pytest.raises(ValueError, match=r"`attn.weight` has a weight_scale_inv beside it .* fg.convert\(model, inference=True\)"):
        load_fp8_checkpoint(model, ckpt, strict=False)


@pytest.mark.parametrize("scale_format", ["float32", "ue8m0"])
def test_the_example_loads_an_fp8_checkpoint_into_a_meta_model(tmp_path, scale_format):
    """examples/convert_transformers_model.py --from-fp8-checkpoint: a tiny random Qwen3-MoE written as
    FP8 safetensors shards (experts one by one), loaded into a meta-device model, logits vs bf16."""
    pytest.importorskip("transformers")
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "convert_transformers_model.py"
    run = subprocess.run(
        [sys.executable, str(example), "--arch", "qwen3_moe", "--device", "cpu", "--batch", "1", "--seq", "32",
         "--no-speed", "--from-fp8-checkpoint", str(tmp_path / "ckpt"), "--scale-format", scale_format],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "load_fp8_checkpoint: LoadResult(missing_keys=[], unexpected_keys=[])" in run.stdout
    assert "FP8MoEExperts replaced 4 experts modules" in run.stdout
    assert (tmp_path / "ckpt" / "model.safetensors.index.json").is_file()
