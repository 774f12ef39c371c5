// Explicit instantiations of dense sm_90a FP8 GEMM configs (see sm90_fp8_gemm_configs.cuh).
// Split over several files so that they compile in parallel.
#include "sm90_fp8_gemm_launch.cuh"

namespace torch_fp8gemm::sm90 {
template void launch_dense<64, 64, 1, 1>(const DenseGemmParams&);
template void launch_dense<64, 128, 1, 1>(const DenseGemmParams&);
template void launch_dense<128, 32, 1, 1>(const DenseGemmParams&);
#ifdef TORCH_FP8GEMM_EXPERIMENT_CONFIGS
template void launch_dense<64, 16, 1, 2>(const DenseGemmParams&);
template void launch_dense<64, 32, 1, 2>(const DenseGemmParams&);
template void launch_dense<64, 64, 1, 2>(const DenseGemmParams&);
#endif
}  // namespace torch_fp8gemm::sm90
