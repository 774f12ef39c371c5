// K-major activation scales (row-major [rows, K blocks], e.g. per-token scales from another
// quantizer) copied into the M-major layout the GEMM's TMA loads (quantize_api.h). A 32 x 32 tile
// passes through shared memory so that both the reads (along K blocks) and the writes (along rows)
// are coalesced; a strided element-wise copy reads one 32-byte sector per 4-byte scale instead.
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "quantize_api.h"

namespace torch_fp8gemm {
namespace {

constexpr int kTile = 32, kRowsPerPass = 8;

__global__ void scales_to_m_major_kernel(const float* __restrict__ src, int64_t rows, int64_t k_blocks, int64_t src_ld,
                                         float* __restrict__ dst, int64_t dst_ld) {
  __shared__ float tile[kTile][kTile + 1];  // +1: the transposed reads hit 32 distinct banks
  const int64_t kb0 = static_cast<int64_t>(blockIdx.x) * kTile, r0 = static_cast<int64_t>(blockIdx.y) * kTile;
#pragma unroll
  for (int j = threadIdx.y; j < kTile; j += kRowsPerPass) {
    const int64_t r = r0 + j, kb = kb0 + threadIdx.x;
    if (r < rows && kb < k_blocks) tile[j][threadIdx.x] = src[r * src_ld + kb];
  }
  __syncthreads();
#pragma unroll
  for (int j = threadIdx.y; j < kTile; j += kRowsPerPass) {
    const int64_t kb = kb0 + j, r = r0 + threadIdx.x;
    if (r < rows && kb < k_blocks) dst[kb * dst_ld + r] = tile[threadIdx.x][j];
  }
}

}  // namespace

void scales_to_m_major(const float* src, int64_t rows, int64_t k_blocks, int64_t src_ld, float* dst, int64_t dst_ld,
                       cudaStream_t stream) {
  if (rows < 0 || k_blocks < 0 || src_ld < k_blocks || dst_ld < rows) {
    throw std::runtime_error("torch_fp8gemm scales_to_m_major: expected src_ld >= k_blocks and dst_ld >= rows, got rows=" +
                             std::to_string(rows) + " k_blocks=" + std::to_string(k_blocks) + " src_ld=" +
                             std::to_string(src_ld) + " dst_ld=" + std::to_string(dst_ld));
  }
  if (rows == 0 || k_blocks == 0) return;
  const int64_t row_tiles = (rows + kTile - 1) / kTile, kb_tiles = (k_blocks + kTile - 1) / kTile;
  // grid.y holds at most 65535 row tiles: larger inputs launch once per 65535 * 32 rows.
  for (int64_t y0 = 0; y0 < row_tiles; y0 += 65535) {
    const int64_t ny = row_tiles - y0 < 65535 ? row_tiles - y0 : 65535;
    scales_to_m_major_kernel<<<dim3(static_cast<unsigned>(kb_tiles), static_cast<unsigned>(ny)), dim3(kTile, kRowsPerPass), 0,
                               stream>>>(src + y0 * kTile * src_ld, rows - y0 * kTile, k_blocks, src_ld, dst + y0 * kTile,
                                         dst_ld);
  }
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("torch_fp8gemm scales_to_m_major: launch failed: ") + cudaGetErrorString(err));
  }
}

}  // namespace torch_fp8gemm
