// Dense FP8 GEMM entry points (sm90_fp8_gemm_api.h): argument checks, config table, heuristic.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "sm90_fp8_gemm_api.h"
#include "sm90_fp8_gemm_configs.cuh"
#include "sm90_fp8_gemm_launch.cuh"

namespace torch_fp8gemm {
namespace sm90 {

#define TORCH_FP8GEMM_DECLARE_LAUNCH(BM, BN, CM, CN, ST) \
  extern template void launch_dense<BM, BN, CM, CN, ST>(const DenseGemmParams&);
TORCH_FP8GEMM_SM90_DENSE_CONFIGS(TORCH_FP8GEMM_DECLARE_LAUNCH)
#undef TORCH_FP8GEMM_DECLARE_LAUNCH

namespace {

struct ConfigEntry {
  int block_m;
  int block_n;
  int cluster_m;
  int cluster_n;
  bool staged;  // TMA-store epilogue through a staging tile
  int stages;
  void (*launch)(const DenseGemmParams&);
};

#define TORCH_FP8GEMM_CONFIG_ENTRY(BM, BN, CM, CN, ST)                                                     \
  {BM, BN, CM, CN, ST != 0, KernelConfig<BM, BN, CM, CN, GemmKind::kDense, ST != 0>::kStages, \
   &launch_dense<BM, BN, CM, CN, ST != 0>},
constexpr ConfigEntry kConfigs[] = {TORCH_FP8GEMM_SM90_DENSE_CONFIGS(TORCH_FP8GEMM_CONFIG_ENTRY)};
#undef TORCH_FP8GEMM_CONFIG_ENTRY
constexpr int kNumConfigs = static_cast<int>(sizeof(kConfigs) / sizeof(kConfigs[0]));
// The library's own configs come first; measurement builds append experiment configs after them.
#define TORCH_FP8GEMM_COUNT_CONFIG(BM, BN, CM, CN, ST) +1
constexpr int kNumLibraryConfigs = 0 TORCH_FP8GEMM_SM90_LIBRARY_CONFIGS(TORCH_FP8GEMM_COUNT_CONFIG);
#undef TORCH_FP8GEMM_COUNT_CONFIG

const std::vector<std::string>& config_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (const ConfigEntry& c : kConfigs) {
      v.push_back("bm" + std::to_string(c.block_m) + "_bn" + std::to_string(c.block_n) + "_s" +
                  std::to_string(c.stages) +
                  (c.cluster_n == 2 ? "_mc2a" : c.cluster_m == 2 ? "_mc2b" : "_mc1") + (c.staged ? "_st" : ""));
    }
    return v;
  }();
  return names;
}

std::string shape_str(const DenseGemmParams& p) {
  return "(m=" + std::to_string(p.m) + ", n=" + std::to_string(p.n) + ", k=" + std::to_string(p.k) + ")";
}

void require(bool cond, const DenseGemmParams& p, const std::string& what) {
  if (!cond) throw_error("expected " + what + " for " + shape_str(p));
}

bool aligned(const void* ptr, uintptr_t bytes) { return (reinterpret_cast<uintptr_t>(ptr) % bytes) == 0; }

}  // namespace

