"""Every documented bad input raises the documented error, naming the argument and the rule."""
import pytest
import torch

import torch_fp8gemm as fg
from torch_fp8gemm import testing as T

FP8 = T.FP8


def _dense_args(m=8, n=136, k=256):
    a, a_scale, b, b_scale = T.random_fp8_operands(m, n, k)
    return dict(a=a, b=b, a_scale=a_scale, b_scale=b_scale)


def _with(**changes):
    args = _dense_args()
    args.update(changes)
    return args


_base = _dense_args()

DENSE_CASES = [
    # (description, kwargs, error type, message fragment)
    ("a int8", _with(a=_base["a"].view(torch.int8)), ValueError, "`a` to be float8_e4m3fn"),
    ("a float64", _with(a=torch.randn(8, 256, dtype=torch.float64), a_scale=None), ValueError, "`a` to be float8_e4m3fn"),
    ("a 3-D", _with(a=_base["a"].unsqueeze(0)), ValueError, "`a` to have 2 dims"),
    ("b 1-D", _with(b=_base["b"][0]), ValueError, "`b` to have 2 dims"),
    ("fp8 a without scale", _with(a_scale=None), ValueError, "`a_scale` when `a` is float8_e4m3fn"),
    ("bf16 a with scale", _with(a=torch.randn(8, 256, dtype=torch.bfloat16)), ValueError, "`a_scale` to be None"),
    ("fp8 b without scale", _with(b_scale=None), ValueError, "`b_scale` when `b` is float8_e4m3fn"),
    ("K mismatch", _with(b=_base["b"][:, :128].contiguous()), ValueError, "`b` of shape [N, K] with K = 256"),
    ("K not multiple of 16", _dense_args(k=136), ValueError, "K (the last dim of `a` and `b`) to be a multiple of 16"),
    ("N not multiple of 8", _dense_args(n=130), ValueError, "N (`b`.size(-2)) to be a multiple of 8"),
    ("a_scale float16", _with(a_scale=_base["a_scale"].half()), ValueError, "`a_scale` to be float32"),
    ("a_scale wrong shape", _with(a_scale=_base["a_scale"][:, :1]), ValueError, "`a_scale` of shape [8, 2]"),
    ("a_scale transposed", _with(a_scale=_base["a_scale"].t()), ValueError, "`a_scale` of shape [8, 2]"),
    ("b_scale wrong shape", _with(b_scale=torch.ones(1, 2)), ValueError, "`b_scale` of shape [2, 2]"),
    ("bias wrong length", _with(bias=torch.ones(135)), ValueError, "`bias` of shape [136]"),
    ("bias int", _with(bias=torch.ones(136, dtype=torch.int32)), ValueError, "`bias` to be bfloat16/float16/float32"),
    ("out_dtype fp16", _with(out_dtype=torch.float16), ValueError, "`out_dtype` to be torch.bfloat16 or torch.float32"),
    ("a not K-major", _with(a=_base["a"].t().contiguous().t()), ValueError, "`a` to be contiguous along K"),
    ("b row stride not 16-aligned", _with(b=torch.zeros(136, 264, dtype=FP8)[:, :256]), ValueError, "stride(0) to be a multiple of 16"),
    ("a misaligned view", _with(a=torch.zeros(8 * 256 + 8, dtype=FP8)[8:].view(8, 256)), ValueError, "16-byte aligned"),
    ("a on meta", _with(a=_base["a"].to("meta"), a_scale=_base["a_scale"].to("meta")), ValueError, "`b` on the same device as `a`"),
]


@pytest.mark.parametrize("desc,kwargs,error,fragment", DENSE_CASES, ids=[c[0] for c in DENSE_CASES])
def test_dense_rejects(desc, kwargs, error, fragment):
    with pytest.raises(error, match=r"^fp8gemm::dense: expected .*" + _re(fragment)):
        torch.ops.fp8gemm.dense(**kwargs)


def _re(text):
    import re

    return re.escape(text)


