// Explicit instantiations of dense sm_90a FP8 GEMM configs (see sm90_fp8_gemm_configs.cuh).
// Split over several files so that they compile in parallel.
#include "sm90_fp8_gemm_launch.cuh"

namespace torch_fp8gemm::sm90 {
template void launch_dense<128, 64, 1, 1>(const DenseGemmParams&);
template void launch_dense<128, 112, 1, 1>(const DenseGemmParams&);
template void launch_dense<128, 144, 1, 1>(const DenseGemmParams&);
}  // namespace torch_fp8gemm::sm90
