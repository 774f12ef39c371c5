// Explicit instantiations of the dense_1x128 configs (sm90_fp8_gemm_configs.cuh), one file per list so that
// the lists compile in parallel.
#include "sm90_fp8_gemm_configs.cuh"
#include "sm90_fp8_gemm_launch.cuh"

namespace torch_fp8gemm::sm90 {
TORCH_FP8GEMM_DENSE_1X128_CONFIGS(TORCH_FP8GEMM_INSTANTIATE_DENSE_1X128)
}  // namespace torch_fp8gemm::sm90
