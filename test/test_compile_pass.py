"""torch_fp8gemm.compile: the Inductor pass that rewrites blockwise torch._scaled_mm / F.scaled_mm into
fp8gemm::dense. On CPU, torch._scaled_mm has no blockwise kernel, so a compiled graph only runs if the
rewrite happened; the pass is also checked directly on fake-traced graphs, including what it must
leave alone."""
import pytest
import torch
import torch._inductor.config as inductor_config
import torch.nn.functional as F
from torch._dynamo.testing import CompileCounterWithBackend
from torch._inductor.custom_graph_pass import CustomGraphPass
from torch._inductor.utils import run_and_get_code
from torch.fx.experimental.proxy_tensor import make_fx

import torch_fp8gemm.compile as fc
from torch_fp8gemm import testing as T

from conftest import requires_sm90

# torch 2.11/2.12 Dynamo cannot trace F.scaled_mm (torch._scaled_mm_v2 is marked skipped there).
_TORCH_VERSION = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
_needs_traceable_scaled_mm_v2 = pytest.mark.skipif(
    _TORCH_VERSION < (2, 13), reason="Dynamo traces F.scaled_mm (torch._scaled_mm_v2) from torch 2.13 on"
)

aten = torch.ops.aten
M, K, N = 40, 384, 272  # ceil(K/128) = 3: not a multiple of 4, the case cuBLAS pads; N % 16 == 0 for _scaled_mm


class BlockScaledLinear(torch.nn.Module):
    """What user code written against torch's API looks like: pure-torch 1x128 quantization of the
    activations, a pre-quantized 128x128 weight, and torch._scaled_mm (v1) or F.scaled_mm (v2)."""

    def __init__(self, api, bias=False, device="cpu"):
        super().__init__()
        w_fp8, w_scale = T.quantize_128x128_torch(torch.randn(N, K, device=device))
        self.register_buffer("w_fp8", w_fp8)
        self.register_buffer("w_scale", w_scale)
        self.register_buffer("bias", torch.randn(N, dtype=torch.bfloat16, device=device) if bias else None)
        self.api = api

    def forward(self, x):
        x_fp8, x_scale = T.quantize_1x128_torch(x)
        if self.api == "_scaled_mm":
            return torch._scaled_mm(
                x_fp8, self.w_fp8.t(), x_scale, self.w_scale.t(), bias=self.bias, out_dtype=torch.bfloat16
            )
        return F.scaled_mm(
            x_fp8, self.w_fp8.t(), x_scale, F.ScalingType.BlockWise1x128,
            self.w_scale.t(), F.ScalingType.BlockWise128x128, output_dtype=torch.float32,
        )

    def reference(self, x):
        out = T.reference_dense(*T.quantize_1x128_torch(x), self.w_fp8, self.w_scale)
        return out if self.bias is None else out + self.bias.double()


@pytest.mark.parametrize(
    "api,bias,tol",
    [("_scaled_mm", True, 3e-3), pytest.param("scaled_mm", False, 1e-5, marks=_needs_traceable_scaled_mm_v2)],
)
def test_compiled_code_calls_fp8gemm_dense(api, bias, tol):
    module = BlockScaledLinear(api, bias=bias)
    counter = CompileCounterWithBackend("inductor")
    compiled = torch.compile(module, backend=counter, fullgraph=True)
    with fc.enabled() as rewrite_pass:
        before = rewrite_pass.rewritten
        for i, m in enumerate((M, 17, 64)):
            x = torch.randn(m, K)
            torch._dynamo.mark_dynamic(x, 0)  # the token dim; K and N stay static as in a real model
            if i == 0:
                out, code = run_and_get_code(compiled, x)
                code = "\n".join(code)
                assert "fp8gemm.dense" in code and "_scaled_mm" not in code, code
            else:
                out = compiled(x)
            assert T.relative_error(out, module.reference(x)) <= tol
    assert counter.frame_count == 1
    assert rewrite_pass.rewritten - before in (0, 1)  # 0 on an FX graph cache hit of the rewritten graph


def _trace(fn, *args):
    """A functional ATen graph with fake values in node.meta["val"], as post-grad passes see."""
    return make_fx(fn, tracing_mode="fake")(*args)


def _targets(gm):
    return [n.target for n in gm.graph.nodes if n.op == "call_function"]


