// Zero-fill of the output rows that no expert owns in the contiguous layout (sm90_fp8_gemm_api.h):
// rows at or past the last expert's end. The grouped GEMM writes only expert rows, and the masked
// layout leaves the rows past each expert's count unspecified, so only the contiguous op calls this.
// The bound lives on the device, so each warp checks its row and clears it only when it is unowned
// (owned rows cost one broadcast load) instead of zeroing all of out before the GEMM.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "sm90_fp8_gemm_api.h"

namespace torch_fp8gemm {
namespace {

constexpr int kWarpsPerBlock = 8;

__global__ void zero_unowned_rows_kernel(uint8_t* out, int64_t row_bytes, int64_t ld_bytes, int64_t m,
                                         const int32_t* group_ends, int num_groups) {
  const int lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (row >= m) return;
  // Same clamping as the scheduler: the last end, clamped to [0, m].
  const int64_t end = min(max(static_cast<int64_t>(__ldg(group_ends + num_groups - 1)), int64_t(0)), m);
  if (row < end) return;
  // Rows are 16-byte aligned (ldo and out checked by the caller): 16-byte stores, then a tail.
  uint8_t* dst = out + row * ld_bytes;
  const int64_t vec = row_bytes / 16;
  for (int64_t i = lane; i < vec; i += 32) reinterpret_cast<uint4*>(dst)[i] = make_uint4(0, 0, 0, 0);
  for (int64_t i = vec * 16 + lane; i < row_bytes; i += 32) dst[i] = 0;
}

}  // namespace

void grouped_zero_unowned_rows(const GroupedGemmParams& p) {
  const DenseGemmParams& g = p.gemm;
  const int64_t elem = g.out_kind == OutKind::kFP32 ? 4 : 2;
  if (reinterpret_cast<uintptr_t>(g.out) % 16 != 0 || (g.ldo * elem) % 16 != 0) {
    throw std::runtime_error("torch_fp8gemm grouped zero-fill: expected a 16-byte aligned output with 16-byte "
                             "aligned rows, got ldo=" + std::to_string(g.ldo));
  }
  if (p.layout != GroupedLayout::kContiguous) {
    throw std::runtime_error("torch_fp8gemm grouped zero-fill: the contiguous layout only (masked rows past masked_m are unspecified)");
  }
  if (g.m <= 0 || g.n <= 0) return;
  const int64_t blocks = (g.m + kWarpsPerBlock - 1) / kWarpsPerBlock;
  if (blocks > INT32_MAX) throw std::runtime_error("torch_fp8gemm grouped zero-fill: too many rows");
  zero_unowned_rows_kernel<<<static_cast<unsigned>(blocks), kWarpsPerBlock * 32, 0, g.stream>>>(
      static_cast<uint8_t*>(g.out), g.n * elem, g.ldo * elem, g.m, p.group_ends, p.num_groups);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("torch_fp8gemm grouped zero-fill: launch failed: ") + cudaGetErrorString(err));
  }
}

}  // namespace torch_fp8gemm
