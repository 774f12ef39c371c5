"""The configuration heuristics of the dense and grouped kernels (host code only: runs on CPU machines
too, wherever the extension was built with its sm_90a kernels)."""
import math
import re

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
NAME = re.compile(r"bm(\d+)_bn(\d+)_s(\d+)_mc(1|2a|2b)$")
MOE_SHAPES = [(4096, 7168), (7168, 2048), (6144, 7168), (7168, 3072)]  # expert N x K


def pick(m, n, k, sms=132):
    configs = torch.ops.fp8gemm._sm90_dense_configs()
    index = torch.ops.fp8gemm._sm90_dense_pick_config(m, n, k, sms)
    assert 0 <= index < len(configs)
    bm, bn, stages, mc = NAME.match(configs[index]).groups()
    return configs[index], int(bm), int(bn), int(stages), mc


def test_config_names_are_unique_and_parse():
    configs = torch.ops.fp8gemm._sm90_dense_configs()
    assert len(set(configs)) == len(configs)
    for name in configs:
        assert NAME.match(name), name


def test_picks_are_valid_for_any_shape():
    for m, n, k in DEEPSEEK_SHAPES + [(1, 8, 16), (3, 136, 144), (100000, 8, 16), (1, 65536, 65536)]:
        for sms in (1, 78, 132):
            name, bm, bn, stages, mc = pick(m, n, k, sms)
            assert stages >= 3, name
            if mc != "1":
                assert sms % 2 == 0, f"{name} on {sms} SMs"


def test_row_tiles_never_exceed_small_m():
    # 16- and 32-row tiles only where they hold all of m; m <= 64 never pays for 128-row tiles.
    for m in (1, 8, 16, 17, 32, 33, 64):
        for n, k in [(2112, 7168), (7168, 2048), (32768, 512), (4096, 7168)]:
            name, bm, *_ = pick(m, n, k)
            assert bm <= 64 and (bm >= 64 or m <= bm), (m, n, k, name)


def test_small_m_tiles_fill_the_sms():
    # Weight-streaming shapes (m <= 128) are bound by how many SMs pull B: the pick keeps at least
    # 3/4 of the SMs busy in its last wave, or runs several waves.
    for m, n, k in DEEPSEEK_SHAPES:
        if m > 128:
            continue
        name, bm, bn, *_ = pick(m, n, k)
        tiles = math.ceil(m / bm) * math.ceil(n / bn)
        assert tiles >= 0.75 * 132, (m, n, k, name, tiles)


def test_large_shapes_take_256_row_tiles():
    # M >= 4096 with N >= 4096: 256x128 tiles of single CTAs (2-CTA pairs measured slower there).
    for m, n, k in DEEPSEEK_SHAPES:
        if m >= 4096 and n >= 4096:
            name, bm, bn, stages, mc = pick(m, n, k)
            assert bm == 256 and mc == "1", (m, n, k, name)


def test_straddling_widths_only_for_small_m():
    # Widths 80, 112 and 144 (a B-scale select per 8-column group in the promotion) ran 10-50% behind
    # 96 and 128 wherever m > 128.
    for m in (129, 192, 256, 512, 1024, 4096):
        for n, k in [(7168, 2048), (7168, 16384), (14336, 4096), (11008, 4096), (6144, 4096), (18432, 7168), (3072, 768)]:
            name, bm, bn, *_ = pick(m, n, k)
            assert bn not in (80, 112, 144), (m, n, k, name)
    # ...and they stay available where B's bytes bound the time (N = 7168 fills 64 tiles of 112).
    assert any(pick(m, 7168, k)[2] == 112 for m in (64, 128) for k in (2048, 16384))


def test_dense_tiles_are_single_ctas():
    # 2-CTA clusters lost to single CTAs on every dense shape measured: the dense tables hold none,
    # so shapes that picked clusters before (128x32768x512, 384x32768x512, 768x8192x1024) pick single CTAs.
    assert not [name for name in torch.ops.fp8gemm._sm90_dense_configs() if not name.endswith("_mc1")]
    for m, n, k in DEEPSEEK_SHAPES + [(2048, 14336, 4096), (512, 18432, 7168), (384, 32768, 512), (768, 8192, 1024)]:
        assert pick(m, n, k)[4] == "1", (m, n, k)


def test_grouped_multicast_needs_more_than_one_wave():
    # B-shared pairs only where the tiles come in several waves (one wave has no second pass to share).
    for groups, rows in [(32, 192), (4, 8192), (256, 32), (1, 64)]:
        for n, k in MOE_SHAPES:
            name, bm, bn, stages, mc = grouped_pick(groups, rows, n, k)
            if mc != "1":
                expected = rows + rows * 15 // 100  # the heuristic's allowance for uneven experts
                tiles = groups * math.ceil(math.ceil(expected / bm) / 2) * 2 * math.ceil(n / bn)
                assert tiles > 132, (groups, rows, n, k, name)


def grouped_pick(groups, rows, n, k, sms=132):
    configs = torch.ops.fp8gemm._sm90_grouped_configs()
    index = torch.ops.fp8gemm._sm90_grouped_pick_config(groups * rows, n, k, groups, rows, sms)
    assert 0 <= index < len(configs)
    bm, bn, stages, mc = NAME.search(configs[index]).groups()
    return configs[index], int(bm), int(bn), int(stages), mc


def test_grouped_large_experts_take_256_row_tiles():
    # Experts of thousands of rows: 256x128 single CTAs at long and short K (faster than the 128x192
    # pairs and single CTAs there).
    for groups, rows in [(4, 8192), (8, 4096), (16, 2048)]:
        for n, k in MOE_SHAPES:
            name, bm, bn, stages, mc = grouped_pick(groups, rows, n, k)
            assert (bm, bn, mc) == (256, 128, "1"), (groups, rows, n, k, name)


def test_grouped_small_experts_take_128_row_tiles_or_smaller():
    # A 256-row tile over a few hundred rows computes mostly empty rows.
    for groups, rows in [(256, 32), (32, 192), (4, 256), (1, 1024), (8, 1500)]:
        for n, k in MOE_SHAPES:
            name, bm, *_ = grouped_pick(groups, rows, n, k)
            assert bm <= 128, (groups, rows, n, k, name)


def test_grouped_b_shared_pairs_only_at_long_k():
    for groups, rows in [(32, 192), (8, 512), (4, 8192)]:
        for n, k in MOE_SHAPES:
            name, bm, bn, stages, mc = grouped_pick(groups, rows, n, k)
            assert mc == "1" or k >= 4096, (groups, rows, n, k, name)
    # decode-sized experts of DeepSeek-V3's gate/up projection: pairs share each expert's weights
    assert grouped_pick(32, 192, 6144, 7168)[4] == "2b"
