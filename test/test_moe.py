"""FP8MoEExperts against plain-PyTorch float references, adapters, modes, autograd and torch.compile."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch._dynamo.testing import CompileCounterWithBackend

from torch_fp8gemm import testing as T
from torch_fp8gemm.moe import FP8MoEExperts

from conftest import requires_cuda, requires_sm90

E, H, I = 4, 256, 144  # I = 144: the gate/up boundary falls inside a 128-row scale block


def _routing(tokens, num_experts=E, top_k=2, generator=None):
    logits = torch.randn(tokens, num_experts, generator=generator)
    weights, index = torch.topk(logits.softmax(-1), top_k)
    return index, weights / weights.sum(-1, keepdim=True)


def _reference(x, top_k_index, top_k_weights, gate_up, down, fp8=False):
    """The experts as a plain loop over (token, k) in float64. With ``fp8`` the operands of both
    GEMMs are first quantized and dequantized as the recipe does (x and the SiLU output per 1x128
    group, the weights per 128x128 block of each expert)."""
    x = x.double()
    if fp8:
        x = T.dequantize_1x128_f64(*T.quantize_1x128_torch(x))
        gate_up = T.dequantize_128x128_f64(*T.quantize_128x128_torch(gate_up.detach()))
        down = T.dequantize_128x128_f64(*T.quantize_128x128_torch(down.detach()))
    out = torch.zeros_like(x)
    for t in range(x.shape[0]):
        for j in range(top_k_index.shape[1]):
            e = top_k_index[t, j]
            gate, up = (gate_up[e].double() @ x[t]).chunk(2)
            hidden = F.silu(gate) * up
            if fp8:
                hidden = T.dequantize_1x128_f64(*T.quantize_1x128_torch(hidden.float().unsqueeze(0)))[0]
            out[t] += top_k_weights[t, j].double() * (down[e].double() @ hidden)
    return out


@pytest.mark.parametrize("inference", [False, True])
def test_matches_reference(inference):
    experts = FP8MoEExperts(E, H, I, inference=False)
    gate_up, down = experts.gate_up_proj.detach().clone(), experts.down_proj.detach().clone()
    if inference:
        experts = FP8MoEExperts.from_fused(experts.gate_up_proj, experts.down_proj, inference=True)
    x = torch.randn(37, H)
    index, weights = _routing(37, num_experts=E - 1)  # the last expert gets no tokens: an empty group
    with torch.no_grad():
        out = experts(x, index, weights)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert T.relative_error(out, _reference(x, index, weights, gate_up, down, fp8=True)) <= 1e-3
    assert T.relative_error(out, _reference(x, index, weights, gate_up, down)) <= 0.1


def test_bf16_leading_dims_empty_experts_and_dense_weights():
    experts = FP8MoEExperts(8, H, I, dtype=torch.bfloat16, inference=True)
    x = torch.randn(2, 9, H, dtype=torch.bfloat16)
    index, weights = _routing(18, num_experts=3, top_k=2)  # experts 3..7 of 8 get no tokens
    with torch.no_grad():
        out = experts(x, index, weights)
        dense_weights = torch.zeros(18, 8).scatter(1, index, weights)  # [T, E], DeepSeek-V2 style
        out_dense = experts(x, index, dense_weights)
    assert out.shape == (2, 9, H) and out.dtype == torch.bfloat16
    torch.testing.assert_close(out_dense, out)
    gate_up = T.dequantize_128x128_f64(experts.gate_up_proj, experts.gate_up_proj_scale_inv)
    down = T.dequantize_128x128_f64(experts.down_proj, experts.down_proj_scale_inv)
    assert T.relative_error(out.reshape(18, H), _reference(x.reshape(18, H), index, weights, gate_up, down)) <= 0.1
    with torch.no_grad():
        assert experts(x[:0], index[:0], weights[:0]).shape == (0, 9, H)


def test_adapters_agree():
    w_gate, w_up, w_down = torch.randn(E, I, H) * 0.05, torch.randn(E, I, H) * 0.05, torch.randn(E, H, I) * 0.05

    class MLP(nn.Module):  # transformers 4.x Mixtral style: w1 = gate, w3 = up, w2 = down
        def __init__(self, e):
            super().__init__()
            self.w1, self.w3 = nn.Linear(H, I, bias=False), nn.Linear(H, I, bias=False)
            self.w2 = nn.Linear(I, H, bias=False)
            with torch.no_grad():
                self.w1.weight.copy_(w_gate[e]), self.w3.weight.copy_(w_up[e]), self.w2.weight.copy_(w_down[e])

    gate_up = nn.Parameter(torch.cat([w_gate, w_up], dim=1))
    fused = FP8MoEExperts.from_fused(gate_up, nn.Parameter(w_down))
    assert fused.gate_up_proj is gate_up  # reused, not copied
    stacked = FP8MoEExperts.from_experts(w_gate, w_up, w_down)
    modules = FP8MoEExperts.from_modules([MLP(e) for e in range(E)], gate="w1", up="w3", down="w2")
    x = torch.randn(20, H)
    index, weights = _routing(20)
    with torch.no_grad():
        expected = fused(x, index, weights)
        torch.testing.assert_close(stacked(x, index, weights), expected)
        torch.testing.assert_close(modules(x, index, weights), expected)
    assert set(fused.state_dict()) == {"gate_up_proj", "down_proj"}
    assert set(FP8MoEExperts(E, H, I, inference=True).state_dict()) == {
        "gate_up_proj", "gate_up_proj_scale_inv", "down_proj", "down_proj_scale_inv"
    }


def test_errors():
    with pytest.raises(ValueError, match=r"`hidden_size` to be a multiple of 16.*got 100"):
        FP8MoEExperts(4, 100, 128)
    with pytest.raises(ValueError, match=r"`intermediate_size` to be a multiple of 16.*got 72"):
        FP8MoEExperts(4, 128, 72)
    with pytest.raises(ValueError, match=r"`down_proj` of shape \[E, H, I\] = \[4, 256, 128\]"):
        FP8MoEExperts.from_fused(torch.randn(4, 256, 256), torch.randn(4, 256, 64))
    with pytest.raises(ValueError, match=r"`experts\[0\].gate_proj` to be an nn.Linear without bias"):
        FP8MoEExperts.from_modules([nn.Module()])
    experts = FP8MoEExperts(E, H, I)
    with pytest.raises(ValueError, match=r"`top_k_weights` of shape \[T, k\] = \[5, 2\] or \[T, E\] = \[5, 4\]"):
        experts(torch.randn(5, H), torch.zeros(5, 2, dtype=torch.long), torch.ones(5, 3))


def test_backward_training():
    experts = FP8MoEExperts(E, H, I)
    x = torch.randn(24, H, requires_grad=True)
    index, weights = _routing(24)
    weights.requires_grad_()
    experts(x, index, weights).square().sum().backward()

    x_ref = x.detach().double().requires_grad_()
    w_ref = weights.detach().double().requires_grad_()
    gate_up = experts.gate_up_proj.detach().double().requires_grad_()
    down = experts.down_proj.detach().double().requires_grad_()
    _reference(x_ref, index, w_ref, gate_up, down).square().sum().backward()
    for got, want in ((x.grad, x_ref.grad), (weights.grad, w_ref.grad),
                      (experts.gate_up_proj.grad, gate_up.grad), (experts.down_proj.grad, down.grad)):
        assert T.relative_error(got, want) <= 0.15


@pytest.mark.parametrize("intermediate", [I, 256])  # 256: the SiLU-gating output's quantization is traced
def test_compile_fullgraph_dynamic_tokens_one_graph(intermediate):
    experts = FP8MoEExperts(E, H, intermediate, inference=True)
    counter = CompileCounterWithBackend("inductor")
    compiled = torch.compile(experts, backend=counter, fullgraph=True, dynamic=True)
    with torch.no_grad():
        for tokens in (5, 12, 33):
            x = torch.randn(tokens, H)
            index, weights = _routing(tokens)
            torch.testing.assert_close(compiled(x, index, weights), experts(x, index, weights), rtol=1e-3, atol=1e-3)
    assert counter.frame_count == 1, "the token count must not recompile, and forward must not sync"


def test_export_dynamic_tokens():
    experts = FP8MoEExperts(E, H, I, inference=True)
    tokens = torch.export.Dim("tokens", min=2, max=4096)
    exported = torch.export.export(experts, (torch.randn(6, H), *_routing(6)), dynamic_shapes=({0: tokens},) * 3)
    assert str(exported.graph).count("fp8gemm.grouped_moe") == 2
    x, (index, weights) = torch.randn(19, H), _routing(19)
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x, index, weights), experts(x, index, weights))


@requires_sm90
def test_cuda_graphs_reduce_overhead():
    experts = FP8MoEExperts(8, 512, 256, device="cuda", dtype=torch.bfloat16, inference=True)
    compiled = torch.compile(experts, mode="reduce-overhead", fullgraph=True)
    with torch.no_grad():
        for _ in range(3):
            x = torch.randn(64, 512, device="cuda", dtype=torch.bfloat16)
            index, weights = (t.cuda() for t in _routing(64, num_experts=8))
            torch.testing.assert_close(compiled(x, index, weights).float(), experts(x, index, weights).float(),
                                       rtol=2e-2, atol=2e-2)


def test_expert_block_layout_emulates_the_k_grouped_wgrad():
    # The device-side layout of fp8gemm::grouped_moe_wgrad's Hopper path, checked on any device:
    # quantizing the padded layout and reducing each expert over its own K blocks (emulated in float64)
    # gives the per-expert recipe (the host-sync path's numbers).
    from torch_fp8gemm.ops import _expert_block_layout

    torch.manual_seed(0)
    sizes, n, k = [0, 1, 127, 128, 129, 0, 300], 24, 40
    m = sum(sizes) + 5
    ends = torch.tensor(sizes).cumsum(0).to(torch.int32)
    dy, x = torch.randn(m, n), torch.randn(m, k)
    dest, inside, bounds, total = _expert_block_layout(ends, m, len(sizes))
    assert total % 128 == 0 and int(bounds[-1]) * 128 <= total - 128
    assert torch.unique(dest[inside]).numel() == int(inside.sum())  # no two tokens share a row
    assert int(inside.sum()) == sum(sizes)
    dy_pad, x_pad = T.to_expert_blocks(dy, dest, total), T.to_expert_blocks(x, dest, total)
    start = 0
    for g, end in enumerate(ends.tolist()):
        lo, hi = int(bounds[g]) * 128, int(bounds[g + 1]) * 128
        assert hi - lo == -(-(end - start) // 128) * 128
        got = T.emulated_wgrad(dy_pad[lo:hi], x_pad[lo:hi]) if hi > lo else torch.zeros(n, k, dtype=torch.float64)
        want = T.emulated_wgrad(dy[start:end], x[start:end]) if end > start else torch.zeros(n, k, dtype=torch.float64)
        assert torch.allclose(got, want, rtol=0, atol=1e-9), f"expert {g}"
        start = end
    # Rows past the last expert reach the spare block only, as zeros.
    assert bool((dest[~inside] == total - 128).all())
    assert torch.count_nonzero(dy_pad[int(bounds[-1]) * 128:]) == 0
    assert torch.count_nonzero(x_pad[int(bounds[-1]) * 128:]) == 0
    # The gather map that the quantizer takes on the GPU path builds the same layout, and quantizing
    # through it gives the bytes of quantizing the materialized layout.
    from torch_fp8gemm.ops import _expert_block_rows

    rows = _expert_block_rows(dest, total)
    assert torch.equal(torch.where((rows >= 0).unsqueeze(1), x[rows.clamp(min=0)], 0.0), x_pad)
    for t, t_pad in ((dy, dy_pad), (x, x_pad)):
        q, s = torch.ops.fp8gemm._quantize_1x128_transposed_rows(t, rows)
        rq, rs = torch.ops.fp8gemm.quantize_1x128_transposed(t_pad)
        assert torch.equal(q.view(torch.uint8), rq.view(torch.uint8)) and torch.equal(s, rs)


def test_gather_rows_gradients_are_gathers():
    # The two permutations of the MoE forward: tokens gathered k times into expert order, and the
    # expert-ordered rows gathered back into (token, k) order; gradients checked in float64.
    from torch_fp8gemm.moe import _gather_rows

    torch.manual_seed(0)
    tokens, k, h = 7, 3, 5
    expert_ids = torch.randint(0, 4, (tokens * k,))
    order = torch.argsort(expert_ids, stable=True)
    position = torch.empty_like(order).scatter_(0, order, torch.arange(order.shape[0]))
    x = torch.randn(tokens, h, dtype=torch.float64, requires_grad=True)
    assert torch.equal(_gather_rows(x, order // k, position, k), x[order // k])
    torch.autograd.gradcheck(lambda t: _gather_rows(t, order // k, position, k), (x,))
    rows = torch.randn(tokens * k, h, dtype=torch.float64, requires_grad=True)
    assert torch.equal(_gather_rows(rows, position, order), torch.empty_like(rows).index_copy_(0, order, rows))
    torch.autograd.gradcheck(lambda t: _gather_rows(t, position, order), (rows,))
