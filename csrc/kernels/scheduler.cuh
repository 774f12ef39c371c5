// Persistent tile scheduler for the sm_90a FP8 GEMM.
//
// Every CTA of the persistent grid walks linear tile ids blockIdx.x, blockIdx.x + gridDim.x, ...
// A linear id maps to (m_block, n_block) through grouped rasterization: tiles are ordered in bands of
// `band` consecutive m-blocks, inside a band the m-block varies fastest (band > 0), or in bands of
// -band consecutive n-blocks with the n-block varying fastest (band < 0). The ~132 tiles in flight at
// any time then touch about |band| blocks of one operand and 132 / |band| blocks of the other, which
// keeps both operand panels L2-resident while they are re-read, and sets how many bytes each wave
// pulls from HBM (rows of A + rows of B per wave).
//
// Grouped (MoE) layouts live here only (GroupedScheduler below): the kernel asks the scheduler for
// the next tile and where its rows start and end, and never reads the expert layout itself.
#pragma once
#include <cstdint>

#include "common.cuh"

namespace torch_fp8gemm::sm90 {

struct TileCoord {
  int m_block;
  int n_block;
  bool valid;  // false: a phantom tile of a 2-CTA cluster whose peer has a real tile (see below)
  int k_split = 0;  // split-K: which run of K blocks this work unit covers (0 without split-K)
};

// kClusterM x kClusterN CTAs (at most 2 in all) form a cluster that shares one operand through TMA
// multicast: kClusterN = 2 pairs two n-blocks of one m-block (A shared), kClusterM = 2 pairs two
// m-blocks of one n-block (B shared). The scheduler walks cluster tiles (kClusterM x kClusterN
// blocks); the CTA of cluster rank r takes block r of it. Where the grid of blocks is odd along the
// paired dimension, the last cluster tile has one block past the edge: that CTA gets a phantom tile
// (valid = false) and still runs the whole pipeline (its loads are zero-filled out of bounds, its
// compute and stores are skipped), so both CTAs always iterate in lockstep.
template <int kBlockM, int kBlockN, int kClusterM = 1, int kClusterN = 1>
struct DenseScheduler {
  using Tile = TileCoord;
  static_assert(kClusterM * kClusterN <= 2, "clusters of at most 2 CTAs");
  static constexpr int kClusterSize = kClusterM * kClusterN;
  int num_m_blocks;
  int num_n_blocks;
  int num_cm;  // cluster tiles along m
  int num_cn;  // cluster tiles along n
  int num_cluster_tiles;
  int num_work;  // num_cluster_tiles * num_splits
  int next_tile;
  int stride;
  int rank;
  int band;  // cluster tiles per band: > 0 along m (m fastest), < 0 along n (n fastest)

  __device__ __forceinline__ DenseScheduler(int64_t m, int64_t n, int cluster_rank, int num_splits = 1,
                                            int raster_band = 16) {
    num_m_blocks = static_cast<int>(ceil_div<int64_t>(m, kBlockM));
    num_n_blocks = static_cast<int>(ceil_div<int64_t>(n, kBlockN));
    num_cm = ceil_div(num_m_blocks, kClusterM);
    num_cn = ceil_div(num_n_blocks, kClusterN);
    num_cluster_tiles = num_cm * num_cn;
    num_work = num_cluster_tiles * num_splits;
    next_tile = blockIdx.x / kClusterSize;
    stride = gridDim.x / kClusterSize;
    rank = cluster_rank;
    band = raster_band != 0 ? raster_band : 16;
  }

