"""Automatic use under torch.compile: rewrite torch's block-scaled FP8 matmuls into ``fp8gemm::dense``.

Code written against torch's own API, e.g.::

    x_fp8, x_scale = quantize_1x128(x)                 # x_scale [M, ceil(K/128)]
    y = torch._scaled_mm(x_fp8, w_fp8.t(), x_scale, w_scale.t(), out_dtype=torch.bfloat16)
    # or F.scaled_mm(x_fp8, w_fp8.t(), x_scale, ScalingType.BlockWise1x128,
    #                w_scale.t(), ScalingType.BlockWise128x128, output_dtype=torch.bfloat16)

runs our kernel under ``torch.compile`` once :func:`enable` has been called (or inside
``with enabled():``), without edits. The pass is an Inductor post-grad custom pass
(``torch._inductor.config.post_grad_custom_post_pass``) that runs after Inductor's own pattern
matcher on functional ATen. It replaces

    aten._scaled_mm(a, b, scale_a, scale_b, bias, None, out_dtype, use_fast_accum)
    aten._scaled_mm_v2(a, b, [scale_a], [BlockWise1x128], [], [scale_b], [BlockWise128x128], [],
                       bias, out_dtype, [], ...)

by ``fp8gemm::dense(a, b.permute(1, 0), scale_a, scale_b.permute(1, 0), bias, out_dtype)`` when the
operands say "1x128 activations times 128x128 weights": a and b float8_e4m3fn, ``a`` [M, K],
``b`` [K, N] column-major (the ``w.t()`` of a row-major [N, K] weight, so the permute gives back
the weight without a copy), ``scale_a`` float32 [M, ceil(K/128)], ``scale_b`` float32
[ceil(K/128), ceil(N/128)] (the transposed weight block scales; cuBLAS' padding of the K-block dim
to a multiple of 4 is accepted and sliced off), no ``scale_result``, ``out_dtype`` bf16 or fp32.
Anything else (per-tensor, row-wise, fp8 output, ...) is left to torch, and so is a call whose
shapes cannot be proven to match at compile time: the token dim M may be dynamic, but K and N must
be static -- as they are for weights held by nn.Modules; with ``dynamic=True`` on raw input tensors,
mark only the token dim instead (``torch._dynamo.mark_dynamic(x, 0)``). Where the scale shapes of
another recipe coincide with these (e.g. [1, 1] tensor-wise scales with M = 1, K <= 128, N <= 128)
each block covers the whole extent, so both recipes compute the same product. ``use_fast_accum``
is ignored: the kernel always promotes its partial sums to FP32 every 128 elements of K.

Implementation notes (torch 2.13/2.14): the
pass inserts only core-ATen ops (``aten.permute``, ``aten.slice``; ``aten.t`` has both a decomposition
and a fallback), gives every new node a fresh ``meta["val"]`` computed by the ops' fake kernels
(copying the old node's meta would carry a stale ``eager_input_vals``), and passes arguments
positionally. ``uuid()`` hashes this file so Inductor's FX graph cache tells rewritten graphs apart.
"""
from __future__ import annotations

import contextlib
import hashlib
from typing import Any, Iterator, Optional

import torch
import torch._inductor.config as inductor_config
from torch._inductor.custom_graph_pass import CustomGraphPass, get_hash_for_files

try:  # torch >= 2.13: post_grad_custom_post_pass accepts a sequence of passes
    from torch._inductor.custom_graph_pass import get_custom_graph_passes

    _CONFIG_TAKES_SEQUENCE = True
except ImportError:  # torch 2.11/2.12 take one pass: chain several in one
    _CONFIG_TAKES_SEQUENCE = False

    def get_custom_graph_passes(custom_pass):
        if custom_pass is None:
            return ()
        if isinstance(custom_pass, _ChainedPasses):
            return custom_pass.passes
        return (custom_pass,)
from torch.fx.experimental.symbolic_shapes import statically_known_true

from . import ops  # noqa: F401  (registers fp8gemm::dense and its fake)

__all__ = ["ScaledMMRewritePass", "enable", "disable", "enabled", "is_enabled"]

aten = torch.ops.aten
_FP8 = torch.float8_e4m3fn
_BLOCK = 128
# torch.nn.functional.ScalingType / SwizzleType values (stable since 2.11), as _scaled_mm_v2 receives them
_BLOCKWISE_1X128, _BLOCKWISE_128X128, _NO_SWIZZLE = 4, 5, 0


