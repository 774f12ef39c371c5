"""FP8Linear (training and inference modes), FP8 checkpoints, and torch_fp8gemm.convert."""
import io
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch._dynamo.testing import CompileCounterWithBackend
from torch._inductor.utils import run_and_get_code

import torch_fp8gemm as fg
import torch_fp8gemm.nn as fnn
from torch_fp8gemm import testing as T
from torch_fp8gemm.nn import FP8Linear

from conftest import requires_cuda


def _emulated_linear(x, weight, bias=None):
    """float64 reference of the recipe: x per 1x128 group, weight per 128x128 block (+ bias)."""
    x2d = x.reshape(-1, x.shape[-1])
    out = T.reference_dense(*T.quantize_1x128_torch(x2d), *T.quantize_128x128_torch(weight.detach()), bias)
    return out.reshape(*x.shape[:-1], weight.shape[0])


@pytest.mark.parametrize("inference", [False, True])
@pytest.mark.parametrize("dtype,tight", [(torch.float32, 1e-5), (torch.bfloat16, 4e-3)])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_linear(inference, dtype, tight, bias):
    linear = nn.Linear(384, 136, bias=bias, dtype=dtype)
    layer = FP8Linear.from_linear(linear, inference=inference)
    x = torch.randn(2, 5, 384, dtype=dtype)  # any leading shape
    with torch.no_grad():
        out = layer(x)
        exact = nn.functional.linear(
            x.double(), linear.weight.double(), None if linear.bias is None else linear.bias.double()
        )
    assert out.shape == (2, 5, 136) and out.dtype == dtype
    emulated = _emulated_linear(x, linear.weight, None if linear.bias is None else linear.bias.detach())
    assert T.relative_error(out, emulated) <= tight, "wrong against the emulated FP8 recipe"
    assert T.relative_error(out, exact) <= 0.08, "wrong against the unquantized layer"


def test_inference_equals_training():
    linear = nn.Linear(256, 264)
    x = torch.randn(7, 256)
    with torch.no_grad():
        torch.testing.assert_close(FP8Linear.from_linear(linear, inference=True)(x), FP8Linear.from_linear(linear)(x))


def test_constructor_like_linear_and_alignment_errors():
    layer = FP8Linear(256, 128, bias=False, dtype=torch.bfloat16)
    assert layer.weight.dtype == torch.bfloat16 and layer.bias is None and isinstance(layer, nn.Linear)
    assert repr(layer) == "FP8Linear(in_features=256, out_features=128, bias=False, mode=training)"
    with pytest.raises(ValueError, match=r"`in_features` to be a multiple of 16.*got 100"):
        FP8Linear(100, 128)
    with pytest.raises(ValueError, match=r"`out_features` to be a multiple of 8.*got 12"):
        FP8Linear(128, 12)
    with pytest.raises(ValueError, match="`linear` to be an nn.Linear"):
        FP8Linear.from_linear(nn.Conv1d(1, 1, 1))
    layer = FP8Linear(256, 128, inference=True)
    assert layer.weight.dtype == T.FP8 and layer.weight_scale_inv.shape == (1, 2)


def test_from_linear_reuses_parameters():
    linear = nn.Linear(256, 136)
    linear.eval()
    layer = FP8Linear.from_linear(linear)
    assert layer.weight is linear.weight and layer.bias is linear.bias and not layer.training
    assert [p for p in layer.parameters()] == [linear.weight, linear.bias]
    frozen = FP8Linear.from_linear(linear, inference=True)
    assert frozen.bias is linear.bias and list(frozen.parameters()) == [linear.bias]
    assert frozen.weight.dtype == T.FP8 and linear.weight.dtype == torch.float32  # original untouched


