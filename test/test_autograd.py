"""Gradients of the ops against an emulated float64 reference of the training recipe (the same
quantization applied in float64) and against exact float64 autograd (which catches a wrong recipe).
Recipe: dgrad quantizes dy per 1x128 along N and keeps W's 128x128 blocks; wgrad quantizes dy^T and
x^T per 1x128 along M (the tokens)."""
import pytest
import torch

import torch_fp8gemm as fg
from torch_fp8gemm import testing as T

from conftest import DEVICES


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("m,n,k", [(1, 8, 128), (70, 136, 384), (257, 264, 256), (300, 128, 144)])
def test_dense_gradients(device, m, n, k):
    x = torch.randn(m, k, dtype=torch.float32, device=device, requires_grad=True)
    w = torch.randn(n, k, dtype=torch.bfloat16, device=device, requires_grad=True)
    bias = torch.randn(n, dtype=torch.bfloat16, device=device, requires_grad=True)
    dy = torch.randn(m, n, device=device)
    out = fg.dense(x, w, bias=bias, out_dtype=torch.float32)
    out.backward(dy)
    assert x.grad.dtype == x.dtype and w.grad.dtype == w.dtype and bias.grad.dtype == bias.dtype

    dy_c, x_c, w_c = dy.cpu(), x.detach().cpu(), w.detach().float().cpu()
    assert T.relative_error(x.grad.cpu(), T.emulated_dgrad(dy_c, w_c)) <= 3e-3
    assert T.relative_error(w.grad.float().cpu(), T.emulated_wgrad(dy_c, x_c)) <= 3e-3  # bf16 parameter
    torch.testing.assert_close(bias.grad.float().cpu(), dy_c.sum(0), rtol=1e-2, atol=1e-2)
    assert T.relative_error(x.grad.cpu(), dy_c.double() @ w_c.double()) <= 0.08
    assert T.relative_error(w.grad.float().cpu(), dy_c.double().T @ x_c.double()) <= 0.08


@pytest.mark.parametrize("device", DEVICES)
def test_fp8_operands_get_no_gradient(device):
    a, a_scale, _, _ = [t.to(device) for t in T.random_fp8_operands(16, 136, 256)]
    w = torch.randn(136, 256, device=device, requires_grad=True)
    out = fg.dense(a, w, a_scale, out_dtype=torch.float32)
    out.sum().backward()
    x = T.dequantize_1x128_f64(a.cpu(), a_scale.cpu()).float()  # the constant, dequantized exactly
    dy = torch.ones(16, 136)
    assert T.relative_error(w.grad.cpu(), T.emulated_wgrad(dy, x)) <= 3e-3
    assert T.relative_error(w.grad.cpu(), dy.double().T @ x.double()) <= 0.08


@pytest.mark.parametrize("device", DEVICES)
def test_fp8_weight_dgrad_reuses_its_blocks(device):
    _, _, b, b_scale = [t.to(device) for t in T.random_fp8_operands(16, 136, 256)]
    x = torch.randn(40, 256, device=device, requires_grad=True)
    dy = torch.randn(40, 136, device=device)
    fg.dense(x, b, None, b_scale, out_dtype=torch.float32).backward(dy)
    # dgrad multiplies by W^T's blocks, which are W's fp8 blocks and scales transposed
    b_t, b_scale_t = b.cpu().T.contiguous(), b_scale.cpu().T.contiguous()
    expected = T.reference_dense(*T.quantize_1x128_torch(dy.cpu()), b_t, b_scale_t)
    assert T.relative_error(x.grad.cpu(), expected) <= 3e-3


@pytest.mark.parametrize("device", DEVICES)
def test_dense_1x128_matches_reference(device):
    a, sa = T.quantize_1x128_torch(torch.randn(70, 272) * 3)
    b, sb = T.quantize_1x128_torch(torch.randn(136, 272))
    out = fg.dense_1x128(a.to(device), b.to(device), sa.to(device), sb.to(device), out_dtype=torch.float32)
    err = T.relative_error(out.cpu(), T.reference_dense_1x128(a, sa, b, sb))
    assert err <= T.error_bar(out, tensor_core=T.uses_tensor_cores(out.device))


def _grouped_case(device, sizes, n, k):
    m = sum(sizes) + 3
    offs = torch.tensor(sizes, dtype=torch.int32).cumsum(0, dtype=torch.int32).to(device)
    x = torch.randn(m, k, device=device, requires_grad=True)
    w = torch.randn(len(sizes), n, k, device=device, requires_grad=True)
    dy = torch.randn(m, n, device=device)
    return offs, x, w, dy


@pytest.mark.parametrize("device", DEVICES)
def test_grouped_moe_gradients(device):
    sizes, n, k = [5, 0, 140, 1], 136, 256
    offs, x, w, dy = _grouped_case(device, sizes, n, k)
    fg.grouped_moe(x, w, offs, out_dtype=torch.float32).backward(dy)
    x_c, w_c, dy_c = x.detach().cpu(), w.detach().cpu(), dy.cpu()
    emu_dx, emu_dw = torch.zeros_like(x_c, dtype=torch.float64), torch.zeros_like(w_c, dtype=torch.float64)
    exact_dx, exact_dw = emu_dx.clone(), emu_dw.clone()
    start = 0
    for g, end in enumerate(offs.tolist()):
        if end > start:
            emu_dx[start:end] = T.emulated_dgrad(dy_c[start:end], w_c[g])
            emu_dw[g] = T.emulated_wgrad(dy_c[start:end], x_c[start:end])
            exact_dx[start:end] = dy_c[start:end].double() @ w_c[g].double()
            exact_dw[g] = dy_c[start:end].double().T @ x_c[start:end].double()
        start = end
    assert T.relative_error(x.grad.cpu(), emu_dx) <= 3e-3
    assert T.relative_error(w.grad.cpu(), emu_dw) <= 3e-3
    assert T.relative_error(x.grad.cpu(), exact_dx) <= 0.08
    assert T.relative_error(w.grad.cpu(), exact_dw) <= 0.08
    assert (x.grad[sum(sizes):] == 0).all()
    assert (w.grad[1] == 0).all(), "an empty expert gets a zero gradient"