def _ceil_div(x, y):
    return (x + y - 1) // y


def _known_equal(x, y) -> bool:
    """x == y for ints or SymInts, without adding a guard (False when it is not provable)."""
    return statically_known_true(x == y)


def _val(arg) -> Optional[torch.Tensor]:
    return arg.meta.get("val") if isinstance(arg, torch.fx.Node) else None


def _bind(node: torch.fx.Node) -> dict[str, Any]:
    """The node's arguments by schema name, defaults filled in (post-grad nodes mix positions and kwargs)."""
    bound = {}
    for i, arg in enumerate(node.target._schema.arguments):
        if i < len(node.args):
            bound[arg.name] = node.args[i]
        elif arg.name in node.kwargs:
            bound[arg.name] = node.kwargs[arg.name]
        elif arg.has_default_value():
            bound[arg.name] = arg.default_value
    return bound


class _Match:
    """A rewritable call: the FX nodes to feed fp8gemm::dense with, and whether scale_b is K-padded."""

    def __init__(self, a, b, scale_a, scale_b, bias, out_dtype, k_blocks):
        self.a, self.b, self.scale_a, self.scale_b = a, b, scale_a, scale_b
        self.bias, self.out_dtype, self.k_blocks = bias, out_dtype, k_blocks


def _match_operands(a, b, scale_a, scale_b, bias, out_dtype) -> Optional[_Match]:
    """The shape/dtype/layout conditions shared by _scaled_mm and _scaled_mm_v2 (module docstring)."""
    va, vb, vsa, vsb = _val(a), _val(b), _val(scale_a), _val(scale_b)
    if any(not isinstance(v, torch.Tensor) for v in (va, vb, vsa, vsb)):
        return None
    if va.dtype != _FP8 or vb.dtype != _FP8 or va.dim() != 2 or vb.dim() != 2:
        return None
    if vsa.dtype != torch.float32 or vsb.dtype != torch.float32 or vsa.dim() != 2 or vsb.dim() != 2:
        return None
    if out_dtype not in (torch.bfloat16, torch.float32):
        return None
    m, k = va.shape
    n = vb.shape[1]
    kb, nb = _ceil_div(k, _BLOCK), _ceil_div(n, _BLOCK)
    if not (_known_equal(vb.shape[0], k) and _known_equal(vb.stride(0), 1)):  # b = w.t(), w row-major [N, K]
        return None
    if not (_known_equal(vsa.shape[0], m) and _known_equal(vsa.shape[1], kb)):
        return None
    k_blocks_padded = _ceil_div(kb, 4) * 4  # cuBLASLt's layout pads the K-block dim to a multiple of 4
    if not _known_equal(vsb.shape[1], nb):
        return None
    if not (_known_equal(vsb.shape[0], kb) or _known_equal(vsb.shape[0], k_blocks_padded)):
        return None
    if bias is not None:
        vbias = _val(bias)
        if vbias is None or vbias.dim() != 1 or not vbias.is_floating_point():
            return None
    padded = not _known_equal(vsb.shape[0], kb)
    return _Match(a, b, scale_a, scale_b, bias, out_dtype, kb if padded else None)


def _match_scaled_mm(node: torch.fx.Node) -> Optional[_Match]:
    args = _bind(node)
    if args.get("scale_result") is not None:
        return None
    return _match_operands(
        args["self"], args["mat2"], args["scale_a"], args["scale_b"], args.get("bias"), args.get("out_dtype")
    )


def _match_scaled_mm_v2(node: torch.fx.Node) -> Optional[_Match]:
    args = _bind(node)
    if list(args["recipe_a"]) != [_BLOCKWISE_1X128] or list(args["recipe_b"]) != [_BLOCKWISE_128X128]:
        return None
    if len(args["scale_a"]) != 1 or len(args["scale_b"]) != 1:
        return None
    if any(s != _NO_SWIZZLE for s in (*args["swizzle_a"], *args["swizzle_b"])):
        return None
    if list(args.get("contraction_dim") or []):
        return None
    return _match_operands(
        args["self"], args["mat2"], args["scale_a"][0], args["scale_b"][0], args.get("bias"), args.get("out_dtype")
    )


def _matchers():
    matchers = {aten._scaled_mm.default: _match_scaled_mm}
    if hasattr(aten, "_scaled_mm_v2"):
        matchers[aten._scaled_mm_v2.default] = _match_scaled_mm_v2
    return matchers


