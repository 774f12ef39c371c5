"""The dense kernel's configuration heuristic (host code only: runs on CPU machines too, wherever the
extension was built with its sm_90a kernels)."""
import pytest
import torch

import torch_fp8gemm as fg

pytestmark = pytest.mark.skipif(not fg.cuda_kernels_built(), reason="needs the CUDA build of torch_fp8gemm")

DEEPSEEK_SHAPES = [
    (64, 2112, 7168), (64, 24576, 1536), (64, 32768, 512), (64, 7168, 16384), (64, 4096, 7168), (64, 7168, 2048),
    (128, 2112, 7168), (128, 24576, 1536), (128, 32768, 512), (128, 7168, 16384), (128, 4096, 7168),
    (128, 7168, 2048), (4096, 2112, 7168), (4096, 24576, 1536), (4096, 32768, 512), (4096, 7168, 16384),
    (4096, 4096, 7168), (4096, 7168, 2048), (8192, 8192, 8192),
]


def plan(m, n, k, sms=132):
    configs = torch.ops.fp8gemm._sm90_dense_configs()
    index, splits = torch.ops.fp8gemm._sm90_dense_plan(m, n, k, sms)
    assert 0 <= index < len(configs)
    return configs[index], splits


def test_plans_are_valid_and_never_split():
    for m, n, k in DEEPSEEK_SHAPES + [(1, 8, 16), (3, 136, 144), (100000, 8, 16), (1, 65536, 65536)]:
        for sms in (1, 78, 132):
            name, splits = plan(m, n, k, sms)
            assert splits == 1, f"{m}x{n}x{k}: the heuristic split K ({name}, {splits})"


def test_small_m_uses_64_row_tiles():
    for m, n, k in DEEPSEEK_SHAPES:
        if m <= 64:
            assert plan(m, n, k)[0].startswith("bm64_"), (m, n, k)


def test_staged_epilogue_for_short_k_and_bf16_only():
    # The TMA-store configs cost a pipeline stage: since the fifth session's main loop that is ~1% per
    # K block (20% faster at K = 512, even at K = 16384), so short K takes them; the very longest K
    # keeps the extra stage.
    assert plan(4096, 32768, 512)[0].endswith("_st")
    assert plan(4096, 7168, 2048)[0].endswith("_st")
    assert not plan(4096, 7168, 16384)[0].endswith("_st")


def test_config_names_are_unique():
    configs = torch.ops.fp8gemm._sm90_dense_configs()
    assert len(set(configs)) == len(configs)
    assert sum(name.endswith("_st") for name in configs) == 2


def test_two_wave_tiles_pay_no_two_scale_row_promotion():
    # 128x256's two column waves each lie in one 128-column scale block: the cost model ties it with
    # 256x128 (same area, same tile count) and keeps the earlier config of the list, 128x256.
    assert plan(4096, 7168, 16384)[0] == "bm128_bn256_s4_mc1"
    assert plan(8192, 8192, 8192)[0] == "bm128_bn256_s4_mc1"
