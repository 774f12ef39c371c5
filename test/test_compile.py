"""opcheck, fake/meta kernels, torch.compile and torch.export of the ops (CPU in CI)."""
import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend
from torch._subclasses.fake_tensor import FakeTensorMode

import torch_fp8gemm as fg
from torch_fp8gemm import testing as T

from conftest import DEVICES

# test_schema compares outputs with allclose, which has no float8 kernel on CPU
# (pytorch/pytorch#135998): fp8-input samples run the other three utilities.
FP8_UTILS = ("test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")


def _fp8_samples(device):
    a, a_scale, b, b_scale = [t.to(device) for t in T.random_fp8_operands(33, 136, 384)]
    ga, gas, gb, gbs = [t.to(device) for t in T.random_fp8_operands(40, 136, 256, b_lead=(3,))]
    offs = torch.tensor([10, 10, 33], dtype=torch.int32, device=device)
    ma, mas, mb, mbs = [t.to(device) for t in T.random_fp8_operands(16, 136, 256, a_lead=(2,), b_lead=(2,))]
    # Every row below masked_m: the op leaves the others unspecified, and opcheck compares whole outputs.
    masked = torch.tensor([16, 16], dtype=torch.int32, device=device)
    r1, r1_scale = T.quantize_1x128_torch(torch.randn(33, 384, device=device))
    r2, r2_scale = T.quantize_1x128_torch(torch.randn(136, 384, device=device))
    return [
        (torch.ops.fp8gemm.dense.default, (a, b, a_scale, b_scale), {}),
        (torch.ops.fp8gemm.dense.default, (a, b), {"a_scale": a_scale, "b_scale": b_scale, "out_dtype": torch.float32}),
        (torch.ops.fp8gemm.grouped_moe.default, (ga, gb, offs, gas, gbs), {}),
        (torch.ops.fp8gemm.grouped_moe_masked.default, (ma, mb, masked, 8, mas, mbs), {}),
        (torch.ops.fp8gemm.dense_1x128.default, (r1, r2, r1_scale, r2_scale), {}),
    ]


def _high_precision_samples(device, requires_grad):
    def hp(*shape):
        return torch.randn(*shape, device=device, requires_grad=requires_grad)

    offs = torch.tensor([10, 10, 33], dtype=torch.int32, device=device)
    masked = torch.tensor([16, 16], dtype=torch.int32, device=device)  # every row written (see _fp8_samples)
    return [
        (torch.ops.fp8gemm.dense.default, (hp(33, 256), hp(136, 256)), {"bias": hp(136)}),
        (torch.ops.fp8gemm.dense.default, (hp(7, 128), hp(8, 128)), {"out_dtype": torch.float32}),
        (torch.ops.fp8gemm.grouped_moe.default, (hp(40, 256), hp(3, 136, 256), offs), {}),
        (torch.ops.fp8gemm.grouped_moe_masked.default, (hp(2, 16, 256), hp(2, 136, 256), masked, 8), {}),
        (torch.ops.fp8gemm.dense_1x128.default, (hp(33, 256), hp(136, 256)), {"out_dtype": torch.float32}),
        # a backward-only op (no double backward): inputs never require grad
        (torch.ops.fp8gemm.grouped_moe_wgrad.default,
         (torch.randn(40, 136, device=device), torch.randn(40, 256, device=device), offs, 3), {}),
        (torch.ops.fp8gemm.quantize_1x128.default, (torch.randn(3, 5, 300, device=device),), {}),
        (torch.ops.fp8gemm.quantize_128x128.default, (torch.randn(2, 200, 300, device=device),), {}),
        (torch.ops.fp8gemm.quantize_128x128_transposed.default, (torch.randn(2, 200, 300, device=device),), {}),
    ]


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_fp8_inputs(device):
    for op, args, kwargs in _fp8_samples(device):
        torch.library.opcheck(op, args, kwargs, test_utils=FP8_UTILS)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck_high_precision_inputs(device, requires_grad):
    for op, args, kwargs in _high_precision_samples(device, requires_grad):
        # quantize ops return fp8, which test_schema cannot compare on CPU either
        returns_fp8 = op.name().startswith("fp8gemm::quantize")
        utils = FP8_UTILS if returns_fp8 else ("test_schema", *FP8_UTILS)
        torch.library.opcheck(op, args, kwargs, test_utils=utils)