def test_state_dict_round_trip_weights_only():
    layer = FP8Linear(256, 136, inference=True)
    state = layer.state_dict()
    assert set(state) == {"weight", "weight_scale_inv", "bias"}
    assert state["weight"].dtype == T.FP8 and state["weight"].shape == (136, 256)
    assert state["weight_scale_inv"].dtype == torch.float32 and state["weight_scale_inv"].shape == (2, 2)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)  # plain tensors only: no subclasses, no pickled classes
    fresh = FP8Linear(256, 136, inference=True)
    fresh.load_state_dict(loaded)
    assert torch.equal(fresh.weight.view(torch.uint8), layer.weight.view(torch.uint8))
    assert torch.equal(fresh.weight_scale_inv, layer.weight_scale_inv)
    with torch.device("meta"):  # build without memory, then take the checkpoint tensors as they are
        empty = FP8Linear(256, 136, inference=True)
    empty.load_state_dict(loaded, assign=True)
    x = torch.randn(3, 256)
    with torch.no_grad():
        torch.testing.assert_close(empty(x), layer(x))
    training = FP8Linear(256, 136)
    assert set(training.state_dict()) == set(nn.Linear(256, 136).state_dict()) == {"weight", "bias"}


def test_loads_deepseek_style_checkpoint_without_dequantizing(monkeypatch):
    """A DeepSeek-V3 / Qwen3-FP8 / HF FineGrainedFP8 state_dict: fp8 `weight` + `weight_scale_inv`."""
    _, _, w_fp8, w_scale = T.random_fp8_operands(1, 264, 384)  # N=264, K=384: scales [3, 3]
    bias = torch.randn(264)
    model = nn.Sequential(nn.Linear(384, 264))
    fg.convert(model, inference=True, min_features=0)
    monkeypatch.setattr(fnn, "dequantize_128x128", lambda *a: pytest.fail("dequantized an fp8 checkpoint"))
    monkeypatch.setattr(fg.ops, "quantize_128x128", lambda *a: pytest.fail("re-quantized an fp8 checkpoint"))
    model.load_state_dict({"0.weight": w_fp8, "0.weight_scale_inv": w_scale, "0.bias": bias})
    layer = model[0]
    assert torch.equal(layer.weight.view(torch.uint8), w_fp8.view(torch.uint8))
    assert torch.equal(layer.weight_scale_inv, w_scale)
    x = torch.randn(9, 384)
    with torch.no_grad():
        out = layer(x)
    # weight_scale_inv multiplies: dequantized weight = fp8 * scale
    expected = T.reference_dense(*T.quantize_1x128_torch(x), w_fp8, w_scale, bias)
    assert T.relative_error(out, expected) <= 1e-5


def test_loading_across_modes():
    linear = nn.Linear(256, 136)
    _, _, w_fp8, w_scale = T.random_fp8_operands(1, 136, 256)
    # fp8 checkpoint into a training layer: dequantized into the master weight (fp8 * scale)
    training = FP8Linear(256, 136)
    training.load_state_dict({"weight": w_fp8, "weight_scale_inv": w_scale, "bias": linear.bias.detach()})
    expected = T.dequantize_128x128_f64(w_fp8, w_scale).float()
    torch.testing.assert_close(training.weight.detach(), expected)
    # high-precision checkpoint into an inference layer: quantized per 128x128 block
    inference = FP8Linear(256, 136, inference=True)
    inference.load_state_dict(linear.state_dict())
    expected_fp8, expected_scale = T.quantize_128x128_torch(linear.weight.detach())
    assert torch.equal(inference.weight_scale_inv, expected_scale)
    assert torch.equal(inference.weight.view(torch.uint8), expected_fp8.view(torch.uint8))
    # inconsistent entries: load_state_dict's usual RuntimeError, naming the keys
    with pytest.raises(RuntimeError, match="`weight` is float8_e4m3fn but `weight_scale_inv` is missing"):
        FP8Linear(256, 136, inference=True).load_state_dict({"weight": w_fp8, "bias": linear.bias.detach()})
    with pytest.raises(RuntimeError, match="`weight_scale_inv` goes with a float8_e4m3fn `weight`"):
        FP8Linear(256, 136).load_state_dict({**linear.state_dict(), "weight_scale_inv": w_scale})


def test_dtype_conversion_keeps_fp8_buffers():
    layer = FP8Linear(256, 136, inference=True)
    weight_bits, scale = layer.weight.view(torch.uint8).clone(), layer.weight_scale_inv.clone()
    model = nn.Sequential(layer).to(torch.bfloat16)
    assert layer.weight.dtype == T.FP8 and layer.weight_scale_inv.dtype == torch.float32
    assert layer.bias.dtype == torch.bfloat16
    assert torch.equal(layer.weight.view(torch.uint8), weight_bits) and torch.equal(layer.weight_scale_inv, scale)
    model.half().float()
    assert layer.weight.dtype == T.FP8 and torch.equal(layer.weight_scale_inv, scale)
    with torch.device("meta"):
        empty = FP8Linear(256, 136, inference=True)
    empty.to_empty(device="cpu")
    assert empty.weight.device.type == "cpu" and empty.weight.dtype == T.FP8