def _operands(padded_k_blocks=False):
    x_fp8, x_scale = T.quantize_1x128_torch(torch.randn(M, K))
    w_fp8, w_scale = T.quantize_128x128_torch(torch.randn(N, K))
    w_scale_t = w_scale.t()
    if padded_k_blocks:  # cuBLASLt layout: K-block dim padded to a multiple of 4 (3 -> 4), column-major
        w_scale_t = torch.zeros(N // 128 + 1, 4).t()
        w_scale_t[:3] = w_scale.t()
    return x_fp8, x_scale, w_fp8, w_scale, w_scale_t


@pytest.mark.parametrize("api,padded_k_blocks", [("_scaled_mm", False), ("scaled_mm", False), ("scaled_mm", True)])
def test_pass_rewrites_traced_graph(api, padded_k_blocks):
    x_fp8, x_scale, w_fp8, w_scale, w_scale_t = _operands(padded_k_blocks)
    bias = torch.randn(N, dtype=torch.bfloat16)

    def fn(a, a_scale, w, w_scale_t, bias):
        if api == "_scaled_mm":
            return torch._scaled_mm(a, w.t(), a_scale, w_scale_t, bias, out_dtype=torch.bfloat16)
        return F.scaled_mm(a, w.t(), a_scale, F.ScalingType.BlockWise1x128, w_scale_t, F.ScalingType.BlockWise128x128,
                           bias=bias, output_dtype=torch.bfloat16)

    gm = _trace(fn, x_fp8, x_scale, w_fp8, w_scale_t, bias)
    original = {aten._scaled_mm.default, getattr(aten, "_scaled_mm_v2", aten._scaled_mm).default}
    assert original & set(_targets(gm))
    fc.ScaledMMRewritePass()(gm.graph)
    gm.recompile()
    targets = _targets(gm)
    assert torch.ops.fp8gemm.dense.default in targets and not original & set(targets)
    assert (aten.slice.Tensor in targets) == padded_k_blocks  # cuBLAS' K-block padding sliced off
    dense = next(n for n in gm.graph.nodes if n.target is torch.ops.fp8gemm.dense.default)
    assert dense.meta["val"].shape == (M, N) and dense.meta["val"].dtype == torch.bfloat16
    # the rewritten graph runs on CPU through the reference op
    expected = T.reference_dense(x_fp8, x_scale, w_fp8, w_scale, bias)
    assert T.relative_error(gm(x_fp8, x_scale, w_fp8, w_scale_t, bias), expected) <= 3e-3


def test_pass_leaves_other_recipes_alone():
    x_fp8, x_scale, w_fp8, _, w_scale_t = _operands()

    def scaled_mm(a, b, scale_a, scale_b):
        return torch._scaled_mm(a, b, scale_a, scale_b, out_dtype=torch.bfloat16)

    def scaled_mm_fp16(a, b, scale_a, scale_b):
        return torch._scaled_mm(a, b, scale_a, scale_b, out_dtype=torch.float16)

    cases = {
        "row-wise": (scaled_mm, (x_fp8, w_fp8.t(), torch.ones(M, 1), torch.ones(1, N))),
        "tensor-wise": (scaled_mm, (x_fp8, w_fp8.t(), torch.tensor(1.0), torch.tensor(1.0))),
        "fp16 output": (scaled_mm_fp16, (x_fp8, w_fp8.t(), x_scale, w_scale_t)),
        # [K, N] row-major: not the w.t() of an [N, K] weight, so no free permute back
        "row-major b": (scaled_mm, (x_fp8, w_fp8.t().contiguous(), x_scale, w_scale_t)),
    }
    for name, (fn, args) in cases.items():
        gm = _trace(fn, *args)
        fc.ScaledMMRewritePass()(gm.graph)
        assert aten._scaled_mm.default in _targets(gm), f"{name} must not be rewritten"
        assert torch.ops.fp8gemm.dense.default not in _targets(gm), name


class _OtherPass(CustomGraphPass):
    def __call__(self, graph):
        pass

    def uuid(self):
        return b"other"


def test_enable_disable_chain_with_existing_pass():
    other = _OtherPass()
    with inductor_config.patch(post_grad_custom_post_pass=None):
        fc.enable()
        assert fc.is_enabled() and inductor_config.post_grad_custom_post_pass is fc._PASS
        fc.disable()
        assert not fc.is_enabled() and inductor_config.post_grad_custom_post_pass is None
    with inductor_config.patch(post_grad_custom_post_pass=other):
        fc.enable()
        fc.enable()  # idempotent
        assert fc.get_custom_graph_passes(inductor_config.post_grad_custom_post_pass) == (other, fc._PASS)
        fc.disable()
        assert inductor_config.post_grad_custom_post_pass is other
        with fc.enabled():
            assert fc.get_custom_graph_passes(inductor_config.post_grad_custom_post_pass) == (other, fc._PASS)
        assert inductor_config.post_grad_custom_post_pass is other
    uuid = fc.ScaledMMRewritePass().uuid()
    assert isinstance(uuid, bytes) and uuid == fc._PASS.uuid()


@requires_sm90
@pytest.mark.parametrize("api", ["_scaled_mm", pytest.param("scaled_mm", marks=_needs_traceable_scaled_mm_v2)])
def test_rewritten_numbers_on_gpu(api):
    module = BlockScaledLinear(api, bias=api == "_scaled_mm", device="cuda")
    x = torch.randn(256, K, device="cuda")
    with fc.enabled():
        out = torch.compile(module, fullgraph=True)(x)
    assert T.relative_error(out.cpu(), module.reference(x).cpu()) <= 3e-3
