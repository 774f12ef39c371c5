// Grouped (MoE) FP8 GEMM entry points (sm90_fp8_gemm_api.h): the dense kernel template with the
// grouped scheduler, a small config list and its heuristic.
#include <string>

#include "sm90_fp8_gemm_api.h"
#include "sm90_fp8_gemm_launch.cuh"

namespace torch_fp8gemm {
namespace sm90 {
namespace {

// BLOCK_N = 128 or 256 (two 128-column waves): both keep one weight scale row per wgmma fragment.
// BLOCK_M = 64 for experts with few rows (decode: 8-64 rows per expert), 128 otherwise; 128 x 256
// loads a quarter fewer operand bytes per flop where there are enough tiles to fill the SMs.
struct GroupedConfigEntry {
  int block_m;
  int block_n;
  void (*contiguous)(const GroupedGemmParams&);
  void (*masked)(const GroupedGemmParams&);
};

// The _st entries leave bf16 results through a staging tile and TMA stores that overlap the next
// tile (one pipeline stage fewer), as the dense staged configs: for short K, where the register
// epilogue is a large share of a tile.
constexpr GroupedConfigEntry kGroupedConfigs[] = {
    {64, 128, &launch_grouped<64, 128, GemmKind::kGroupedContiguous>,
     &launch_grouped<64, 128, GemmKind::kGroupedMasked>},
    {128, 128, &launch_grouped<128, 128, GemmKind::kGroupedContiguous>,
     &launch_grouped<128, 128, GemmKind::kGroupedMasked>},
    {128, 256, &launch_grouped<128, 256, GemmKind::kGroupedContiguous>,
     &launch_grouped<128, 256, GemmKind::kGroupedMasked>},
    {128, 128, &launch_grouped<128, 128, GemmKind::kGroupedContiguous, true>,
     &launch_grouped<128, 128, GemmKind::kGroupedMasked, true>},
    {128, 256, &launch_grouped<128, 256, GemmKind::kGroupedContiguous, true>,
     &launch_grouped<128, 256, GemmKind::kGroupedMasked, true>},
};
constexpr int kNumGroupedConfigs = static_cast<int>(sizeof(kGroupedConfigs) / sizeof(kGroupedConfigs[0]));

void require(bool cond, const std::string& what) {
  if (!cond) throw_error("grouped GEMM: expected " + what);
}

void validate(const GroupedGemmParams& p) {
  const DenseGemmParams& g = p.gemm;
  require(p.layout == GroupedLayout::kContiguous || p.layout == GroupedLayout::kMasked, "a known layout");
  require(p.num_groups >= 1, "num_groups >= 1, got " + std::to_string(p.num_groups));
  require(p.group_rows != nullptr, "group_rows on the device");
  require(g.bias == nullptr, "no bias");
  require(g.m >= 1 && g.n >= 8 && g.n % 8 == 0 && g.k >= 16 && g.k % 16 == 0,
          "m >= 1, n % 8 == 0, k % 16 == 0, got m=" + std::to_string(g.m) + " n=" + std::to_string(g.n) +
              " k=" + std::to_string(g.k));
  require(static_cast<int64_t>(p.num_groups) * g.n < (int64_t(1) << 31), "G * n < 2^31 (TMA coordinates)");
  if (p.layout == GroupedLayout::kMasked) {
    require(p.rows_per_group >= 1 && p.rows_per_group * p.num_groups == g.m, "m == G * max_m");
  }
  require(g.lda % 16 == 0 && g.ldb % 16 == 0 && g.a_scale_ld % 4 == 0 && g.a_scale_ld >= g.m,
          "16-byte aligned rows of a, b and a_scale");
  require(g.forced_config >= -1 && g.forced_config < kNumGroupedConfigs,
          "forced_config in [-1, " + std::to_string(kNumGroupedConfigs) + ")");
}

}  // namespace
}  // namespace sm90

int sm90_fp8_gemm_num_grouped_configs() { return sm90::kNumGroupedConfigs; }

const char* sm90_fp8_gemm_grouped_config_name(int idx) {
  static const char* const kNames[] = {"grouped_bm64_bn128", "grouped_bm128_bn128", "grouped_bm128_bn256",
                                       "grouped_bm128_bn128_st", "grouped_bm128_bn256_st"};
  static_assert(sizeof(kNames) / sizeof(kNames[0]) == sm90::kNumGroupedConfigs, "one name per config");
  if (idx < 0 || idx >= sm90::kNumGroupedConfigs) sm90::throw_error("grouped config index out of range");
  return kNames[idx];
}

int sm90_fp8_gemm_pick_grouped_config(const GroupedGemmParams& p) {
  // Rows per expert decide the tile height: a 128-row tile over a 30-row expert wastes 3/4 of its
  // tensor-core work, while 64-row tiles halve the weight re-use of large experts.
  const int64_t rows = p.expected_m > 0 ? p.expected_m : p.gemm.m / p.num_groups;
  if (rows <= 64) return 0;
  // expected_m is a hint: experts of the masked layout vary around it (a 2 x 512 masked run with
  // +-10% rows took 18% longer with 128 x 256 tiles than with 128 x 128), so count 15% more rows.
  const int64_t rows_bound = p.layout == GroupedLayout::kMasked ? rows + rows * 15 / 100 : rows;
  const int64_t m_blocks = p.num_groups * sm90::ceil_div<int64_t>(rows_bound, 128);
  const bool wide = sm90::prefer_128x256_tiles(m_blocks, p.gemm.n, p.gemm.num_sms);
  // Short K with bf16 out: the staged epilogue (the dense kernel measured +5% at K = 2048 and +20% at
  // K = 512 with 256 x 128 tiles; UNMEASURED for the grouped kinds so far).
  const bool staged = p.gemm.out_kind == OutKind::kBF16 && p.gemm.k <= 4096;
  return wide ? (staged ? 4 : 2) : (staged ? 3 : 1);
}

void sm90_fp8_gemm_grouped(const GroupedGemmParams& p) {
  sm90::validate(p);
  const int idx = p.gemm.forced_config >= 0 ? p.gemm.forced_config : sm90_fp8_gemm_pick_grouped_config(p);
  const sm90::GroupedConfigEntry& c = sm90::kGroupedConfigs[idx];
  (p.layout == GroupedLayout::kContiguous ? c.contiguous : c.masked)(p);
}

}  // namespace torch_fp8gemm