@pytest.mark.parametrize("inference", [False, True])
def test_backward(inference):
    linear = nn.Linear(256, 136)
    layer = FP8Linear.from_linear(linear, inference=inference)
    x = torch.randn(3, 11, 256, requires_grad=True)
    dy = torch.randn(3, 11, 136)
    layer(x).backward(dy)
    # the same gradients as the op called directly (the module adds only reshapes)
    x2 = x.detach().reshape(-1, 256).requires_grad_()
    w2 = linear.weight.detach().clone().requires_grad_()
    b2 = linear.bias.detach().clone().requires_grad_()
    weight = w2 if not inference else layer.weight
    scale = None if not inference else layer.weight_scale_inv
    fg.dense(x2, weight, None, scale, b2, torch.float32).backward(dy.reshape(-1, 136))
    torch.testing.assert_close(x.grad.reshape(-1, 256), x2.grad)
    torch.testing.assert_close(linear.bias.grad, b2.grad)
    if not inference:
        torch.testing.assert_close(linear.weight.grad, w2.grad)
    else:
        assert linear.weight.grad is None  # the fp8 copy is a constant
    exact_dx = dy.double().reshape(-1, 136) @ linear.weight.detach().double()
    assert T.relative_error(x.grad.reshape(-1, 256), exact_dx) <= 0.08


def _toy_model():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.up = nn.Linear(512, 1024)
            self.down = nn.Linear(1024, 512, bias=False)
            self.router = nn.Linear(512, 6)  # N % 8 != 0
            self.tiny = nn.Linear(512, 64)  # below MIN_FEATURES
            self.attn = nn.MultiheadAttention(512, 4)  # out_proj is a Linear subclass

    model = nn.Module()
    model.blocks = nn.ModuleList([Block(), Block()])
    model.lm_head = nn.Linear(512, 1024)
    model.shared_a = model.shared_b = nn.Linear(512, 512)
    return model


SUBCLASS = "NonDynamicallyQuantizableLinear is a subclass of nn.Linear; only plain nn.Linear is converted"


def test_convert_filter_and_report(caplog):
    model = _toy_model()
    up_weight = model.blocks[0].up.weight
    plan = fnn.plan_conversion(model, module_filter_fn=lambda m, fqn: fqn != "lm_head")
    with caplog.at_level(logging.INFO, logger="torch_fp8gemm"):
        assert fg.convert(model, module_filter_fn=lambda m, fqn: fqn != "lm_head") is model
    report = model.fp8gemm_conversion_report
    assert report == plan
    assert report.converted == ["blocks.0.up", "blocks.0.down", "blocks.1.up", "blocks.1.down", "shared_a"]
    assert report.skipped == {
        "blocks.0.router": "out_features=6 is not a multiple of 8 (kernel alignment)",
        "blocks.0.tiny": "too small for FP8 to win: in_features=512, out_features=64, both must be >= 512",
        "blocks.0.attn.out_proj": SUBCLASS,
        "blocks.1.router": "out_features=6 is not a multiple of 8 (kernel alignment)",
        "blocks.1.tiny": "too small for FP8 to win: in_features=512, out_features=64, both must be >= 512",
        "blocks.1.attn.out_proj": SUBCLASS,
        "lm_head": "excluded by module_filter_fn",
    }
    assert "5 nn.Linear -> FP8Linear (training), 7 skipped" in caplog.text
    assert type(model.blocks[0].up) is FP8Linear and model.blocks[0].up.weight is up_weight
    assert type(model.lm_head) is nn.Linear and type(model.blocks[1].router) is nn.Linear
    assert model.shared_a is model.shared_b and type(model.shared_b) is FP8Linear  # still shared
    again = fg.convert(model).fp8gemm_conversion_report  # idempotent
    assert again.converted == ["lm_head"] and again.skipped["blocks.0.up"] == "already an FP8Linear"


