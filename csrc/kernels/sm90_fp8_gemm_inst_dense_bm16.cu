// Explicit instantiations of the dense configs with BLOCK_M = 16 (sm90_fp8_gemm_configs.cuh), one file per list so that
// the lists compile in parallel.
#include "sm90_fp8_gemm_configs.cuh"
#include "sm90_fp8_gemm_launch.cuh"

namespace torch_fp8gemm::sm90 {
TORCH_FP8GEMM_DENSE_BM16_CONFIGS(TORCH_FP8GEMM_INSTANTIATE_DENSE)
}  // namespace torch_fp8gemm::sm90
