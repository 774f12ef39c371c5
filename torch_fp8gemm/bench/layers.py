"""Layer benchmarks: FP8Linear and FP8MoEExperts as a model calls them, against bf16 and a
torchao-style rowwise FP8 linear.

    python -m torch_fp8gemm.bench.layers [--suite forward|training|all] [--iters N] [--out FILE]

* :func:`benchmark_linear_forward`: ``y = layer(x)`` for x bf16 [T, K] under inference mode.
  FP8Linear in inference mode (weight quantized once, outside the timing; the 1x128 quantization
  of x in every call is timed) against bf16 ``nn.Linear``, eager against eager and
  ``torch.compile``'d against ``torch.compile``'d (Inductor, fullgraph, static shapes).
* :func:`benchmark_training_step`: forward + backward (dx and dW; MoE also d routing weights) of one
  layer: FP8Linear in training mode against bf16 ``nn.Linear`` and a rowwise FP8 linear on
  ``torch._scaled_mm`` (eager and compiled); FP8MoEExperts in training mode against the same expert
  computation in bf16 on ``torch._grouped_mm``.

Timing: :class:`~torch_fp8gemm.bench.gemm.KernelTimer` sums the device time of every kernel the
timed callable launches (quantization, transposes, gradient GEMMs, the MoE sort and un-permute),
with the L2 cache flushed before each call, median over ``iters`` calls. Host time (Python, kernel
launches, the host sync of the MoE weight gradient) is not counted. ``small=True`` runs tiny sizes
with the host clock (:class:`~torch_fp8gemm.bench.gemm.WallTimer`) and Dynamo's eager backend: a
smoke test of the code paths on a CPU, not a measurement.
"""
from __future__ import annotations

import argparse
import math
import sys
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .gemm import BASELINE_ERRORS, _environment, _failure_reason, _log, format_table, timer_for, write_report
from ..moe import FP8MoEExperts
from ..nn import FP8Linear

__all__ = ["benchmark_linear_forward", "benchmark_training_step", "RowwiseFP8Linear", "BF16GroupedExperts"]

_FP8 = torch.float8_e4m3fn
_FP8_MAX = 448.0

# (model, layer, in_features K, out_features N). DeepSeek-V3: its dense-layer GEMMs
# (MLA q_a + kv_a fused, q_b, o_proj) and the dense-layer MLP (intermediate 18432); Llama-3-70B:
# fused q/k/v (64 + 2 x 8 heads of 128) and the MLP (intermediate 28672).
FORWARD_LAYERS = [
    ("DeepSeek-V3", "q_a + kv_a", 7168, 2112),
    ("DeepSeek-V3", "q_b", 1536, 24576),
    ("DeepSeek-V3", "o_proj", 16384, 7168),
    ("DeepSeek-V3", "MLP gate or up", 7168, 18432),
    ("DeepSeek-V3", "MLP down", 18432, 7168),
    ("Llama-70B", "q + k + v", 8192, 10240),
    ("Llama-70B", "MLP gate or up", 8192, 28672),
    ("Llama-70B", "MLP down", 28672, 8192),
]
TRAINING_LINEARS = [("DeepSeek-V3", "MLP gate or up", 7168, 18432), ("DeepSeek-V3", "MLP down", 18432, 7168)]
# DeepSeek-V3's routed experts (hidden 7168, expert intermediate 2048) with 16 experts and top-4
# instead of 256 and top-8: 1024 / 4096 rows per expert at 4096 / 16384 tokens.
TRAINING_MOE = (16, 7168, 2048, 4)  # (experts, hidden, intermediate, top-k)
TOKENS = (4096, 16384)

# small=True (CPU smoke runs): the same code paths on tiny sizes.
SMALL_FORWARD_LAYERS = [("tiny", "up", 256, 512), ("tiny", "down", 512, 256)]
SMALL_TRAINING_LINEARS = [("tiny", "up", 256, 512)]
SMALL_TRAINING_MOE = (4, 256, 128, 2)
SMALL_TOKENS = (64,)

_SMALL_NOTE = ("small=True: tiny sizes, Dynamo's eager backend instead of Inductor and, off CUDA, host wall-clock "
               "time: a smoke test of the code paths, not a measurement.")



def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _compile(module: nn.Module, small: bool) -> nn.Module:
    """torch.compile with static shapes (one graph per token count, as a serving or training run
    with fixed shapes gets); small runs trace with Dynamo only (no Inductor code generation)."""
    return torch.compile(module, fullgraph=True, dynamic=False, backend="eager" if small else "inductor")