def test_convert_inference_and_root_linear():
    model = fg.convert(_toy_model(), inference=True, min_features=0)
    assert model.blocks[0].tiny.weight.dtype == T.FP8 and model.lm_head.inference
    layer = fg.convert(nn.Linear(512, 512))
    assert type(layer) is FP8Linear and layer.fp8gemm_conversion_report.converted == [""]


@pytest.mark.parametrize("inference", [False, True])
def test_compile_fullgraph_dynamic_batch_one_graph(inference):
    # K = 144 (quantized by the op under compile too) and K = 512 (quantization traced and fused)
    model = nn.Sequential(nn.Linear(144, 512), nn.GELU(), nn.Linear(512, 256)).to(torch.bfloat16)
    fg.convert(model, inference=inference, min_features=0)
    counter = CompileCounterWithBackend("inductor")
    compiled = torch.compile(model, backend=counter, fullgraph=True, dynamic=True)
    with torch.no_grad():
        for batch, seq in ((2, 5), (3, 7), (4, 16)):
            x = torch.randn(batch, seq, 144, dtype=torch.bfloat16)
            torch.testing.assert_close(compiled(x).float(), model(x).float(), rtol=2e-2, atol=2e-2)
    assert counter.frame_count == 1, "a new batch or sequence size must not recompile"


def test_compile_backward_training():
    model = fg.convert(nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 256)), min_features=0)
    x = torch.randn(6, 256)
    torch.compile(model, fullgraph=True, backend="aot_eager")(x).square().sum().backward()
    compiled_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model(x).square().sum().backward()
    for got, want in zip(compiled_grads, [p.grad for p in model.parameters()]):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("inference", [False, True])
def test_export_dynamic_tokens(inference):
    model = fg.convert(nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 512)), inference=inference)
    tokens = torch.export.Dim("tokens", min=2, max=4096)
    exported = torch.export.export(model, (torch.randn(8, 512),), dynamic_shapes=({0: tokens},))
    assert str(exported.graph).count("fp8gemm.dense") == 2
    x = torch.randn(19, 512)
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x), rtol=2e-2, atol=2e-2)


@requires_cuda
@pytest.mark.parametrize("inference", [False, True])
def test_cuda_graphs_reduce_overhead(inference):
    model = nn.Sequential(nn.Linear(512, 1024), nn.SiLU(), nn.Linear(1024, 512)).to("cuda", torch.bfloat16)
    fg.convert(model, inference=inference)
    compiled = torch.compile(model, mode="reduce-overhead", fullgraph=True)
    with torch.no_grad():
        for _ in range(3):  # warm-up, record, replay
            x = torch.randn(64, 512, device="cuda", dtype=torch.bfloat16)
            torch.testing.assert_close(compiled(x).float(), model(x).float(), rtol=2e-2, atol=2e-2)


def test_compiled_activation_quantization_fuses_into_norm():
    """Under torch.compile the activation quantization is plain torch ops that Inductor fuses into the
    norm producing the activations: one generated kernel for norm + quantize, then the GEMM."""
    model = nn.Sequential(nn.RMSNorm(512), FP8Linear(512, 1024, inference=True)).to(torch.bfloat16)
    x = torch.randn(4, 16, 512, dtype=torch.bfloat16)
    with torch.no_grad():
        out, code = run_and_get_code(torch.compile(model, fullgraph=True, dynamic=True), x)
        eager = model(x)
    code = "\n".join(code)
    kernels = set(re.findall(r"\b(cpp_fused_\w+|triton_\w+_fused_\w+)\(", code))
    assert "fp8gemm.dense" in code and "fp8gemm.quantize_1x128" not in code, code
    assert len(kernels) == 1, f"expected one fused norm+quantize kernel, got {sorted(kernels)}"
    # the fused kernel quantizes the fp32 norm output instead of its bf16 rounding: close, not equal
    assert T.relative_error(out, eager) <= 0.03


@pytest.mark.parametrize("op", ["dense", "grouped_moe", "grouped_moe_masked"])
def test_gemm_ops_take_operands_in_the_layout_inductor_produced(op):
    # Without flexible_layout Inductor forces the traced strides on custom-op inputs and, on the GPU,
    # re-materialized the quantized activations' [M, K] view in a second kernel that read x again.
    assert torch.Tag.flexible_layout in getattr(torch.ops.fp8gemm, op).default.tags


