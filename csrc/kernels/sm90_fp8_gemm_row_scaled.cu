// Dense FP8 GEMM with B scaled per 1x128 group along K (sm90_fp8_gemm_api.h): the weight-gradient
// GEMM dW = dy^T x, whose operands are both quantized along the token dim. The dense kernel
// template with GemmKind::kDenseRowScaledB; two configs.
#include <string>

#include "sm90_fp8_gemm_api.h"
#include "sm90_fp8_gemm_launch.cuh"

namespace torch_fp8gemm {
namespace sm90 {

void validate_dense_params(const DenseGemmParams& p, int num_configs);  // sm90_fp8_gemm_dense.cu

namespace {

// BLOCK_N = 128 keeps the K loop software-pipelined; 128 x 256 (two 128-column waves) loads a
// quarter fewer operand bytes per flop for large weight gradients. BLOCK_M = 64 where 128-row tiles
// would leave SMs idle (weight gradients of small layers).
struct RowScaledConfigEntry {
  int block_m;
  int block_n;
  void (*launch)(const DenseGemmParams&);
};

constexpr RowScaledConfigEntry kRowScaledConfigs[] = {
    {64, 128, &launch_dense_row_scaled<64, 128>},
    {128, 128, &launch_dense_row_scaled<128, 128>},
    {128, 256, &launch_dense_row_scaled<128, 256>},
};
constexpr int kNumRowScaledConfigs = static_cast<int>(sizeof(kRowScaledConfigs) / sizeof(kRowScaledConfigs[0]));

void validate_row_scaled(const DenseGemmParams& p) {
  validate_dense_params(p, kNumRowScaledConfigs);
  const auto fail = [&](const std::string& what) {
    throw_error("row-scaled GEMM: expected " + what + " for (m=" + std::to_string(p.m) + ", n=" +
                std::to_string(p.n) + ", k=" + std::to_string(p.k) + ")");
  };
  if (p.bias != nullptr) fail("no bias");
  if (reinterpret_cast<uintptr_t>(p.b_scale) % 16 != 0 || p.b_scale_ld < p.n || p.b_scale_ld % 4 != 0) {
    fail("b_scale 16-byte aligned with b_scale_ld >= n and b_scale_ld % 4 == 0, got b_scale_ld=" +
         std::to_string(p.b_scale_ld));
  }
  if (p.k_block_bounds != nullptr && (p.num_k_groups < 1 || p.num_k_groups > (1 << 20))) {
    fail("1 <= num_k_groups <= 2^20 with k_block_bounds, got " + std::to_string(p.num_k_groups));
  }
  if (p.k_block_bounds != nullptr && reinterpret_cast<uintptr_t>(p.k_block_bounds) % 4 != 0) {
    fail("k_block_bounds 4-byte aligned");
  }
}

}  // namespace
}  // namespace sm90

int sm90_fp8_gemm_num_row_scaled_configs() { return sm90::kNumRowScaledConfigs; }

const char* sm90_fp8_gemm_row_scaled_config_name(int idx) {
  static const char* const kNames[] = {"row_scaled_bm64_bn128", "row_scaled_bm128_bn128",
                                       "row_scaled_bm128_bn256"};
  static_assert(sizeof(kNames) / sizeof(kNames[0]) == sm90::kNumRowScaledConfigs, "one name per config");
  if (idx < 0 || idx >= sm90::kNumRowScaledConfigs) sm90::throw_error("row-scaled config index out of range");
  return kNames[idx];
}

int sm90_fp8_gemm_pick_row_scaled_config(const DenseGemmParams& p) {
  // 128-row tiles unless they would fill less than one wave of SMs; then 128 x 256 where it pays.
  // K-grouped: every group has the same [m, n] output, so the tile count is groups x tiles.
  const int64_t groups = p.k_block_bounds != nullptr ? std::max(1, p.num_k_groups) : 1;
  const int64_t m_blocks = sm90::ceil_div<int64_t>(p.m, 128) * groups;
  if (m_blocks * sm90::ceil_div<int64_t>(p.n, 128) < p.num_sms) return 0;
  return sm90::prefer_128x256_tiles(m_blocks, p.n, p.num_sms) ? 2 : 1;
}

void sm90_fp8_gemm_dense_row_scaled(const DenseGemmParams& p) {
  sm90::validate_row_scaled(p);
  const int idx = p.forced_config >= 0 ? p.forced_config : sm90_fp8_gemm_pick_row_scaled_config(p);
  sm90::kRowScaledConfigs[idx].launch(p);
}

}  // namespace torch_fp8gemm