def _timed(name: str, fn: Callable[[], object], timer, iters: int, device, warm: bool = False) -> float:
    """Median µs of ``fn``, or NaN with a logged reason when it cannot run here. ``warm``: call it
    twice first (compiles outside the timing)."""
    try:
        if warm:
            fn()
            fn()
            _sync(device)
        return timer.median_us(fn, iters)
    except BASELINE_ERRORS as exc:
        _log(f"      {name}: n/a ({_failure_reason(exc, 120)})")
        return float("nan")


def _timed_interleaved(named_fns: dict, timer, iters: int, device, warm: bool = True) -> dict:
    """Median µs of each callable of ``named_fns`` (name -> fn), timed round-robin so that clock drift
    over the run hits all alike (KernelTimer.median_us_interleaved). ``warm``: each is called twice
    first (compiles outside the timing); one that cannot run here reads NaN with a logged reason."""
    runnable = {}
    for name, fn in named_fns.items():
        try:
            if warm:
                fn()
                fn()
                _sync(device)
            runnable[name] = fn
        except BASELINE_ERRORS as exc:
            label = " ".join(name) if isinstance(name, tuple) else name
            _log(f"      {label}: n/a ({_failure_reason(exc, 120)})")
    us = dict.fromkeys(named_fns, float("nan"))
    if runnable:
        us.update(zip(runnable, timer.median_us_interleaved(list(runnable.values()), iters)))
    return us


def _us(us: float) -> str:
    return "n/a" if math.isnan(us) else f"{us:.1f}"


def _tflops(flops: float, us: float) -> str:
    return "n/a" if math.isnan(us) else f"{flops / us / 1e6:.0f}"


def _ratio(baseline_us: float, ours_us: float) -> str:
    return "n/a" if math.isnan(baseline_us) or math.isnan(ours_us) else f"{baseline_us / ours_us:.2f}"


def _geomean_line(label: str, ratios: list[float]) -> str:
    ratios = [r for r in ratios if not math.isnan(r)]
    if not ratios:
        return f"{label}: n/a."
    geomean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    return f"{label}: geometric mean {geomean:.2f} over {len(ratios)} cases, lowest {min(ratios):.2f}."


def _release(device) -> None:
    torch._dynamo.reset()  # compiled graphs (and their guards on the freed modules) go too
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


# --------------------------------------------------------------------------------------------
# Forward (inference)


def _select(layers, only: Optional[str]):
    """Layers whose "model layer" name contains one of the comma-separated `only` fragments."""
    if not only:
        return layers
    wanted = [w.strip().lower() for w in only.split(",") if w.strip()]
    return [entry for entry in layers if any(w in f"{entry[0]} {entry[1]}".lower() for w in wanted)]