@pytest.mark.parametrize("device", DEVICES)
def test_grouped_moe_masked_gradients(device):
    groups, max_m, n, k = 3, 16, 136, 256
    masked = torch.tensor([0, 16, 5], dtype=torch.int32, device=device)
    x = torch.randn(groups, max_m, k, device=device, requires_grad=True)
    w = torch.randn(groups, n, k, device=device, requires_grad=True)
    dy = torch.randn(groups, max_m, n, device=device)
    fg.grouped_moe_masked(x, w, masked, 8, out_dtype=torch.float32).backward(dy)
    x_c, w_c, dy_c = x.detach().cpu(), w.detach().cpu(), dy.cpu()
    emu_dx, emu_dw = torch.zeros_like(x_c, dtype=torch.float64), torch.zeros_like(w_c, dtype=torch.float64)
    for g, rows in enumerate(masked.tolist()):
        if rows:
            emu_dx[g, :rows] = T.emulated_dgrad(dy_c[g, :rows], w_c[g])
            emu_dw[g] = T.emulated_wgrad(dy_c[g, :rows], x_c[g, :rows])
    valid = (torch.arange(max_m).unsqueeze(0) < masked.cpu().unsqueeze(1)).unsqueeze(-1).double()
    exact_dx = (dy_c.double() * valid) @ w_c.double()
    exact_dw = (dy_c.double() * valid).transpose(1, 2) @ x_c.double()
    assert T.relative_error(x.grad.cpu(), emu_dx) <= 3e-3
    assert T.relative_error(w.grad.cpu(), emu_dw) <= 3e-3
    assert T.relative_error(x.grad.cpu(), exact_dx) <= 0.08
    assert T.relative_error(w.grad.cpu(), exact_dw) <= 0.08


@pytest.mark.parametrize("device", DEVICES)
def test_grouped_wgrad_bf16_out_is_the_rounded_fp32_result(device):
    grad, x = torch.randn(300, 136, device=device), torch.randn(300, 256, device=device)
    offs = torch.tensor([0, 130, 130, 290], dtype=torch.int32, device=device)
    fp32 = fg.grouped_moe_wgrad(grad, x, offs, 4)
    bf16 = fg.grouped_moe_wgrad(grad, x, offs, 4, torch.bfloat16)
    assert fp32.dtype == torch.float32 and bf16.dtype == torch.bfloat16
    assert torch.equal(bf16, fp32.to(torch.bfloat16))
    assert (fp32[0] == 0).all() and (fp32[2] == 0).all(), "experts without rows get zero gradients"
    with pytest.raises(ValueError, match="out_dtype"):
        fg.grouped_moe_wgrad(grad, x, offs, 4, torch.float16)


@pytest.mark.parametrize("device", DEVICES)
def test_float8_operands_with_requires_grad_get_no_gradient(device):
    # A float8 tensor that requires grad is still a constant: no (clamped, float8) gradient for it,
    # while the high-precision operand of the same call gets its gradient. Every GEMM op.
    x = torch.randn(64, 256, device=device)
    w = torch.randn(136, 256, device=device)
    xf, xs = fg.quantize_1x128(x)
    wf, ws = fg.quantize_128x128(w)
    wf1, ws1 = fg.quantize_1x128(w)
    calls = [
        ("dense a", lambda a, b: fg.dense(a, b, xs, None, out_dtype=torch.float32), xf, w),
        ("dense b", lambda a, b: fg.dense(a, b, None, ws, out_dtype=torch.float32), x, wf),
        ("dense_1x128 a", lambda a, b: fg.dense_1x128(a, b, xs, None, out_dtype=torch.float32), xf, w),
        ("dense_1x128 b", lambda a, b: fg.dense_1x128(a, b, None, ws1, out_dtype=torch.float32), x, wf1),
    ]
    offsets = torch.tensor([20, 64], dtype=torch.int32, device=device)
    experts_f, experts_s = fg.quantize_128x128(torch.randn(2, 136, 256, device=device))
    calls.append(("grouped_moe b", lambda a, b: fg.grouped_moe(a, b, offsets, None, experts_s, out_dtype=torch.float32),
                  x, experts_f))
    calls.append(("grouped_moe a", lambda a, b: fg.grouped_moe(a, b, offsets, xs, None, out_dtype=torch.float32),
                  xf, torch.randn(2, 136, 256, device=device)))
    masked = torch.tensor([5, 32], dtype=torch.int32, device=device)
    xm = torch.randn(2, 32, 256, device=device)
    xmf, xms = fg.quantize_1x128(xm)
    calls.append(("grouped_moe_masked a",
                  lambda a, b: fg.grouped_moe_masked(a, b, masked, 16, xms, None, out_dtype=torch.float32),
                  xmf, torch.randn(2, 136, 256, device=device)))
    for label, op, a, b in calls:
        a = a.clone().requires_grad_()
        b = b.clone().requires_grad_()
        op(a, b).sum().backward()
        for name, t in (("a", a), ("b", b)):
            if t.dtype == torch.float8_e4m3fn:
                assert t.grad is None, f"{label}: the float8 operand {name} got a gradient"
            else:
                assert t.grad is not None and torch.isfinite(t.grad).all(), f"{label}: no gradient for {name}"