def test_fake_and_meta_shapes():
    with FakeTensorMode():
        a = torch.empty(77, 384, dtype=T.FP8)
        b = torch.empty(136, 384, dtype=T.FP8)
        out = fg.dense(a, b, torch.empty(77, 3), torch.empty(2, 3), out_dtype=torch.float32)
        assert out.shape == (77, 136) and out.dtype == torch.float32
        values, scale = fg.quantize_1x128(torch.empty(2, 7, 300))
        assert values.dtype == T.FP8 and scale.shape == (2, 7, 3) and scale.stride() == (7, 1, 16)
    meta = fg.dense(torch.empty(5, 128, device="meta"), torch.empty(8, 128, device="meta"))
    assert meta.shape == (5, 8) and meta.dtype == torch.bfloat16 and meta.device.type == "meta"
    meta = fg.grouped_moe_masked(
        torch.empty(4, 9, 128, device="meta"), torch.empty(4, 16, 128, device="meta"),
        torch.empty(4, dtype=torch.int32, device="meta"), 3,
    )
    assert meta.shape == (4, 9, 16)


@pytest.mark.parametrize("backend", ["eager", "aot_eager", "inductor"])
def test_compile_fullgraph_dynamic_m_one_graph(backend):
    w = torch.randn(136, 256)
    w_fp8, w_scale = fg.quantize_128x128(w)
    bias = torch.randn(136)

    def fn(x):
        x_fp8, x_scale = fg.quantize_1x128(x)
        y = fg.dense(x_fp8, w_fp8, x_scale, w_scale, bias=bias)
        return torch.relu(y) + fg.dense(x, w, out_dtype=torch.float32).to(torch.bfloat16)

    counter = CompileCounterWithBackend(backend)
    compiled = torch.compile(fn, backend=counter, fullgraph=True, dynamic=True)
    for m in (4, 12, 20, 33):
        x = torch.randn(m, 256)
        torch.testing.assert_close(compiled(x).float(), fn(x).float(), rtol=2e-2, atol=2e-2)
    assert counter.frame_count == 1, "dynamic M must not recompile"


def test_compile_grouped_ops():
    b = torch.randn(3, 136, 256)

    def fn(x, offs, xm, masked):
        return fg.grouped_moe(x, b, offs), fg.grouped_moe_masked(xm, b, masked, 4)

    compiled = torch.compile(fn, fullgraph=True, dynamic=True)
    args = (torch.randn(30, 256), torch.tensor([5, 5, 25], dtype=torch.int32), torch.randn(3, 8, 256),
            torch.tensor([1, 8, 0], dtype=torch.int32))
    for got, want in zip(compiled(*args), fn(*args)):
        torch.testing.assert_close(got.float(), want.float(), rtol=2e-2, atol=2e-2)


def test_compile_backward():
    w = torch.randn(136, 256, requires_grad=True)

    def fn(x):
        return fg.dense(x, w, out_dtype=torch.float32).square().sum()

    x = torch.randn(17, 256, requires_grad=True)
    torch.compile(fn, fullgraph=True, backend="aot_eager")(x).backward()
    gx, gw = x.grad.clone(), w.grad.clone()
    x.grad = w.grad = None
    fn(x).backward()
    torch.testing.assert_close(gx, x.grad)
    torch.testing.assert_close(gw, w.grad)


def test_export_dynamic_m():
    class Layer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(136, 256))

        def forward(self, x):
            return fg.dense(x, self.w)

    m = torch.export.Dim("M", min=2, max=4096)
    exported = torch.export.export(Layer(), (torch.randn(8, 256),), dynamic_shapes=({0: m},))
    assert "fp8gemm.dense" in str(exported.graph)
    assert exported.module()(torch.randn(19, 256)).shape == (19, 136)