def _insert(graph: torch.fx.Graph, target, args: tuple) -> torch.fx.Node:
    """A new call_function node whose meta["val"] comes from running ``target`` on the fake values."""
    node = graph.call_function(target, args)
    fake_args = [a.meta["val"] if isinstance(a, torch.fx.Node) else a for a in args]
    node.meta["val"] = target(*fake_args)
    return node


def _rewrite(graph: torch.fx.Graph, node: torch.fx.Node, match: _Match) -> None:
    fake_mode = torch._guards.detect_fake_mode([_val(match.a)])
    with graph.inserting_before(node), (fake_mode if fake_mode is not None else contextlib.nullcontext()):
        weight = _insert(graph, aten.permute.default, (match.b, [1, 0]))  # [N, K], contiguous along K
        scale_b = match.scale_b
        if match.k_blocks is not None:
            scale_b = _insert(graph, aten.slice.Tensor, (scale_b, 0, 0, match.k_blocks))
        scale_b = _insert(graph, aten.permute.default, (scale_b, [1, 0]))  # [ceil(N/128), ceil(K/128)]
        dense = _insert(
            graph,
            torch.ops.fp8gemm.dense.default,
            (match.a, weight, match.scale_a, scale_b, match.bias, match.out_dtype),
        )
    node.replace_all_uses_with(dense)
    graph.erase_node(node)


class ScaledMMRewritePass(CustomGraphPass):
    """Post-grad pass: blockwise ``aten._scaled_mm``/``_scaled_mm_v2`` -> ``fp8gemm::dense``.

    ``rewritten`` counts the calls replaced by this instance since it was created (tests read it).
    """

    def __init__(self) -> None:
        self.rewritten = 0

    def __call__(self, graph: torch.fx.Graph) -> None:
        matchers = _matchers()
        changed = False
        for node in list(graph.nodes):
            matcher = matchers.get(node.target) if node.op == "call_function" else None
            match = matcher(node) if matcher is not None else None
            if match is not None:
                _rewrite(graph, node, match)
                self.rewritten += 1
                changed = True
        if changed:
            graph.eliminate_dead_code()  # the w.t() / scale.t() permutes that fed the old call

    def uuid(self) -> bytes:
        return get_hash_for_files((__file__,))


class _ChainedPasses(CustomGraphPass):
    """Several post-grad passes as one, for torch versions whose config holds a single pass."""

    def __init__(self, passes):
        self.passes = tuple(passes)

    def __call__(self, graph: torch.fx.Graph) -> None:
        for graph_pass in self.passes:
            graph_pass(graph)

    def uuid(self):
        uuids = [graph_pass.uuid() if isinstance(graph_pass, CustomGraphPass) else None for graph_pass in self.passes]
        if any(u is None for u in uuids):
            return None  # a pass without a uuid cannot be cached
        return hashlib.sha256(repr(uuids).encode()).hexdigest()


_PASS = ScaledMMRewritePass()


def _with_pass(current, add: bool):
    """``current`` (None, one pass or a sequence) with our pass appended or removed."""
    passes = [p for p in get_custom_graph_passes(current) if p is not _PASS]
    if add:
        passes.append(_PASS)
    if not passes:
        return None
    if len(passes) == 1:
        return passes[0]
    return tuple(passes) if _CONFIG_TAKES_SEQUENCE else _ChainedPasses(passes)


def enable() -> None:
    """Install the rewrite pass globally (idempotent), after any post-grad custom pass already set.

    Affects graphs compiled from now on; already compiled functions keep their code.
    """
    inductor_config.post_grad_custom_post_pass = _with_pass(inductor_config.post_grad_custom_post_pass, add=True)


def disable() -> None:
    """Remove the rewrite pass, keeping any other post-grad custom pass in place."""
    inductor_config.post_grad_custom_post_pass = _with_pass(inductor_config.post_grad_custom_post_pass, add=False)


def is_enabled() -> bool:
    return any(p is _PASS for p in get_custom_graph_passes(inductor_config.post_grad_custom_post_pass))


@contextlib.contextmanager
def enabled() -> Iterator[ScaledMMRewritePass]:
    """``with torch_fp8gemm.compile.enabled():`` -- the pass is installed only inside the block
    (compilation happens at the first call, so call the compiled function inside it). Yields the pass."""
    passes = _with_pass(inductor_config.post_grad_custom_post_pass, add=True)
    with inductor_config.patch(post_grad_custom_post_pass=passes):
        yield _PASS
