// Zero-fill of the output rows that no expert owns (sm90_fp8_gemm_api.h). The grouped GEMM writes
// only expert rows; the rest of out must read as zero: contiguous layout, rows at or past the last
// offset; masked layout, rows at or past masked_m[g] inside expert g's block. The row ownership lives
// on the device, so instead of zeroing all of out before the GEMM (a full extra pass over the
// output) each warp checks its row and clears it only when it is unowned: owned rows cost one
// broadcast load of the expert bound.
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
                                         GroupedLayout layout, const int32_t* group_rows, int num_groups,
                                         int64_t rows_per_group) {
  const int lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (row >= m) return;
  bool owned;
  if (layout == GroupedLayout::kContiguous) {
    // Same clamping as the scheduler: the last end, clamped to [0, m].
    const int64_t end = min(max(static_cast<int64_t>(__ldg(group_rows + num_groups - 1)), int64_t(0)), m);
    owned = row < end;
  } else {
    const int64_t g = row / rows_per_group;
    const int64_t valid = min(max(static_cast<int64_t>(__ldg(group_rows + g)), int64_t(0)), rows_per_group);
    owned = row - g * rows_per_group < valid;
  }
  if (owned) return;
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
  if (g.m <= 0 || g.n <= 0) return;
  const int64_t blocks = (g.m + kWarpsPerBlock - 1) / kWarpsPerBlock;
  if (blocks > INT32_MAX) throw std::runtime_error("torch_fp8gemm grouped zero-fill: too many rows");
  zero_unowned_rows_kernel<<<static_cast<unsigned>(blocks), kWarpsPerBlock * 32, 0, g.stream>>>(
      static_cast<uint8_t*>(g.out), g.n * elem, g.ldo * elem, g.m, p.layout, p.group_rows, p.num_groups,
      p.layout == GroupedLayout::kMasked ? p.rows_per_group : 1);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("torch_fp8gemm grouped zero-fill: launch failed: ") + cudaGetErrorString(err));
  }
}

}  // namespace torch_fp8gemm
