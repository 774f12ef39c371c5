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
  bool valid;  // false: a phantom tile of a 2-CTA cluster whose peer has a real tile (see below)
};

// kClusterM x kClusterN CTAs (at most 2 in all) form a cluster that shares one operand through TMA
// multicast: kClusterN = 2 pairs two n-blocks of one m-block (A shared), kClusterM = 2 pairs two
// m-blocks of one n-block (B shared). The scheduler walks cluster tiles (kClusterM x kClusterN
// blocks); the CTA of cluster rank r takes block r of it. Where the grid of blocks is odd along the
// paired dimension, the last cluster tile has one block past the edge: that CTA gets a phantom tile
// (valid = false) and still runs the whole pipeline (its loads are zero-filled out of bounds, its
// compute and stores are skipped), so both CTAs always iterate in lockstep.
template <int kBlockM, int kBlockN, int kClusterM = 1, int kClusterN = 1, int kBandM = 16>
struct DenseScheduler {
  static_assert(kClusterM * kClusterN <= 2, "clusters of at most 2 CTAs");
  static constexpr int kClusterSize = kClusterM * kClusterN;
  int num_m_blocks;
  int num_n_blocks;
  int num_cm;  // cluster tiles along m
  int num_cn;  // cluster tiles along n
  int num_cluster_tiles;
  int next_tile;
  int stride;
  int rank;

  __device__ __forceinline__ DenseScheduler(int64_t m, int64_t n, int cluster_rank) {
    num_m_blocks = static_cast<int>(ceil_div<int64_t>(m, kBlockM));
    num_n_blocks = static_cast<int>(ceil_div<int64_t>(n, kBlockN));
    num_cm = ceil_div(num_m_blocks, kClusterM);
    num_cn = ceil_div(num_n_blocks, kClusterN);
    num_cluster_tiles = num_cm * num_cn;
    next_tile = blockIdx.x / kClusterSize;
    stride = gridDim.x / kClusterSize;
    rank = cluster_rank;
  }

  // Returns false once this CTA (and its cluster peer) has no tiles left.
  __device__ __forceinline__ bool next(TileCoord& tile) {
    if (next_tile >= num_cluster_tiles) return false;
    const int band_size = kBandM * num_cn;  // cluster tiles per full band
    const int band = next_tile / band_size;
    const int in_band = next_tile - band * band_size;
    const int first_m = band * kBandM;
    const int band_m = min(kBandM, num_cm - first_m);  // the last band may be narrower
    const int cm = first_m + in_band % band_m;
    const int cn = in_band / band_m;
    tile.m_block = cm * kClusterM + (kClusterM == 2 ? rank : 0);
    tile.n_block = cn * kClusterN + (kClusterN == 2 ? rank : 0);
    tile.valid = tile.m_block < num_m_blocks && tile.n_block < num_n_blocks;
    next_tile += stride;
    return true;
  }
};

}  // namespace torch_fp8gemm::sm90
