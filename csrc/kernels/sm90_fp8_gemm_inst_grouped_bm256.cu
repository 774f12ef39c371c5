// Explicit instantiations of the grouped (MoE) configs with BLOCK_M = 256 (sm90_fp8_gemm_configs.cuh), one file per list so that
// the lists compile in parallel.
#include "sm90_fp8_gemm_configs.cuh"
#include "sm90_fp8_gemm_launch.cuh"

namespace torch_fp8gemm::sm90 {
TORCH_FP8GEMM_GROUPED_BM256_CONFIGS(TORCH_FP8GEMM_INSTANTIATE_GROUPED)
}  // namespace torch_fp8gemm::sm90