def _grouped_args(m=20, n=136, k=256, groups=3):
    a, a_scale, b, b_scale = T.random_fp8_operands(m, n, k, b_lead=(groups,))
    return dict(a=a, b=b, group_offsets=torch.tensor([5, 10, 20], dtype=torch.int32), a_scale=a_scale, b_scale=b_scale)


def _grouped_with(**changes):
    args = _grouped_args()
    args.update(changes)
    return args


GROUPED_CASES = [
    ("offsets int64", _grouped_with(group_offsets=torch.tensor([5, 10, 20])), "`group_offsets` to be int32"),
    ("offsets wrong length", _grouped_with(group_offsets=torch.tensor([5, 20], dtype=torch.int32)), "`group_offsets` of shape [3]"),
    ("offsets decreasing", _grouped_with(group_offsets=torch.tensor([5, 4, 20], dtype=torch.int32)),
     "non-decreasing (cumulative row ends), got group_offsets[1] = 4 < group_offsets[0] = 5"),
    ("offsets past M", _grouped_with(group_offsets=torch.tensor([5, 10, 21], dtype=torch.int32)),
     "at or before M = 20, got group_offsets[2] = 21"),
    ("offsets negative", _grouped_with(group_offsets=torch.tensor([2, -1, 20], dtype=torch.int32)),
     "`group_offsets` to be >= 0 (cumulative row ends), got group_offsets[1] = -1"),
    ("b 2-D", _grouped_with(b=torch.zeros(136, 256, dtype=FP8)), "`b` to have 3 dims"),
    ("b_scale 2-D", _grouped_with(b_scale=torch.ones(2, 2)), "`b_scale` of shape [3, 2, 2]"),
]


@pytest.mark.parametrize("desc,kwargs,fragment", GROUPED_CASES, ids=[c[0] for c in GROUPED_CASES])
def test_grouped_moe_rejects(desc, kwargs, fragment):
    with pytest.raises(ValueError, match=r"^fp8gemm::grouped_moe: expected .*" + _re(fragment)):
        torch.ops.fp8gemm.grouped_moe(**kwargs)


def _masked_args():
    a, a_scale, b, b_scale = T.random_fp8_operands(16, 136, 256, a_lead=(2,), b_lead=(2,))
    return dict(a=a, b=b, masked_m=torch.tensor([3, 16], dtype=torch.int32), expected_m=8, a_scale=a_scale, b_scale=b_scale)


def _masked_with(**changes):
    args = _masked_args()
    args.update(changes)
    return args


MASKED_CASES = [
    ("masked_m past max_m", _masked_with(masked_m=torch.tensor([3, 17], dtype=torch.int32)),
     "`masked_m` values in [0, max_m = 16], got masked_m[1] = 17"),
    ("masked_m float", _masked_with(masked_m=torch.tensor([3.0, 1.0])), "`masked_m` to be int32"),
    ("expected_m negative", _masked_with(expected_m=-1), "`expected_m` to be >= 0"),
    ("G mismatch", _masked_with(b=torch.zeros(3, 136, 256, dtype=FP8)), "`b` of shape [G, N, K] with G = 2"),
    ("a_scale wrong", _masked_with(a_scale=torch.ones(2, 16, 1)), "`a_scale` of shape [2, 16, 2]"),
]


@pytest.mark.parametrize("desc,kwargs,fragment", MASKED_CASES, ids=[c[0] for c in MASKED_CASES])
def test_grouped_moe_masked_rejects(desc, kwargs, fragment):
    with pytest.raises(ValueError, match=r"^fp8gemm::grouped_moe_masked: expected .*" + _re(fragment)):
        torch.ops.fp8gemm.grouped_moe_masked(**kwargs)