  // Returns false once this CTA (and its cluster peer) has no tiles left.
  __device__ __forceinline__ bool next(TileCoord& tile) {
    if (next_tile >= num_work) return false;
    tile.k_split = next_tile / num_cluster_tiles;
    const int id = next_tile - tile.k_split * num_cluster_tiles;
    int cm, cn;
    if (band > 0) {
      const int band_size = band * num_cn;  // cluster tiles per full band
      const int b = id / band_size;
      const int in_band = id - b * band_size;
      const int first_m = b * band;
      const int band_m = min(band, num_cm - first_m);  // the last band may be narrower
      cm = first_m + in_band % band_m;
      cn = in_band / band_m;
    } else {
      const int width = -band;
      const int band_size = width * num_cm;
      const int b = id / band_size;
      const int in_band = id - b * band_size;
      const int first_n = b * width;
      const int band_n = min(width, num_cn - first_n);
      cn = first_n + in_band % band_n;
      cm = in_band / band_n;
    }
    tile.m_block = cm * kClusterM + (kClusterM == 2 ? rank : 0);
    tile.n_block = cn * kClusterN + (kClusterN == 2 ? rank : 0);
    tile.valid = tile.m_block < num_m_blocks && tile.n_block < num_n_blocks;
    next_tile += stride;
    return true;
  }
};

// A tile of one expert: rows [row0 + m_block * BM, min(row0 + (m_block + 1) * BM, row_end)) of A and
// out, B rows [group * n + n_block * BN, ...). Rows of the box at or past row_end belong to the
// next expert (or lie out of bounds): they are loaded and multiplied but never stored.
struct GroupedTileCoord : TileCoord {
  int64_t row0;     // first row of the expert in A / out
  int64_t row_end;  // one past the expert's last row
  int group;
};

// Persistent scheduler over (expert, m-block, n-block) for the MoE layouts. Tiles are numbered
// expert by expert (each expert's tiles rasterized in bands like DenseScheduler's, so its weight
// panel stays hot in L2 while its rows stream through), experts without rows have no tiles, and
// no padding of the group sizes is needed: an expert's first tile starts at its first row.
// Expert bounds are read on the device (no host sync: capturable in CUDA graphs). Each CTA walks
// its increasing tile ids with a cursor that only moves forward through the experts.
template <int kBlockM, int kBlockN, GemmKind kKind, int kBandM = 16>
struct GroupedScheduler {
  static_assert(kKind == GemmKind::kGroupedContiguous || kKind == GemmKind::kGroupedMasked, "grouped kinds only");
  using Tile = GroupedTileCoord;
  const int32_t* group_rows;
  int num_groups;
  int64_t total_rows;
  int64_t rows_per_group;
  int num_n_blocks;
  int group;                 // expert under the cursor (-1 before the first)
  int64_t group_start;       // its rows [group_start, group_end)
  int64_t group_end;
  int group_m_blocks;
  int64_t group_first_tile;  // linear id of its first tile
  int64_t next_tile;
  int stride;

  __device__ __forceinline__ GroupedScheduler(const int32_t* rows, int groups, int64_t m, int64_t n,
                                              int64_t max_m) {
    group_rows = rows;
    num_groups = groups;
    total_rows = m;
    rows_per_group = max_m;
    num_n_blocks = static_cast<int>(ceil_div<int64_t>(n, kBlockN));
    group = -1;
    group_start = group_end = 0;
    group_m_blocks = 0;
    group_first_tile = 0;
    next_tile = blockIdx.x;
    stride = gridDim.x;
  }

  // Bounds of expert g, clamped so that bad offsets/masks can never address rows outside A/out:
  // contiguous ends are clamped to [previous end, M], masked counts to [0, max_m].
  __device__ __forceinline__ void enter_group(int g) {
    const int64_t value = __ldg(group_rows + g);
    if constexpr (kKind == GemmKind::kGroupedContiguous) {
      group_start = group_end;
      group_end = min(max(value, group_start), total_rows);
    } else {
      group_start = static_cast<int64_t>(g) * rows_per_group;
      group_end = group_start + min(max(value, int64_t(0)), rows_per_group);
    }
    group_m_blocks = static_cast<int>(ceil_div<int64_t>(group_end - group_start, kBlockM));
  }

  __device__ __forceinline__ bool next(Tile& tile) {
    while (next_tile >= group_first_tile + static_cast<int64_t>(group_m_blocks) * num_n_blocks) {
      group_first_tile += static_cast<int64_t>(group_m_blocks) * num_n_blocks;
      if (group + 1 >= num_groups) {
        group = num_groups;
        group_m_blocks = 0;
        return false;
      }
      enter_group(++group);
    }
    const int local = static_cast<int>(next_tile - group_first_tile);
    const int band_size = kBandM * num_n_blocks;
    const int band = local / band_size;
    const int in_band = local - band * band_size;
    const int first_m = band * kBandM;
    const int band_m = min(kBandM, group_m_blocks - first_m);
    tile.m_block = first_m + in_band % band_m;
    tile.n_block = in_band / band_m;
    tile.valid = true;
    tile.row0 = group_start;
    tile.row_end = group_end;
    tile.group = group;
    next_tile += stride;
    return true;
  }
};

}  // namespace torch_fp8gemm::sm90
