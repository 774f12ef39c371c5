"""Gradients of the ops against an emulated float64 reference of the recipe and exact autograd."""
import pytest
import torch

import torch_fp8gemm as fg
from torch_fp8gemm import testing as T

from conftest import DEVICES


def _emulated_nt(x, y):
    """float64 x @ y.T with x quantized per 1x128 and y per 128x128 along the reduction dim."""
    return T.reference_dense(*T.quantize_1x128_torch(x), *T.quantize_128x128_torch(y))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("m,n,k", [(1, 8, 128), (70, 136, 384), (257, 264, 256)])
def test_dense_gradients(device, m, n, k):
    x = torch.randn(m, k, dtype=torch.float32, device=device, requires_grad=True)
    w = torch.randn(n, k, dtype=torch.bfloat16, device=device, requires_grad=True)
    bias = torch.randn(n, dtype=torch.bfloat16, device=device, requires_grad=True)
    dy = torch.randn(m, n, device=device)
    out = fg.dense(x, w, bias=bias, out_dtype=torch.float32)
    out.backward(dy)
    assert x.grad.dtype == x.dtype and w.grad.dtype == w.dtype and bias.grad.dtype == bias.dtype

    dy_c, x_c, w_c = dy.cpu(), x.detach().cpu(), w.detach().float().cpu()
    # dgrad: dy per 1x128 along N, W^T per 128x128; wgrad: dy^T per 1x128 along M, x^T per 128x128
    expected_dx = _emulated_nt(dy_c, w_c.T.contiguous())
    expected_dw = _emulated_nt(dy_c.T.contiguous(), x_c.T.contiguous())
    assert T.relative_error(x.grad.cpu(), expected_dx) <= 3e-3
    assert T.relative_error(w.grad.float().cpu(), expected_dw) <= 3e-3  # bf16 parameter dtype
    torch.testing.assert_close(bias.grad.float().cpu(), dy_c.sum(0), rtol=1e-2, atol=1e-2)
    # against exact float64 autograd: catches a wrong recipe, not rounding
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
    assert T.relative_error(w.grad.cpu(), _emulated_nt(dy.T.contiguous(), x.T.contiguous())) <= 3e-3
    assert T.relative_error(w.grad.cpu(), dy.double().T @ x.double()) <= 0.08


@pytest.mark.parametrize("device", DEVICES)
def test_grouped_moe_gradients(device):
    sizes, n, k = [5, 0, 40, 1], 136, 256
    m = sum(sizes) + 3
    offs = torch.tensor(sizes, dtype=torch.int32).cumsum(0, dtype=torch.int32).to(device)
    x = torch.randn(m, k, device=device, requires_grad=True)
    w = torch.randn(len(sizes), n, k, device=device, requires_grad=True)
    dy = torch.randn(m, n, device=device)
    fg.grouped_moe(x, w, offs, out_dtype=torch.float32).backward(dy)
    x_c, w_c, dy_c = x.detach().cpu().double(), w.detach().cpu().double(), dy.cpu().double()
    exact_dx, exact_dw, start = torch.zeros_like(x_c), torch.zeros_like(w_c), 0
    for g, end in enumerate(offs.tolist()):
        exact_dx[start:end] = dy_c[start:end] @ w_c[g]
        exact_dw[g] = dy_c[start:end].T @ x_c[start:end]
        start = end
    assert T.relative_error(x.grad.cpu(), exact_dx) <= 0.08
    assert (x.grad[sum(sizes):] == 0).all()
    assert T.relative_error(w.grad.cpu(), exact_dw) <= 1e-5  # float32 wgrad for now
    assert (w.grad[1] == 0).all(), "an empty expert gets a zero gradient"


@pytest.mark.parametrize("device", DEVICES)
def test_grouped_moe_masked_gradients(device):
    groups, max_m, n, k = 3, 16, 136, 256
    masked = torch.tensor([0, 16, 5], dtype=torch.int32, device=device)
    x = torch.randn(groups, max_m, k, device=device, requires_grad=True)
    w = torch.randn(groups, n, k, device=device, requires_grad=True)
    dy = torch.randn(groups, max_m, n, device=device)
    fg.grouped_moe_masked(x, w, masked, 8, out_dtype=torch.float32).backward(dy)
    valid = (torch.arange(max_m).unsqueeze(0) < masked.cpu().unsqueeze(1)).unsqueeze(-1).double()
    dy_c = dy.cpu().double() * valid
    exact_dx = dy_c @ w.detach().cpu().double()
    exact_dw = dy_c.transpose(1, 2) @ x.detach().cpu().double()
    assert T.relative_error(x.grad.cpu(), exact_dx) <= 0.08
    assert T.relative_error(w.grad.cpu(), exact_dw) <= 1e-5