def benchmark_linear_forward(iters: int, timer=None, *, small: bool = False, device: Optional[str] = None,
                             only: Optional[str] = None) -> str:
    """Inference forward of one linear layer: FP8Linear (inference mode) vs bf16 nn.Linear, eager and
    compiled, for each layer of FORWARD_LAYERS at 4096 and 16384 tokens. Returns a markdown table."""
    device = device or _default_device()
    timer = timer or timer_for(device)
    layers, token_counts = (SMALL_FORWARD_LAYERS, SMALL_TOKENS) if small else (FORWARD_LAYERS, TOKENS)
    layers = _select(layers, only)
    header = ["model", "layer", "K→N", "tokens", "bf16 eager µs", "FP8 eager µs", "× eager", "bf16 compiled µs",
              "FP8 compiled µs", "× compiled", "FP8 compiled TFLOP/s"]
    rows, eager_ratios, compiled_ratios = [], [], []
    torch.manual_seed(0)
    for i, (model, layer, k, n) in enumerate(layers):
        _log(f"  [{i + 1}/{len(layers)}] forward {model} {layer} {k}->{n}")
        linear = nn.Linear(k, n, bias=False, device=device, dtype=torch.bfloat16)
        fp8 = FP8Linear.from_linear(linear, inference=True)
        variants = {("eager", "bf16"): linear, ("eager", "fp8"): fp8,
                    ("compiled", "bf16"): _compile(linear, small), ("compiled", "fp8"): _compile(fp8, small)}
        with torch.inference_mode():
            for tokens in token_counts:
                x = torch.randn(tokens, k, device=device, dtype=torch.bfloat16)
                us = _timed_interleaved({key: (lambda module=module: module(x)) for key, module in variants.items()},
                                        timer, iters, device)
                eager_ratios.append(us["eager", "bf16"] / us["eager", "fp8"])
                compiled_ratios.append(us["compiled", "bf16"] / us["compiled", "fp8"])
                rows.append([model, layer, f"{k}→{n}", str(tokens), _us(us["eager", "bf16"]), _us(us["eager", "fp8"]),
                             _ratio(us["eager", "bf16"], us["eager", "fp8"]), _us(us["compiled", "bf16"]),
                             _us(us["compiled", "fp8"]), _ratio(us["compiled", "bf16"], us["compiled", "fp8"]),
                             _tflops(2.0 * tokens * n * k, us["compiled", "fp8"])])
                _log(f"      T={tokens}: eager bf16 {_us(us['eager', 'bf16'])} µs, FP8 {_us(us['eager', 'fp8'])} µs; "
                     f"compiled bf16 {_us(us['compiled', 'bf16'])} µs, FP8 {_us(us['compiled', 'fp8'])} µs")
                del x
        del linear, fp8, variants
        _release(device)
    notes = [
        "y = layer(x), x bf16 [tokens, K], no bias, under torch.inference_mode(). FP8 = FP8Linear in inference "
        "mode: weight quantized per 128x128 block once (not timed); every call quantizes x per 1x128 group "
        "(eager: the fp8gemm::quantize_1x128 kernel; compiled: Inductor's kernel for the traced recipe) and runs "
        "fp8gemm::dense. Compiled = torch.compile(fullgraph=True, dynamic=False), warmed up before timing. "
        "× = bf16 µs ÷ FP8 µs (above 1: FP8 faster). µs = sum of the kernels of one call (CUPTI), L2 flushed.",
        _geomean_line("× eager", eager_ratios),
        _geomean_line("× compiled", compiled_ratios),
    ] + ([_SMALL_NOTE] if small else [])
    return format_table(header, rows) + "\n\n" + "\n".join(notes)


# --------------------------------------------------------------------------------------------
# Training baselines


