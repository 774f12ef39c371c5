// Persistent tile schedulers of the sm_90a FP8 GEMM. Every CTA walks linear tile ids blockIdx.x,
// blockIdx.x + gridDim.x, ... and asks its scheduler where each tile lies; the kernel never reads
// the expert layout itself.
#pragma once
#include <cstdint>

#include "common.cuh"

namespace torch_fp8gemm::sm90 {

// One work unit: block (m_block, n_block) of batch `group` (the expert of the grouped kinds, the K
// group of the K-grouped weight gradient). Rows [row0 + m_block * BM, row_end) of A / out belong
// to it; rows of the box at or past row_end are loaded and multiplied but never stored.
struct Tile {
  int m_block;
  int n_block;
  int group;
  bool valid;  // false: a phantom tile of a cluster CTA whose peer has a real one
  int64_t row0;
  int64_t row_end;
};

// Dense and K-grouped GEMMs: num_batches copies of an [m, n] grid of blocks, one after the other.
// Rasterization: tiles come in bands of `band` m-blocks (m fastest inside a band), so the ~132 tiles
// in flight touch `band` blocks of A and 132 / band of B: both panels stay L2-resident. The launcher
// builds the grid's divisors once (DenseRaster::make): the tile walk divides by them at every tile.
struct DenseRaster {
  int num_m_blocks, num_n_blocks, num_tiles, num_full_bands;
  FastDiv per_batch;  // tiles per batch
  FastDiv per_band;   // tiles per full band
  FastDiv band;       // its width in m-blocks
  FastDiv last_band;  // the width of the last band (narrower where the band does not divide the grid)

  static DenseRaster make(int block_m, int block_n, int64_t m, int64_t n, int num_batches, int band) {
    DenseRaster r{};
    r.num_m_blocks = static_cast<int>(ceil_div<int64_t>(m, block_m));
    r.num_n_blocks = static_cast<int>(ceil_div<int64_t>(n, block_n));
    band = band < 1 ? 1 : band > r.num_m_blocks ? r.num_m_blocks : band;
    r.num_tiles = r.num_m_blocks * r.num_n_blocks * num_batches;
    r.num_full_bands = r.num_m_blocks / band;
    r.per_batch = FastDiv::make(r.num_m_blocks * r.num_n_blocks);
    r.per_band = FastDiv::make(band * r.num_n_blocks);
    r.band = FastDiv::make(band);
    r.last_band = FastDiv::make(r.num_m_blocks % band == 0 ? band : r.num_m_blocks % band);
    return r;
  }
};

struct DenseScheduler {
  const DenseRaster& r;
  int64_t m;
  int next_id, stride;

  __device__ __forceinline__ DenseScheduler(const DenseRaster& raster, int64_t rows)
      : r(raster), m(rows), next_id(blockIdx.x), stride(gridDim.x) {}

  __device__ __forceinline__ bool next(Tile& t) {
    if (next_id >= r.num_tiles) return false;
    t.group = r.per_batch.div(next_id);
    const int id = next_id - t.group * r.per_batch.d;
    const int b = r.per_band.div(id), in_band = id - b * r.per_band.d;
    const FastDiv& width = b < r.num_full_bands ? r.band : r.last_band;
    t.n_block = width.div(in_band);
    t.m_block = b * r.band.d + in_band - t.n_block * width.d;
    t.valid = true;
    t.row0 = 0;
    t.row_end = m;
    next_id += stride;
    return true;
  }
};

// MoE layouts: tiles numbered expert by expert (each expert's tiles in bands of kBand cluster m-blocks,
// so its weight panel stays hot in L2 while its rows stream through); experts without rows have no tiles,
// and no padding of the group sizes is needed: an expert's first tile starts at its first row.
// Expert bounds are read on the device (no host sync: capturable in CUDA graphs); each CTA walks its
// increasing tile ids with a cursor that only moves forward through the experts.
//   contiguous: bounds = group_ends, group_ends[g] = cumulative end of expert g's rows;
//   masked:     bounds = group_sizes, group_sizes[g] = rows of expert g, whose block starts at g * max_m.
// kClusterM = 2: the CTAs of a cluster take m-blocks cm * 2 + rank of one (expert, n-block) and share
// the expert's B (a CTA past the expert's last m-block gets a phantom tile, valid = false, that still
// runs the pipeline, its loads zero-filled and its stores skipped: both CTAs stay in lockstep).
template <int kBlockM, int kBlockN, int kClusterM, bool kMasked>
struct GroupedScheduler {
  static_assert(kClusterM <= 2, "clusters of at most 2 CTAs");
  // Bands of 2048 rows where a cluster covers 256, as in the dense raster: the ~132 tiles in flight
  // then span about 2048 x 2048 of the output rather than 4096 x 1024, fewer bytes of A and B to fetch.
  static constexpr int kBand = kBlockM * kClusterM >= 256 ? 8 : 16;
  const int32_t* bounds;
  int num_groups, num_n_blocks, group, group_m_blocks, rank;
  int64_t total_rows, max_m, group_start, group_end, group_first_tile, next_id;

  __device__ __forceinline__ GroupedScheduler(const int32_t* group_bounds, int groups, int64_t m, int64_t n, int64_t rows_per_group,
                                              int cluster_rank) {
    bounds = group_bounds;
    num_groups = groups;
    num_n_blocks = static_cast<int>(ceil_div<int64_t>(n, kBlockN));
    rank = cluster_rank;
    group = -1;
    group_m_blocks = 0;
    total_rows = m;
    max_m = rows_per_group;
    group_start = group_end = group_first_tile = 0;
    next_id = blockIdx.x / kClusterM;
  }

  // Bounds of expert g, clamped so that bad offsets or masks never address rows outside A / out.
  __device__ __forceinline__ void enter_group(int g) {
    const int64_t value = __ldg(bounds + g);
    if constexpr (kMasked) {
      group_start = static_cast<int64_t>(g) * max_m;
      group_end = group_start + min(max(value, int64_t(0)), max_m);
    } else {
      group_start = group_end;
      group_end = min(max(value, group_start), total_rows);
    }
    group_m_blocks = static_cast<int>(ceil_div<int64_t>(group_end - group_start, kBlockM));
  }

  // Cluster tiles of the current expert along m.
  __device__ __forceinline__ int group_cm() const { return kClusterM == 1 ? group_m_blocks : (group_m_blocks + 1) / 2; }

  __device__ __forceinline__ bool next(Tile& t) {
    while (next_id >= group_first_tile + static_cast<int64_t>(group_cm()) * num_n_blocks) {
      group_first_tile += static_cast<int64_t>(group_cm()) * num_n_blocks;
      if (group + 1 >= num_groups) return false;
      enter_group(++group);
    }
    const int local = static_cast<int>(next_id - group_first_tile);
    const int b = local / (kBand * num_n_blocks), in_band = local - b * kBand * num_n_blocks;
    const int width = min(kBand, group_cm() - b * kBand);
    t.m_block = (b * kBand + in_band % width) * kClusterM + (kClusterM > 1 ? rank : 0);
    t.n_block = in_band / width;
    t.group = group;
    t.valid = kClusterM == 1 || t.m_block < group_m_blocks;
    t.row0 = group_start;
    t.row_end = group_end;
    // The stride, gridDim.x / kClusterM, read anew (volatile): hoisted, it would be live across the whole
    // tile loop, and the 128x192 pairs would spill it.
    uint32_t grid;
    asm volatile("mov.u32 %0, %%nctaid.x;" : "=r"(grid));
    next_id += grid / kClusterM;
    return true;
  }
};

}  // namespace torch_fp8gemm::sm90