@pytest.mark.parametrize(
    "op,arg,fragment",
    [
        (torch.ops.fp8gemm.quantize_1x128, torch.zeros(4, 128, dtype=torch.int32), "`x` to be bfloat16/float16/float32"),
        (torch.ops.fp8gemm.quantize_1x128, torch.tensor(1.0), "`x` to have at least 1 dim"),
        (torch.ops.fp8gemm.quantize_128x128, torch.zeros(128), "`w` to have at least 2 dims"),
        (torch.ops.fp8gemm.quantize_128x128, torch.zeros(4, 4, dtype=FP8), "`w` to be bfloat16/float16/float32"),
        (torch.ops.fp8gemm.quantize_128x128_transposed, torch.zeros(128), "`w` to have at least 2 dims"),
        (torch.ops.fp8gemm.quantize_128x128_transposed, torch.zeros(4, 4, dtype=torch.int32),
         "`w` to be bfloat16/float16/float32"),
    ],
)
def test_quantize_rejects(op, arg, fragment):
    with pytest.raises(ValueError, match=_re(fragment)):
        op(arg)


def _dense_1x128_args(m=8, n=136, k=256):
    a, a_scale = T.quantize_1x128_torch(torch.randn(m, k))
    b, b_scale = T.quantize_1x128_torch(torch.randn(n, k))
    return dict(a=a, b=b, a_scale=a_scale, b_scale=b_scale)


_base_1x128 = _dense_1x128_args()
DENSE_1X128_CASES = [
    ("b_scale per block", dict(_base_1x128, b_scale=torch.ones(2, 2)), "`b_scale` of shape [136, 2] ([N, ceil(K/128)]"),
    ("a_scale wrong shape", dict(_base_1x128, a_scale=torch.ones(8, 1)), "`a_scale` of shape [8, 2]"),
    ("K not multiple of 16", _dense_1x128_args(k=136), "K (the last dim of `a` and `b`) to be a multiple of 16"),
    ("N not multiple of 8", _dense_1x128_args(n=130), "N (`b`.size(-2)) to be a multiple of 8"),
    ("fp8 b without scale", dict(_base_1x128, b_scale=None), "`b_scale` when `b` is float8_e4m3fn"),
]


@pytest.mark.parametrize("desc,kwargs,fragment", DENSE_1X128_CASES, ids=[c[0] for c in DENSE_1X128_CASES])
def test_dense_1x128_rejects(desc, kwargs, fragment):
    with pytest.raises(ValueError, match=r"^fp8gemm::dense_1x128: expected .*" + _re(fragment)):
        torch.ops.fp8gemm.dense_1x128(**kwargs)


# The same rules on meta tensors (the fake kernels, which also serve tracing): a meta call must reject
# what an eager call rejects, with the same message. Cases whose broken property does not survive
# `.to("meta")` (device mismatch, a misaligned or strided view) or that need data (offsets, masks)
# are eager-only.
_EAGER_ONLY = {"a on meta", "a misaligned view", "b row stride not 16-aligned", "offsets decreasing",
               "offsets past M", "offsets negative", "masked_m past max_m"}


def _meta_cases(op, cases, with_error_type=False):
    out = []
    for case in cases:
        desc, kwargs, fragment = (case[0], case[1], case[3]) if with_error_type else case
        if desc not in _EAGER_ONLY:
            out.append(pytest.param(op, kwargs, fragment, id=f"{op}-{desc}"))
    return out


META_CASES = (_meta_cases("dense", DENSE_CASES, with_error_type=True) + _meta_cases("dense_1x128", DENSE_1X128_CASES)
              + _meta_cases("grouped_moe", GROUPED_CASES) + _meta_cases("grouped_moe_masked", MASKED_CASES))


@pytest.mark.parametrize("op,kwargs,fragment", META_CASES)
def test_meta_tensors_get_the_same_errors(op, kwargs, fragment):
    meta = {name: v.to("meta") if isinstance(v, torch.Tensor) else v for name, v in kwargs.items()}
    with pytest.raises(ValueError, match=rf"^fp8gemm::{op}: expected .*" + _re(fragment)):
        getattr(torch.ops.fp8gemm, op)(**meta)


def test_meta_tensors_pass_what_eager_passes():
    args = {name: v.to("meta") for name, v in _dense_args().items()}
    assert torch.ops.fp8gemm.dense(**args).shape == (8, 136)
