// Entry points of the sm_90a FP8 GEMM (sm90_fp8_gemm_api.h): argument checks, then what the
// heuristic (sm90_fp8_gemm_heuristics.cu) plans.
#include <cstdint>
#include <string>

#include "sm90_fp8_gemm_api.h"
#include "sm90_fp8_gemm_heuristics.h"

namespace torch_fp8gemm {
namespace sm90 {
namespace {

std::string shape_str(const DenseGemmParams& p) {
  return "(m=" + std::to_string(p.m) + ", n=" + std::to_string(p.n) + ", k=" + std::to_string(p.k) + ")";
}

void require(bool cond, const DenseGemmParams& p, const std::string& what) {
  if (!cond) throw_error("expected " + what + " for " + shape_str(p));
}

bool aligned(const void* ptr, uintptr_t bytes) { return (reinterpret_cast<uintptr_t>(ptr) % bytes) == 0; }

// Shared by every kind (the dense_1x128 and grouped entry points check their extras on top).
void validate_dense_params(const DenseGemmParams& p, size_t num_configs) {
  constexpr int64_t kMaxDim = (int64_t(1) << 31) - 1;  // TMA coordinates are int32
  require(p.m >= 1 && p.m <= kMaxDim, p, "1 <= m < 2^31, got m=" + std::to_string(p.m));
  require(p.n >= 8 && p.n % 8 == 0 && p.n <= kMaxDim, p, "n >= 8 and n % 8 == 0, got n=" + std::to_string(p.n));
  require(p.k >= 16 && p.k % 16 == 0 && p.k <= kMaxDim, p, "k >= 16 and k % 16 == 0, got k=" + std::to_string(p.k));
  require(p.a != nullptr && p.b != nullptr && p.a_scale != nullptr && p.b_scale != nullptr && p.out != nullptr, p,
          "non-null a, b, a_scale, b_scale and out pointers");
  require(aligned(p.a, 16) && aligned(p.b, 16), p, "a and b to be 16-byte aligned");
  require(p.lda >= p.k && p.lda % 16 == 0, p, "lda >= k and lda % 16 == 0, got lda=" + std::to_string(p.lda));
  require(p.ldb >= p.k && p.ldb % 16 == 0, p, "ldb >= k and ldb % 16 == 0, got ldb=" + std::to_string(p.ldb));
  const int64_t a_scale_rows = p.a_scale_k_major ? (p.k + 127) / 128 : p.m;
  require(aligned(p.a_scale, 16) && p.a_scale_ld >= a_scale_rows && p.a_scale_ld % 4 == 0, p,
          std::string("a_scale 16-byte aligned with a_scale_ld >= ") + (p.a_scale_k_major ? "ceil(k / 128)" : "m") +
              " and a_scale_ld % 4 == 0, got a_scale_ld=" + std::to_string(p.a_scale_ld));
  require(aligned(p.b_scale, 4), p, "b_scale to be 4-byte aligned");
  require(p.out_kind == OutKind::kBF16 || p.out_kind == OutKind::kFP32, p, "out_kind bf16 or fp32");
  const bool fp32 = p.out_kind == OutKind::kFP32;
  require(aligned(p.out, 16) && p.ldo >= p.n && p.ldo % (fp32 ? 4 : 8) == 0, p,
          std::string("out 16-byte aligned with ldo >= n and ldo % ") + (fp32 ? "4" : "8") +
              " == 0, got ldo=" + std::to_string(p.ldo));
  require(p.bias == nullptr || aligned(p.bias, fp32 ? 8 : 4), p, "bias aligned to two elements");
  require(p.num_sms >= 1, p, "num_sms >= 1, got " + std::to_string(p.num_sms));
  require(p.forced_config >= -1 && p.forced_config < static_cast<int>(num_configs), p,
          "forced_config in [-1, " + std::to_string(num_configs) + "), got " + std::to_string(p.forced_config));
}

void validate_dense_1x128(const DenseGemmParams& p) {
  validate_dense_params(p, dense_1x128_config_names().size());
  require(p.bias == nullptr, p, "no bias (dense_1x128 GEMM)");
  require(!p.a_scale_k_major, p, "M-major a_scale (dense_1x128 GEMM)");
  require(aligned(p.b_scale, 16) && p.b_scale_ld >= p.n && p.b_scale_ld % 4 == 0, p,
          "b_scale 16-byte aligned with b_scale_ld >= n and b_scale_ld % 4 == 0 (dense_1x128 GEMM), got b_scale_ld=" +
              std::to_string(p.b_scale_ld));
  if (p.k_block_bounds != nullptr) {
    require(p.num_k_groups >= 1 && p.num_k_groups <= (1 << 20), p,
            "1 <= num_k_groups <= 2^20 with k_block_bounds, got " + std::to_string(p.num_k_groups));
    require(aligned(p.k_block_bounds, 4), p, "k_block_bounds 4-byte aligned");
  }
}

void validate_grouped(const GroupedGemmParams& p) {
  const DenseGemmParams& g = p.gemm;
  validate_dense_params(g, grouped_config_names().size());
  require(p.layout == GroupedLayout::kContiguous || p.layout == GroupedLayout::kMasked, g, "a known grouped layout");
  require(p.num_groups >= 1, g, "num_groups >= 1, got " + std::to_string(p.num_groups));
  require(p.group_ends != nullptr, g, "group_ends / group_sizes on the device");
  require(g.bias == nullptr, g, "no bias (grouped GEMM)");
  require(static_cast<int64_t>(p.num_groups) * g.n < (int64_t(1) << 31), g, "G * n < 2^31 (TMA coordinates)");
  if (p.layout == GroupedLayout::kMasked) {
    require(p.rows_per_group >= 1 && p.rows_per_group * p.num_groups == g.m, g,
            "m == G * max_m, got max_m=" + std::to_string(p.rows_per_group));
  }
}

const char* name_at(const std::vector<std::string>& names, int idx) {
  if (idx < 0 || idx >= static_cast<int>(names.size())) {
    throw_error("config index " + std::to_string(idx) + " out of range [0, " + std::to_string(names.size()) + ")");
  }
  return names[idx].c_str();
}

}  // namespace
}  // namespace sm90

int sm90_fp8_gemm_num_configs() { return static_cast<int>(sm90::dense_config_names().size()); }
const char* sm90_fp8_gemm_config_name(int idx) { return sm90::name_at(sm90::dense_config_names(), idx); }
int sm90_fp8_gemm_pick_config(const DenseGemmParams& p) {
  DenseGemmParams q = p;
  q.forced_config = -1;
  return sm90::plan_dense(q).index;
}
// A forced configuration (tests, measurements) loads K-major scales as given wherever its ring holds them.
// fp32 output: M-major only (the kernel compiles that output type for M-major scales alone).
bool sm90_fp8_gemm_dense_takes_k_major_scales(const DenseGemmParams& p) {
  if (p.out_kind == OutKind::kFP32) return false;
  const sm90::ConfigEntry& c = *sm90::plan_dense(p).config;
  if (p.forced_config >= 0) return sm90::k_major_ring_holds(c.box_slots, c.stages, sm90::ceil_div<int64_t>(p.k, 128));
  return sm90::k_major_in_place(c, false, p.m, p.m, p.n, p.k);
}
void sm90_fp8_gemm_dense(const DenseGemmParams& p) {
  sm90::validate_dense_params(p, sm90::dense_config_names().size());
  const sm90::Plan plan = sm90::plan_dense(p);
  plan.config->launch(p, plan.shape);
}

int sm90_fp8_gemm_num_dense_1x128_configs() { return static_cast<int>(sm90::dense_1x128_config_names().size()); }
const char* sm90_fp8_gemm_dense_1x128_config_name(int idx) { return sm90::name_at(sm90::dense_1x128_config_names(), idx); }
int sm90_fp8_gemm_pick_dense_1x128_config(const DenseGemmParams& p) {
  DenseGemmParams q = p;
  q.forced_config = -1;
  return sm90::plan_dense_1x128(q).index;
}
void sm90_fp8_gemm_dense_1x128(const DenseGemmParams& p) {
  sm90::validate_dense_1x128(p);
  const sm90::Plan plan = sm90::plan_dense_1x128(p);
  plan.config->launch(p, plan.shape);
}

int sm90_fp8_gemm_num_grouped_configs() { return static_cast<int>(sm90::grouped_config_names().size()); }
const char* sm90_fp8_gemm_grouped_config_name(int idx) { return sm90::name_at(sm90::grouped_config_names(), idx); }
int sm90_fp8_gemm_pick_grouped_config(const GroupedGemmParams& p) {
  GroupedGemmParams q = p;
  q.gemm.forced_config = -1;
  return sm90::plan_grouped(q).index;
}
bool sm90_fp8_gemm_grouped_takes_k_major_scales(const GroupedGemmParams& p) {
  if (p.gemm.out_kind == OutKind::kFP32) return false;  // as for the dense GEMM
  return sm90::k_major_in_place(*sm90::plan_grouped(p).config, true, p.gemm.m, p.gemm.m, p.gemm.n, p.gemm.k);
}
void sm90_fp8_gemm_grouped(const GroupedGemmParams& p) {
  sm90::validate_grouped(p);
  const sm90::Plan plan = sm90::plan_grouped(p);
  (p.layout == GroupedLayout::kContiguous ? plan.config->launch_contiguous : plan.config->launch_masked)(p, plan.shape);
}

}  // namespace torch_fp8gemm
