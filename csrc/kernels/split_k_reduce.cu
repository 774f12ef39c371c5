// Second pass of split-K: out = sum_s partial[s] (+ bias), in a fixed order of s so that results are
// bit-identical run to run (no atomics). Memory-bound: each thread owns 4 consecutive columns of one
// row (n % 8 == 0, so a row holds whole float4s) and reads them with 16-byte loads.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "common.cuh"
#include "sm90_fp8_gemm_api.h"

namespace torch_fp8gemm {
namespace {

template <typename OutT>
__global__ void split_k_reduce_kernel(const float4* __restrict__ partial, int num_splits, int64_t m, int64_t n4,
                                      const OutT* __restrict__ bias, OutT* __restrict__ out, int64_t ldo) {
  const int64_t total = m * n4;
  const int64_t slice = total;  // float4s per split
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float4 acc = __ldg(partial + i);
    for (int s = 1; s < num_splits; ++s) {
      const float4 v = __ldg(partial + s * slice + i);
      acc.x += v.x, acc.y += v.y, acc.z += v.z, acc.w += v.w;
    }
    const int64_t row = i / n4, col = (i - row * n4) * 4;
    if (bias != nullptr) {
      if constexpr (std::is_same_v<OutT, float>) {
        // fp32 bias is only guaranteed 8-byte aligned: two 8-byte loads
        const float2 b01 = *reinterpret_cast<const float2*>(bias + col);
        const float2 b23 = *reinterpret_cast<const float2*>(bias + col + 2);
        acc.x += b01.x, acc.y += b01.y, acc.z += b23.x, acc.w += b23.y;
      } else {
        const __nv_bfloat162 b01 = *reinterpret_cast<const __nv_bfloat162*>(bias + col);
        const __nv_bfloat162 b23 = *reinterpret_cast<const __nv_bfloat162*>(bias + col + 2);
        acc.x += __low2float(b01), acc.y += __high2float(b01);
        acc.z += __low2float(b23), acc.w += __high2float(b23);
      }
    }
    OutT* dst = out + row * ldo + col;
    if constexpr (std::is_same_v<OutT, float>) {
      *reinterpret_cast<float4*>(dst) = acc;
    } else {
      const __nv_bfloat162 lo = __floats2bfloat162_rn(acc.x, acc.y), hi = __floats2bfloat162_rn(acc.z, acc.w);
      uint2 packed;
      packed.x = *reinterpret_cast<const uint32_t*>(&lo);
      packed.y = *reinterpret_cast<const uint32_t*>(&hi);
      *reinterpret_cast<uint2*>(dst) = packed;
    }
  }
}

}  // namespace

void split_k_reduce(const float* partial, int num_splits, int64_t m, int64_t n, const void* bias, void* out,
                    int64_t ldo, OutKind out_kind, int num_sms, cudaStream_t stream) {
  if (n % 4 != 0) throw std::runtime_error("split_k_reduce: expected n % 4 == 0, got n=" + std::to_string(n));
  const int64_t n4 = n / 4;
  const int64_t total = m * n4;
  if (total == 0) return;
  constexpr int kThreads = 256;
  const int64_t blocks = std::min<int64_t>(sm90::ceil_div<int64_t>(total, kThreads), int64_t(std::max(1, num_sms)) * 8);
  const auto* p4 = reinterpret_cast<const float4*>(partial);
  if (out_kind == OutKind::kFP32) {
    split_k_reduce_kernel<float><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        p4, num_splits, m, n4, static_cast<const float*>(bias), static_cast<float*>(out), ldo);
  } else {
    split_k_reduce_kernel<__nv_bfloat16><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        p4, num_splits, m, n4, static_cast<const __nv_bfloat16*>(bias), static_cast<__nv_bfloat16*>(out), ldo);
  }
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("split_k_reduce: kernel launch failed: ") + cudaGetErrorString(err));
  }
}

}  // namespace torch_fp8gemm