def _quantize_rowwise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [R, C] -> (fp8 [R, C] row-major, float32 scales [R, 1]): one scale per row (C is the
    reduction dim), dequantized = fp8 * scale. As torchao's rowwise recipe, the factor 448 / amax is
    rounded down to a power of two (so the scale, its inverse, is a power of two)."""
    amax = x.abs().amax(dim=-1, keepdim=True).float().clamp(min=1e-12)
    scale = torch.exp2(torch.ceil(torch.log2(amax / _FP8_MAX)))
    values = (x.float() / scale).clamp(-_FP8_MAX, _FP8_MAX).to(_FP8)
    return values.contiguous(), scale  # x^T inputs give column-major values: _scaled_mm wants rows


class _RowwiseFP8Matmul(torch.autograd.Function):
    """y = x W^T with all three GEMMs on torch._scaled_mm, row-wise scales along each reduction dim
    (torchao's Float8LinearRecipeName.ROWWISE): fprop x and W per row (K); dgrad dy per row (N) and
    W^T per row (N); wgrad dy^T and x^T per row (M, the tokens). Fast accumulation in fprop only."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        x_fp8, x_scale = _quantize_rowwise(x)
        w_fp8, w_scale = _quantize_rowwise(weight)
        ctx.save_for_backward(x, weight)
        return torch._scaled_mm(x_fp8, w_fp8.t(), x_scale, w_scale.t(), out_dtype=x.dtype, use_fast_accum=True)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:  # dx [M, K] = dy [M, N] @ W [N, K]
            dy_fp8, dy_scale = _quantize_rowwise(grad)
            wt_fp8, wt_scale = _quantize_rowwise(weight.t())
            grad_x = torch._scaled_mm(dy_fp8, wt_fp8.t(), dy_scale, wt_scale.t(), out_dtype=x.dtype)
        if ctx.needs_input_grad[1]:  # dW [N, K] = dy^T [N, M] @ x [M, K]
            dyt_fp8, dyt_scale = _quantize_rowwise(grad.t())
            xt_fp8, xt_scale = _quantize_rowwise(x.t())
            grad_weight = torch._scaled_mm(dyt_fp8, xt_fp8.t(), dyt_scale, xt_scale.t(), out_dtype=weight.dtype)
        return grad_x, grad_weight


class RowwiseFP8Linear(nn.Module):
    """A bias-free linear on :class:`_RowwiseFP8Matmul` around an existing weight Parameter [N, K]
    (bf16: torch._scaled_mm writes bf16). The "torchao-style rowwise FP8" training baseline."""

    def __init__(self, weight: nn.Parameter) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = _RowwiseFP8Matmul.apply(x.reshape(-1, x.shape[-1]), self.weight)
        return out.reshape(*x.shape[:-1], self.weight.shape[0])


def rowwise_unavailable(device) -> Optional[str]:
    """None when torch._scaled_mm accepts row-wise scales on ``device``, else the reason."""
    try:
        a = torch.ones(16, 32, device=device).to(_FP8)
        b = torch.ones(16, 32, device=device).to(_FP8)
        torch._scaled_mm(a, b.t(), torch.ones(16, 1, device=device), torch.ones(1, 16, device=device),
                         out_dtype=torch.bfloat16)
        return None
    except BASELINE_ERRORS as exc:
        return _failure_reason(exc, 120)


class BF16GroupedExperts(nn.Module):
    """The bf16 baseline of FP8MoEExperts: the same dataflow (stable sort of the (token, expert)
    pairs, int32 row ends, one grouped GEMM for gate+up, SiLU gating, one for down, un-permute,
    routing-weighted sum in float32) with ``torch._grouped_mm`` (bf16, with autograd) in place of
    ``fp8gemm::grouped_moe``; a per-expert F.linear loop where torch has no _grouped_mm.
    Shares the Parameters it is given (transformers' fused layout [E, 2I, H], [E, H, I])."""

    def __init__(self, gate_up_proj: nn.Parameter, down_proj: nn.Parameter) -> None:
        super().__init__()
        self.gate_up_proj, self.down_proj = gate_up_proj, down_proj
        self.num_experts, self.hidden_size = down_proj.shape[0], down_proj.shape[1]

    def _grouped(self, x: torch.Tensor, weight: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        if hasattr(torch, "_grouped_mm"):
            return torch._grouped_mm(x, weight.transpose(-2, -1), offs=offsets)
        outs, start = [], 0
        for g, end in enumerate(offsets.tolist()):
            outs.append(F.linear(x[start:end], weight[g]))
            start = end
        return torch.cat(outs)

    def forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor):
        x = hidden_states.reshape(-1, self.hidden_size)
        tokens, top_k = top_k_index.shape
        expert_ids = top_k_index.reshape(-1)
        order = torch.argsort(expert_ids, stable=True)
        experts = torch.arange(self.num_experts, device=expert_ids.device, dtype=expert_ids.dtype)
        offsets = torch.searchsorted(expert_ids[order], experts, right=True).to(torch.int32)
        gate, up = self._grouped(x[order // top_k], self.gate_up_proj, offsets).chunk(2, dim=-1)
        down = self._grouped((F.silu(gate) * up).contiguous(), self.down_proj, offsets)
        unsorted = torch.empty_like(down).index_copy_(0, order, down).view(tokens, top_k, self.hidden_size)
        out = (unsorted.float() * top_k_weights.float().unsqueeze(-1)).sum(dim=1)
        return out.to(hidden_states.dtype).reshape(hidden_states.shape)


# --------------------------------------------------------------------------------------------
# Training step (forward + backward)


def _step(module: Callable, inputs: tuple, grad_out: torch.Tensor, leaves: list) -> Callable[[], None]:
    """One forward + backward; gradients reset first (a host-side None, no kernel) so every call
    writes fresh gradients instead of accumulating."""

    def run():
        for leaf in leaves:
            leaf.grad = None
        module(*inputs).backward(grad_out)

    return run


def _breakdown(timer, total_us: float) -> str:
    """Where the last measured call's kernel time went (KernelTimer only), as 'class µs (share)'."""
    parts = getattr(timer, "last_breakdown", None)
    if not parts or math.isnan(total_us):
        return "n/a"
    total = sum(parts.values())
    text = ", ".join(f"{c} {us:.0f} µs ({100 * us / total:.0f}%)" for c, us in parts.items())
    other = getattr(timer, "last_other", None)
    if other:
        text += "; costliest other kernels: " + ", ".join(f"{name} {us:.0f} µs" for name, us in other.items())
    return text


def _linear_training_rows(model, layer, k, n, token_counts, iters, timer, device, small, rowwise_reason, breakdowns):
    rows, ratios = [], {"bf16": [], "rowwise eager": [], "rowwise compiled": []}
    linear = nn.Linear(k, n, bias=False, device=device, dtype=torch.bfloat16)
    ours = FP8Linear.from_linear(linear)  # training mode: shares linear.weight
    variants = {"bf16": linear, "ours": ours}
    if rowwise_reason is None:
        rowwise = RowwiseFP8Linear(linear.weight)
        variants["rowwise eager"] = rowwise
        variants["rowwise compiled"] = _compile(rowwise, small)
    for tokens in token_counts:
        x = torch.randn(tokens, k, device=device, dtype=torch.bfloat16, requires_grad=True)
        dy = torch.randn(tokens, n, device=device, dtype=torch.bfloat16)
        us = {name: float("nan") for name in ("bf16", "ours", "rowwise eager", "rowwise compiled")}
        for name, module in variants.items():
            us[name] = _timed(name, _step(module, (x,), dy, [x, linear.weight]), timer, iters, device,
                              warm=name.endswith("compiled"))
            if name == "ours":
                breakdowns.append((f"{model} {layer} linear {k}→{n}, {tokens} tokens", _breakdown(timer, us[name])))
        for name in ratios:
            ratios[name].append(us[name] / us["ours"])
        rows.append([f"{model} {layer}", f"linear {k}→{n}", str(tokens), _us(us["bf16"]), _us(us["ours"]),
                     _us(us["rowwise eager"]), _us(us["rowwise compiled"]), _tflops(6.0 * tokens * n * k, us["ours"]),
                     _ratio(us["bf16"], us["ours"]), _ratio(us["rowwise eager"], us["ours"]),
                     _ratio(us["rowwise compiled"], us["ours"])])
        _log(f"      T={tokens}: bf16 {_us(us['bf16'])} µs, ours {_us(us['ours'])} µs, rowwise eager "
             f"{_us(us['rowwise eager'])} µs, rowwise compiled {_us(us['rowwise compiled'])} µs")
    return rows, ratios


def _moe_training_rows(config, token_counts, iters, timer, device, breakdowns):
    num_experts, hidden, intermediate, top_k = config
    rows, ratios = [], []
    ours = FP8MoEExperts(num_experts, hidden, intermediate, device=device, dtype=torch.bfloat16)
    bf16 = BF16GroupedExperts(ours.gate_up_proj, ours.down_proj)
    params = [ours.gate_up_proj, ours.down_proj]
    for tokens in token_counts:
        x = torch.randn(tokens, hidden, device=device, dtype=torch.bfloat16, requires_grad=True)
        scores = torch.randn(tokens, num_experts, device=device).softmax(dim=-1)
        weights, index = scores.topk(top_k, dim=-1)
        weights = (weights / weights.sum(dim=-1, keepdim=True)).requires_grad_()
        dy = torch.randn(tokens, hidden, device=device, dtype=torch.bfloat16)
        leaves = [x, weights, *params]
        us = {}
        for name, module in (("bf16", bf16), ("ours", ours)):
            us[name] = _timed(name, _step(module, (x, index, weights), dy, leaves), timer, iters, device)
        ratios.append(us["bf16"] / us["ours"])
        flops = 6.0 * tokens * top_k * 3 * hidden * intermediate
        label = f"MoE {num_experts}×({hidden}→2×{intermediate}→{hidden}) top-{top_k}"
        breakdowns.append((f"{label}, {tokens} tokens", _breakdown(timer, us["ours"])))
        rows.append([label, f"experts, {tokens * top_k // num_experts} rows/expert", str(tokens), _us(us["bf16"]),
                     _us(us["ours"]), "n/a", "n/a", _tflops(flops, us["ours"]), _ratio(us["bf16"], us["ours"]),
                     "n/a", "n/a"])
        _log(f"      T={tokens}: bf16 {_us(us['bf16'])} µs, ours {_us(us['ours'])} µs")
    return rows, ratios


def benchmark_training_step(iters: int, timer=None, *, small: bool = False, device: Optional[str] = None) -> str:
    """Forward + backward of one layer: FP8Linear (training) vs bf16 nn.Linear and a rowwise FP8
    linear on torch._scaled_mm (eager and compiled); FP8MoEExperts (training) vs bf16 grouped
    experts. DeepSeek-V3 sizes at 4096 and 16384 tokens. Returns a markdown table."""
    device = device or _default_device()
    timer = timer or timer_for(device)
    linears, moe, token_counts = ((SMALL_TRAINING_LINEARS, SMALL_TRAINING_MOE, SMALL_TOKENS) if small
                                  else (TRAINING_LINEARS, TRAINING_MOE, TOKENS))
    rowwise_reason = rowwise_unavailable(device)
    if rowwise_reason is not None:
        _log(f"  torch._scaled_mm with row-wise scales is unavailable here ({rowwise_reason}): rowwise columns n/a")
    header = ["layer", "shape", "tokens", "bf16 µs", "ours µs", "rowwise eager µs", "rowwise compiled µs",
              "ours TFLOP/s", "× bf16", "× rowwise eager", "× rowwise compiled"]
    rows = []
    ratios = {"bf16": [], "rowwise eager": [], "rowwise compiled": []}
    breakdowns: list = []
    torch.manual_seed(0)
    for i, (model, layer, k, n) in enumerate(linears):
        _log(f"  [{i + 1}/{len(linears) + 1}] training step {model} {layer} {k}->{n}")
        layer_rows, layer_ratios = _linear_training_rows(model, layer, k, n, token_counts, iters, timer, device,
                                                         small, rowwise_reason, breakdowns)
        rows += layer_rows
        for name, values in layer_ratios.items():
            ratios[name] += values
        _release(device)
    _log(f"  [{len(linears) + 1}/{len(linears) + 1}] training step MoE experts {moe}")
    moe_rows, moe_ratios = _moe_training_rows(moe, token_counts, iters, timer, device, breakdowns)
    rows += moe_rows
    _release(device)
    notes = [
        "One forward + backward, bf16 activations and weights: linear y = x Wᵀ (no bias) with dx and dW; MoE "
        "experts out = Σ_k r·down(silu(gate(x))·up(x)) with dx, dW and d routing weights (routing drawn once, "
        "top-k of random scores). ours = FP8Linear / FP8MoEExperts in training mode (DeepSeek-V3 recipe: every "
        "GEMM on FP8 kernels, quantization included). bf16 = nn.Linear / the same expert dataflow on "
        "torch._grouped_mm. rowwise = torch._scaled_mm with row-wise scales along each reduction dim "
        "(torchao ROWWISE style, power-of-two scales, fast accumulation in the forward), eager and "
        "torch.compile'd. × = baseline µs ÷ ours µs (above 1: ours faster). TFLOP/s = 3 GEMMs' flops ÷ ours µs. "
        "µs = sum of all kernels of one step (CUPTI), L2 flushed; host time not counted.",
        _geomean_line("× bf16 (linear and MoE)", ratios["bf16"] + moe_ratios),
        _geomean_line("× rowwise eager", ratios["rowwise eager"]),
        _geomean_line("× rowwise compiled", ratios["rowwise compiled"]),
    ] + ([_SMALL_NOTE] if small else [])
    where = ["", "Where ours' kernel time goes (mean per step, by kernel class):", ""]
    where += [f"- {label}: {parts}" for label, parts in breakdowns]
    return format_table(header, rows) + "\n\n" + "\n".join(notes) + "\n" + "\n".join(where)


# --------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m torch_fp8gemm.bench.layers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=["forward", "training", "all"], default="all")
    parser.add_argument("--iters", type=int, default=30, help="timed calls per measurement (median)")
    parser.add_argument("--small", action="store_true", help="tiny sizes (smoke run; any device)")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--out", help="write the tables to this file (markdown, or JSON for a .json name)")
    parser.add_argument("--layers", default=None,
                        help="forward suite: only layers whose 'model layer' name contains one of these "
                             "comma-separated fragments, e.g. 'DeepSeek-V3 MLP,Llama-70B MLP gate'")
    args = parser.parse_args(argv)
    device = args.device or _default_device()
    if torch.device(device).type != "cuda" and not args.small:
        _log("No CUDA device: the layer benchmarks need the GPU (use --small for a CPU smoke run).")
        return 1
    env = _environment()
    _log(f"torch_fp8gemm layer benchmarks: {env}")
    report = [f"### {env}", "", f"Command: `python -m torch_fp8gemm.bench.layers {' '.join(argv or sys.argv[1:])}`"]
    if args.suite in ("forward", "all"):
        _log(f"Linear forward, FP8Linear vs bf16, eager and compiled (median of {args.iters}) ...")
        table = benchmark_linear_forward(args.iters, small=args.small, device=device, only=args.layers)
        _log("\n" + table + "\n")
        report += ["", table]
    if args.suite in ("training", "all"):
        _log(f"Training step (forward + backward) of a linear and an MoE layer (median of {args.iters}) ...")
        table = benchmark_training_step(args.iters, small=args.small, device=device)
        _log("\n" + table + "\n")
        report += ["", table]
    if args.out:
        write_report(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