@requires_cuda
@pytest.mark.parametrize("k", [512, 1024])
def test_compiled_forward_quantizes_in_one_kernel(k):
    """A compiled FP8Linear fed from a graph input: the activation quantization is one generated kernel
    (one read of x), then the GEMM; not a second kernel for the fp8 cast that reads x again (the recipe
    casts before flattening, and the GEMM ops take flexible layouts)."""
    layer = FP8Linear.from_linear(nn.Linear(k, 256, bias=False, device="cuda", dtype=torch.bfloat16), inference=True)
    x = torch.randn(64, k, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        out, code = run_and_get_code(torch.compile(layer, fullgraph=True, dynamic=False), x)
        eager = layer(x)
    kernels = set(re.findall(r"def (triton_\w+)\(", "\n".join(code)))
    assert len(kernels) == 1, f"expected one quantization kernel, got {sorted(kernels)}"
    assert T.relative_error(out, eager) <= 0.03


EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "convert_transformers_model.py"


@requires_cuda
def test_transformers_example_end_to_end():
    """The real-model example: a tiny random Llama from transformers, converted, logits cosine >= 0.99."""
    pytest.importorskip("transformers")
    result = subprocess.run([sys.executable, str(EXAMPLE), "--iters", "2", "--warmup", "2"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FP8 compiled" in result.stdout


def test_forward_checks_the_input_shape_like_linear():
    # A last dim other than in_features must not be reshaped into some other [M, K] and run.
    for inference in (False, True):
        layer = fg.FP8Linear(512, 256)
        if inference:
            layer = fg.FP8Linear.from_linear(torch.nn.Linear(512, 256), inference=True)
        for bad in (torch.randn(4, 256), torch.randn(2, 3, 1024), torch.tensor(1.0)):
            with pytest.raises(ValueError, match="in_features=512"):
                layer(bad)


@pytest.mark.parametrize("inference", [False, True])
def test_convert_runs_transformer_encoder_layers_through_fp8linear(inference, monkeypatch):
    # In eval mode without grad nn.TransformerEncoderLayer takes a fused path that reads
    # linear1/linear2 weights itself: after convert the FP8Linear layers must still run (not a silent
    # bf16 forward, nor a dtype error on the fp8 weights of inference mode).
    torch.manual_seed(0)
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(256, 4, 512, batch_first=True), 2).bfloat16().eval()
    x = torch.randn(2, 16, 256, dtype=torch.bfloat16)
    with torch.no_grad():
        reference = enc(x)
    fg.convert(enc, inference=inference, min_features=0)
    assert len(enc.fp8gemm_conversion_report.converted) == 4
    calls = []
    forward = FP8Linear.forward
    monkeypatch.setattr(FP8Linear, "forward", lambda self, inp: calls.append(1) or forward(self, inp))
    with torch.no_grad():
        out = enc(x)
    assert len(calls) == 4, "the converted layers were bypassed"
    assert not torch.equal(out, reference)
    assert T.relative_error(out.float(), reference.float()) <= 0.05


def _transformers_fp8_linear(n, k, block_size=(128, 128), bias=True, scale_fmt="float"):
    finegrained_fp8 = pytest.importorskip("transformers.integrations.finegrained_fp8")
    layer = finegrained_fp8.FP8Linear(k, n, block_size=block_size, scale_fmt=scale_fmt, has_bias=bias)
    q, s = fg.quantize_128x128(torch.randn(n, k), scale_format="ue8m0" if scale_fmt == "ue8m0" else "float32")
    with torch.no_grad():
        layer.weight.copy_(q)
        if block_size == (128, 128):
            layer.weight_scale_inv.copy_(s.to(layer.weight_scale_inv.dtype))
        if bias:
            layer.bias.normal_()
    return layer


@pytest.mark.parametrize("scale_fmt", ["float", "ue8m0"])
def test_convert_takes_over_transformers_fp8_layers_without_dequantizing(scale_fmt):
    torch.manual_seed(0)
    model = nn.Sequential(_transformers_fp8_linear(256, 512, scale_fmt=scale_fmt), nn.GELU(),
                          _transformers_fp8_linear(136, 256, bias=False, scale_fmt=scale_fmt))
    weights = [(m.weight.clone(), m.weight_scale_inv.float().clone()) for m in (model[0], model[2])]
    x = torch.randn(8, 512)
    fg.convert(model)
    report = model.fp8gemm_conversion_report
    assert report.converted == ["0", "2"] and not report.skipped
    for layer, (w, s) in zip((model[0], model[2]), weights):
        assert isinstance(layer, FP8Linear) and layer.inference
        assert torch.equal(layer.weight.view(torch.uint8), w.view(torch.uint8)) and torch.equal(layer.weight_scale_inv, s)
    deq = [fg.nn.dequantize_128x128(w, s) for w, s in weights]
    with torch.no_grad():
        reference = nn.functional.linear(nn.functional.gelu(nn.functional.linear(x, deq[0], model[0].bias)), deq[1])
        out = model(x)
    assert T.relative_error(out, reference) <= 0.05


def test_convert_skips_transformers_fp8_layers_it_cannot_take():
    other_blocks = _transformers_fp8_linear(256, 512, block_size=(64, 64))
    model = nn.Sequential(other_blocks)
    fg.convert(model)
    assert model[0] is other_blocks
    assert "block_size=(64, 64): only 128x128 blocks are taken" in model.fp8gemm_conversion_report.skipped["0"]


def _transformers_fp8_experts(num_experts=4, hidden=256, inter=128, block_size=(128, 128)):
    finegrained_fp8 = pytest.importorskip("transformers.integrations.finegrained_fp8")
    from transformers import Qwen3MoeConfig

    config = Qwen3MoeConfig(hidden_size=hidden, moe_intermediate_size=inter, num_experts=num_experts, hidden_act="silu")
    experts = finegrained_fp8.FP8Experts(config, block_size=block_size)
    g = torch.Generator().manual_seed(0)
    w = {"gate_up_proj": torch.randn(num_experts, 2 * inter, hidden, generator=g) * 0.05,
         "down_proj": torch.randn(num_experts, hidden, inter, generator=g) * 0.05}
    with torch.no_grad():
        for name, value in w.items():
            q, s = fg.quantize_128x128(value)
            getattr(experts, name).copy_(q)
            if block_size == (128, 128):
                getattr(experts, f"{name}_scale_inv").copy_(s)
    return experts


def test_convert_takes_over_transformers_fp8_experts():
    from torch_fp8gemm.moe import FP8MoEExperts

    block = nn.Module()
    block.experts = _transformers_fp8_experts()
    fused = {n: getattr(block.experts, n).detach().clone() for n in
             ("gate_up_proj", "gate_up_proj_scale_inv", "down_proj", "down_proj_scale_inv")}
    fg.convert(block)
    assert block.fp8gemm_conversion_report.converted_experts == ["experts"]
    assert isinstance(block.experts, FP8MoEExperts) and block.experts.inference
    for name, value in fused.items():
        assert torch.equal(getattr(block.experts, name).view(torch.uint8), value.view(torch.uint8)), name
    # against the dequantized experts computed directly
    x = torch.randn(16, 256)
    idx, weights = torch.randint(0, 4, (16, 2)), torch.rand(16, 2)
    gate_up = fg.nn.dequantize_128x128(fused["gate_up_proj"], fused["gate_up_proj_scale_inv"])
    down = fg.nn.dequantize_128x128(fused["down_proj"], fused["down_proj_scale_inv"])
    want = torch.zeros(16, 256)
    for t in range(16):
        for j in range(2):
            gate, up = (gate_up[idx[t, j]] @ x[t]).chunk(2)
            want[t] += weights[t, j] * (down[idx[t, j]] @ (nn.functional.silu(gate) * up))
    with torch.no_grad():
        got = block.experts(x, idx, weights)
    assert T.relative_error(got, want) <= 0.05


def test_convert_skips_transformers_fp8_experts_it_cannot_take():
    block = nn.Module()
    block.experts = _transformers_fp8_experts(block_size=(64, 64))
    fg.convert(block)
    assert "block_size=(64, 64): only 128x128 blocks are taken" in block.fp8gemm_conversion_report.skipped["experts"]
    assert type(block.experts).__name__ == "FP8Experts"