// Shared by the dense and the row-scaled entry points (the latter checks its b_scale on top).
void validate_dense_params(const DenseGemmParams& p, int num_configs) {
  constexpr int64_t kMaxDim = (int64_t(1) << 31) - 1;  // TMA coordinates are int32
  require(p.m >= 1 && p.m <= kMaxDim, p, "1 <= m < 2^31, got m=" + std::to_string(p.m));
  require(p.n >= 8 && p.n % 8 == 0 && p.n <= kMaxDim, p, "n >= 8 and n % 8 == 0, got n=" + std::to_string(p.n));
  require(p.k >= 16 && p.k % 16 == 0 && p.k <= kMaxDim, p, "k >= 16 and k % 16 == 0, got k=" + std::to_string(p.k));
  require(p.a != nullptr && p.b != nullptr && p.a_scale != nullptr && p.b_scale != nullptr && p.out != nullptr, p,
          "non-null a, b, a_scale, b_scale and out pointers");
  require(aligned(p.a, 16) && aligned(p.b, 16), p, "a and b to be 16-byte aligned");
  require(p.lda >= p.k && p.lda % 16 == 0, p, "lda >= k and lda % 16 == 0, got lda=" + std::to_string(p.lda));
  require(p.ldb >= p.k && p.ldb % 16 == 0, p, "ldb >= k and ldb % 16 == 0, got ldb=" + std::to_string(p.ldb));
  require(aligned(p.a_scale, 16) && p.a_scale_ld >= p.m && p.a_scale_ld % 4 == 0, p,
          "a_scale 16-byte aligned with a_scale_ld >= m and a_scale_ld % 4 == 0, got a_scale_ld=" +
              std::to_string(p.a_scale_ld));
  require(aligned(p.b_scale, 4), p, "b_scale to be 4-byte aligned");
  require(p.out_kind == OutKind::kBF16 || p.out_kind == OutKind::kFP32, p, "out_kind bf16 or fp32");
  const bool fp32 = p.out_kind == OutKind::kFP32;
  require(aligned(p.out, 16) && p.ldo >= p.n && p.ldo % (fp32 ? 4 : 8) == 0, p,
          std::string("out 16-byte aligned with ldo >= n and ldo % ") + (fp32 ? "4" : "8") +
              " == 0, got ldo=" + std::to_string(p.ldo));
  require(p.bias == nullptr || aligned(p.bias, fp32 ? 8 : 4), p, "bias aligned to two elements");
  require(p.num_sms >= 1, p, "num_sms >= 1, got " + std::to_string(p.num_sms));
  require(p.forced_config >= -1 && p.forced_config < num_configs, p,
          "forced_config in [-1, " + std::to_string(num_configs) + "), got " + std::to_string(p.forced_config));
  require(p.forced_splits >= 0, p, "forced_splits >= 0, got " + std::to_string(p.forced_splits));
  require(p.raster_band >= -(1 << 20) && p.raster_band <= (1 << 20), p,
          "|raster_band| <= 2^20 (0 = the default order), got " + std::to_string(p.raster_band));
}

