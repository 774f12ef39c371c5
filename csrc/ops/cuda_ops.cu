// CUDA registrations of the fp8gemm ops. Every op runs on the current stream of its inputs' device
// under a device guard. GEMMs go to the sm_90a kernels where they apply; elsewhere (other GPUs,
// grouped layouts until their kernels land) the ATen reference runs on the GPU.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "fp8gemm.h"

namespace torch_fp8gemm {
namespace {

at::Tensor dense_cuda(const at::Tensor& a, const at::Tensor& b, const std::optional<at::Tensor>& a_scale,
                      const std::optional<at::Tensor>& b_scale, const std::optional<at::Tensor>& bias,
                      std::optional<at::ScalarType> out_dtype) {
  const c10::cuda::CUDAGuard guard(a.device());
  return dense_op(a, b, a_scale, b_scale, bias, out_dtype, &dense_reference);
}

at::Tensor grouped_moe_cuda(const at::Tensor& a, const at::Tensor& b, const at::Tensor& group_offsets,
                            const std::optional<at::Tensor>& a_scale, const std::optional<at::Tensor>& b_scale,
                            std::optional<at::ScalarType> out_dtype) {
  const c10::cuda::CUDAGuard guard(a.device());
  return grouped_moe_op(a, b, group_offsets, a_scale, b_scale, out_dtype, &grouped_moe_reference);
}

at::Tensor grouped_moe_masked_cuda(const at::Tensor& a, const at::Tensor& b, const at::Tensor& masked_m,
                                   int64_t expected_m, const std::optional<at::Tensor>& a_scale,
                                   const std::optional<at::Tensor>& b_scale,
                                   std::optional<at::ScalarType> out_dtype) {
  const c10::cuda::CUDAGuard guard(a.device());
  return grouped_moe_masked_op(a, b, masked_m, expected_m, a_scale, b_scale, out_dtype,
                               &grouped_moe_masked_reference);
}

std::tuple<at::Tensor, at::Tensor> quantize_1x128_cuda(const at::Tensor& x) {
  const c10::cuda::CUDAGuard guard(x.device());
  return quantize_1x128_op(x);
}

std::tuple<at::Tensor, at::Tensor> quantize_128x128_cuda(const at::Tensor& w) {
  const c10::cuda::CUDAGuard guard(w.device());
  return quantize_128x128_op(w);
}

}  // namespace

TORCH_LIBRARY_IMPL(fp8gemm, CUDA, m) {
  m.impl("dense", &dense_cuda);
  m.impl("grouped_moe", &grouped_moe_cuda);
  m.impl("grouped_moe_masked", &grouped_moe_masked_cuda);
  m.impl("quantize_1x128", &quantize_1x128_cuda);
  m.impl("quantize_128x128", &quantize_128x128_cuda);
}

}  // namespace torch_fp8gemm
