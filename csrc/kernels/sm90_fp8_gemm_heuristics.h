// The configuration heuristic of the sm_90a FP8 GEMM (sm90_fp8_gemm_heuristics.cu): what each
// entry point launches.
#pragma once
#include <string>
#include <vector>

#include "sm90_fp8_gemm_api.h"
#include "sm90_fp8_gemm_launch.cuh"

namespace torch_fp8gemm::sm90 {

// One compiled configuration of a kind: its tile, cluster (cluster_m = 2: B shared), stage count,
// its ring of K-major A-scale boxes (GemmShape::kBoxSlots; 0: M-major scales only) and its launch
// function(s).
struct ConfigEntry {
  int block_m, block_n, cluster_m, stages, box_slots;
  void (*launch)(const DenseGemmParams&, const LaunchShape&);                 // dense, dense_1x128
  void (*launch_contiguous)(const GroupedGemmParams&, const LaunchShape&);  // grouped
  void (*launch_masked)(const GroupedGemmParams&, const LaunchShape&);
};

// The configuration (the forced one, else the heuristic's) and how to launch it.
struct Plan {
  int index;
  const ConfigEntry* config;
  LaunchShape shape;
};

Plan plan_dense(const DenseGemmParams& p);
Plan plan_dense_1x128(const DenseGemmParams& p);
Plan plan_grouped(const GroupedGemmParams& p);
// Whether configuration c (of a grouped kind or not) loads row-major (K-major) A scales
// [scale_rows, ceil(k / 128)] of a rows x n x k GEMM in place (else the op copies them M-major).
bool k_major_in_place(const ConfigEntry& c, bool grouped, int64_t scale_rows, int64_t rows, int64_t n, int64_t k);
const std::vector<std::string>& dense_config_names();  // e.g. "bm128_bn128_s5_mc1"
const std::vector<std::string>& grouped_config_names();
const std::vector<std::string>& dense_1x128_config_names();

}  // namespace torch_fp8gemm::sm90