namespace {

// Cost model (microseconds) used to rank configs, fitted to H200 measurements of the 19
// DeepSeek-V3 shapes plus all configs (bench/standalone/RESULTS_kernel.md):
//   one K block of one tile takes  0.21 + 1.75e-5 * BM * BN  us   (latency floor + tensor work),
//   a tile adds a fixed            0.50 + 5.0e-5  * BM * BN  us   (prologue, epilogue stores),
//   the kernel takes waves * tile time, floored by reading A, B and writing out once from HBM.
// BN that does not divide 128 pays ~20% for the two-scale-row promotion; BN > 128 in one fragment
// (no K-block software pipelining, register budget) ~35%; multicast measured slightly slower than
// plain 128x128 on H200, so it is penalised and not picked for now. The two-wave tiles (128x256,
// 256x128) and the three-warpgroup 192x128 tile follow the area model as measured (session 3).
//
// Split-K into s runs divides each tile's K blocks over s work units and adds a reducing pass over
// s FP32 partial slices: ~2.5 us (a dependent launch) + its bytes at ~3 TB/s.
double estimate_time(const ConfigEntry& c, const DenseGemmParams& p, int splits) {
  const int num_k_blocks = static_cast<int>(ceil_div<int64_t>(p.k, kBlockK));
  const double kb = k_blocks_per_split(num_k_blocks, splits);
  const double area = static_cast<double>(c.block_m) * c.block_n;
  const int64_t cluster = c.cluster_m * c.cluster_n;
  const int64_t tiles = ceil_div<int64_t>(ceil_div<int64_t>(p.m, c.block_m), c.cluster_m) *
                        ceil_div<int64_t>(ceil_div<int64_t>(p.n, c.block_n), c.cluster_n) * cluster * splits;
  const int64_t slots = std::max<int64_t>(cluster, (p.num_sms / cluster) * cluster);
  const int64_t waves = ceil_div<int64_t>(tiles, slots);
  double t_kb = 0.21 + 1.75e-5 * area;
  // The two-scale-row promotion is paid per column wave: 128x256's two 128-column waves each lie in
  // one scale block (until the sixth session the whole-tile test `128 % BN` charged them 20% too, so
  // the heuristic never took 128x256 where it ties with 256x128).
  const int wave_n = c.block_n / num_column_waves(c.block_n);
  if (wave_n > 128) {
    t_kb *= 1.35;
  } else if (128 % wave_n != 0) {
    t_kb *= 1.20;
  }
  if (cluster > 1) t_kb *= 1.03;
  // Staged epilogue: its stores overlap the next tile (per-tile cost 5.0e-5 -> 2.9e-5 * area), but
  // the staging tile takes a pipeline stage (two-wave tiles: 4 -> 3). With the fifth session's main
  // loop (short wait-to-issue path) 3 stages keep up with 4 (H200, 256x128, M = 4096: K = 512 +20%,
  // 2048 +5%, 7168 +0.5%, 16384 +0.5%, 8192^3 -1.5%): ~1% per K block.
  if (c.staged) t_kb *= 1.01;
  const double t_tile = kb * t_kb + 0.50 + (c.staged && p.out_kind == OutKind::kBF16 ? 2.9e-5 : 5.0e-5) * area;
  const double out_bytes = static_cast<double>(p.m) * p.n * (p.out_kind == OutKind::kFP32 ? 4 : 2);
  const double hbm_us = (static_cast<double>(p.m) * p.k + static_cast<double>(p.n) * p.k + out_bytes) / 4.0e6;
  const double reduce_us = splits > 1 ? 2.5 + (2.0 * splits * p.m * p.n * 4 + out_bytes) / 3.0e6 : 0.0;
  return std::max(static_cast<double>(waves) * t_tile, hbm_us) + reduce_us;
}

// The heuristic never splits K: on the H200 split-K measured a wash (64x2112x7168 +8%, 64x4096x7168
// -14%, 128x7168x16384 -9%; RESULTS.md, fourth session), so it only runs when forced (tests, tuning).
DensePlan plan(const DenseGemmParams& p) {
  const int num_k_blocks = static_cast<int>(ceil_div<int64_t>(p.k, kBlockK));
  const int splits = effective_splits(num_k_blocks, p.forced_splits);
  DensePlan best{-1, splits};
  double best_time = 0.0;
  for (int i = 0; i < kNumConfigs; ++i) {
    const ConfigEntry& c = kConfigs[i];
    if (p.forced_config >= 0 && i != p.forced_config) continue;
    if (p.forced_config < 0 && i >= kNumLibraryConfigs) continue;  // experiment configs: forced only
    // BLOCK_M = 64 only pays when it avoids mostly-empty 128-row tiles.
    if (p.forced_config < 0 && c.block_m >= 128 && p.m <= 64) continue;
    const double t = estimate_time(c, p, splits);
    // Near-ties (within 1%) keep the earlier (smaller) config of the list.
    if (best.config < 0 || t < best_time * 0.99) {
      best.config = i;
      best_time = t;
    }
  }
  if (best.config < 0) throw_error("no dense configuration fits " + shape_str(p));
  return best;
}

}  // namespace
}  // namespace sm90

int sm90_fp8_gemm_num_configs() { return sm90::kNumConfigs; }

const char* sm90_fp8_gemm_config_name(int idx) {
  if (idx < 0 || idx >= sm90::kNumConfigs) {
    sm90::throw_error("config index " + std::to_string(idx) + " out of range [0, " +
                      std::to_string(sm90::kNumConfigs) + ")");
  }
  return sm90::config_names()[idx].c_str();
}

DensePlan sm90_fp8_gemm_plan(const DenseGemmParams& p) { return sm90::plan(p); }

int sm90_fp8_gemm_pick_config(const DenseGemmParams& p) {
  DenseGemmParams q = p;
  q.forced_config = -1;
  q.forced_splits = 0;
  return sm90::plan(q).config;
}

int64_t sm90_fp8_gemm_workspace_floats(const DenseGemmParams& p) {
  const DensePlan pl = sm90::plan(p);
  return pl.splits > 1 ? static_cast<int64_t>(pl.splits) * p.m * p.n : 0;
}

void sm90_fp8_gemm_dense(const DenseGemmParams& p) {
  sm90::validate_dense_params(p, sm90::kNumConfigs);
  const DensePlan pl = sm90::plan(p);
  DenseGemmParams q = p;
  q.forced_splits = pl.splits;  // the launcher runs exactly this many K runs
  sm90::kConfigs[pl.config].launch(q);
  if (pl.splits > 1) {
    split_k_reduce(p.workspace, pl.splits, p.m, p.n, p.bias, p.out, p.ldo, p.out_kind, p.num_sms, p.stream);
  }
}

}  // namespace torch_fp8gemm
