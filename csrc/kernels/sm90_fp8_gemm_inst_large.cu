// Explicit instantiations of dense sm_90a FP8 GEMM configs (see sm90_fp8_gemm_configs.cuh):
// the large tiles (two waves per math warpgroup) for big M and N, with and without the staged
// (TMA-store) epilogue.
#include "sm90_fp8_gemm_launch.cuh"

namespace torch_fp8gemm::sm90 {
template void launch_dense<256, 128, 1, 1>(const DenseGemmParams&);
template void launch_dense<128, 256, 1, 1>(const DenseGemmParams&);
template void launch_dense<192, 128, 1, 1>(const DenseGemmParams&);
template void launch_dense<256, 128, 1, 1, true>(const DenseGemmParams&);
template void launch_dense<128, 256, 1, 1, true>(const DenseGemmParams&);
#ifdef TORCH_FP8GEMM_EXPERIMENT_CONFIGS
template void launch_dense<256, 128, 1, 2>(const DenseGemmParams&);
template void launch_dense<256, 128, 1, 2, true>(const DenseGemmParams&);
template void launch_dense<128, 256, 2, 1>(const DenseGemmParams&);
template void launch_dense<128, 256, 2, 1, true>(const DenseGemmParams&);
#endif
}  // namespace torch_fp8gemm::sm90
