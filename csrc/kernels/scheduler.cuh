// Persistent tile scheduler for the sm_90a FP8 GEMM.
//
// Every CTA of the persistent grid walks linear tile ids blockIdx.x, blockIdx.x + gridDim.x, ...
// A linear id maps to (m_block, n_block) through grouped rasterization: tiles are ordered in bands of
// kBandM consecutive m-blocks; inside a band the m-block varies fastest. The ~132 tiles in flight at
// any time then touch about kBandM blocks of A and 132 / kBandM blocks of B, which keeps both operand
// panels L2-resident while they are re-read.
//
// Grouped (MoE) layouts are meant to be added here only: the kernel asks the scheduler for the next
// tile and for the operand offsets of that tile (a_row, b_row, out_row, rows_valid) and never computes
// them itself.
#pragma once
#include <cstdint>

#include "common.cuh"

namespace torch_fp8gemm::sm90 {

struct TileCoord {
  int m_block;
  int n_block;
};

template <int kBlockM, int kBlockN, int kBandM = 16>
struct DenseScheduler {
  int num_m_blocks;
  int num_n_blocks;
  int num_tiles;
  int next_tile;

  __device__ __forceinline__ DenseScheduler(int64_t m, int64_t n) {
    num_m_blocks = static_cast<int>(ceil_div<int64_t>(m, kBlockM));
    num_n_blocks = static_cast<int>(ceil_div<int64_t>(n, kBlockN));
    num_tiles = num_m_blocks * num_n_blocks;
    next_tile = blockIdx.x;
  }

  // Returns false once this CTA has no tiles left.
  __device__ __forceinline__ bool next(TileCoord& tile) {
    if (next_tile >= num_tiles) return false;
    const int band_size = kBandM * num_n_blocks;  // tiles per full band
    const int band = next_tile / band_size;
    const int in_band = next_tile - band * band_size;
    const int first_m = band * kBandM;
    const int band_m = min(kBandM, num_m_blocks - first_m);  // the last band may be narrower
    tile.m_block = first_m + in_band % band_m;
    tile.n_block = in_band / band_m;
    next_tile += gridDim.x;
    return true;
  }
};

}  // namespace torch_fp8gemm::sm90
