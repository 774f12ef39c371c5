// Host side of the sm_90a FP8 GEMM: TMA descriptors, shared-memory attribute, persistent launch.
// No torch; throws std::runtime_error on any failure.
#pragma once
#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "sm90_fp8_gemm.cuh"
#include "sm90_fp8_gemm_api.h"

namespace torch_fp8gemm::sm90 {

[[noreturn]] inline void throw_error(const std::string& what) {
  throw std::runtime_error("torch_fp8gemm sm90_fp8_gemm: " + what);
}

inline void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    throw_error(std::string(what) + " failed: " + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")");
  }
}

// cuTensorMapEncodeTiled through the runtime's driver entry point, so libcuda is never linked.
inline PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encode_fn() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* ptr = nullptr;
    cudaDriverEntryPointQueryResult query = cudaDriverEntryPointSymbolNotFound;
    const cudaError_t err =
        cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &ptr, 12000, cudaEnableDefault, &query);
    if (err != cudaSuccess || query != cudaDriverEntryPointSuccess || ptr == nullptr) {
      throw_error(std::string("cannot get driver entry point cuTensorMapEncodeTiled: ") + cudaGetErrorName(err));
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(ptr);
  }();
  return fn;
}

// 2-D row-major tensor [rows, cols] (cols contiguous), row stride in bytes, box {box_cols, box_rows}.
inline CUtensorMap make_tensor_map_2d(const void* base, CUtensorMapDataType dtype, uint64_t cols, uint64_t rows,
                                      uint64_t row_stride_bytes, uint32_t box_cols, uint32_t box_rows,
                                      CUtensorMapSwizzle swizzle, const char* name) {
  CUtensorMap map;
  const cuuint64_t dims[2] = {cols, rows};
  const cuuint64_t strides[1] = {row_stride_bytes};
  const cuuint32_t box[2] = {box_cols, box_rows};
  const cuuint32_t elem_strides[2] = {1, 1};
  const CUresult res = tensor_map_encode_fn()(&map, dtype, 2, const_cast<void*>(base), dims, strides, box,
                                              elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle,
                                              CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (res != CUDA_SUCCESS) {
    throw_error(std::string("cuTensorMapEncodeTiled(") + name + ") failed with CUresult " + std::to_string(res) +
                " (dims " + std::to_string(cols) + " x " + std::to_string(rows) + ", row stride " +
                std::to_string(row_stride_bytes) + " B)");
  }
  return map;
}

template <int kBlockM, int kBlockN, int kClusterM, int kClusterN, GemmKind kKind, bool kStagedOut = false>
struct KernelConfig {
  static constexpr int kSfaSlack = kSfaSlackOf<kKind>;
  static constexpr int kStageScaleFloats = kStageScaleFloatsOf<kKind, kBlockM, kBlockN>;
  static constexpr int kStagingBytes = kStagedOut ? kStagingBytesOf<kKind, kBlockM, kBlockN> : 0;
  static constexpr int kStages = max_stages<kBlockM, kBlockN, kStageScaleFloats, kStagingBytes>();
  static constexpr int kThreads = num_threads<kBlockM, kBlockN, kStages>();
  static constexpr int kClusterSize = kClusterM * kClusterN;
  static constexpr size_t kSmemBytes =
      sizeof(SharedStorage<kBlockM, kBlockN, kStages, kStageScaleFloats, kStagingBytes>);
  static_assert(kStages >= 3, "fewer than 3 stages cannot hide TMA latency");
  static_assert(kSmemBytes <= kMaxSmemBytes, "shared storage exceeds the 227 KB opt-in limit");
};

// Launch configuration of `grid_ctas` CTAs in clusters of `cluster_size` along x (no cluster
// attribute when 1). cfg.attrs points into this object, so it is neither copied nor moved.
struct ClusterLaunch {
  cudaLaunchConfig_t cfg = {};
  cudaLaunchAttribute attr[1];

  ClusterLaunch(unsigned grid_ctas, int threads, size_t smem_bytes, int cluster_size, cudaStream_t stream) {
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = cluster_size;
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    cfg.gridDim = dim3(grid_ctas, 1, 1);
    cfg.blockDim = dim3(threads, 1, 1);
    cfg.dynamicSmemBytes = smem_bytes;
    cfg.stream = stream;
    cfg.attrs = attr;
    cfg.numAttrs = cluster_size > 1 ? 1 : 0;
  }
  ClusterLaunch(const ClusterLaunch&) = delete;
  ClusterLaunch& operator=(const ClusterLaunch&) = delete;
};

// Split-K: runs of ceil(num_k_blocks / requested) K blocks, as many as that takes (never an empty run).
inline int k_blocks_per_split(int num_k_blocks, int splits) { return ceil_div(num_k_blocks, std::max(1, splits)); }
inline int effective_splits(int num_k_blocks, int requested) {
  if (requested <= 1 || num_k_blocks <= 1) return 1;
  return ceil_div(num_k_blocks, k_blocks_per_split(num_k_blocks, requested));
}

inline int64_t num_tiles(int64_t m, int64_t n, int block_m, int block_n) {
  return ceil_div<int64_t>(m, block_m) * ceil_div<int64_t>(n, block_n);
}

// Launches the config on p.stream. Arguments must already be validated. `grouped` describes the
// experts for the grouped kinds (then p.b is [G * n, k] and p.b_scale [G, ceil(n/128), ceil(k/128)]).
template <int kBlockM, int kBlockN, int kClusterM, int kClusterN, GemmKind kKind, bool kStagedOut = false>
void launch_kernel(const DenseGemmParams& p, const GroupedGemmParams* grouped) {
  using Cfg = KernelConfig<kBlockM, kBlockN, kClusterM, kClusterN, kKind, kStagedOut>;
  auto kernel = sm90_fp8_gemm_kernel<kBlockM, kBlockN, Cfg::kStages, kClusterM, kClusterN, kKind, kStagedOut>;
  const int64_t b_rows = grouped != nullptr ? grouped->num_groups * p.n : p.n;

  // With multicast each CTA of the pair loads its slice of the shared operand's box (kMulticastSlices).
  const int a_box_rows = kClusterN == 2 ? kBlockM / kMulticastSlices : kBlockM;
  const int b_box_rows = kClusterM == 2 ? kBlockN / kMulticastSlices : kBlockN;
  const CUtensorMap tmap_a = make_tensor_map_2d(p.a, CU_TENSOR_MAP_DATA_TYPE_UINT8, p.k, p.m, p.lda, kBlockK,
                                                a_box_rows, CU_TENSOR_MAP_SWIZZLE_128B, "a");
  const CUtensorMap tmap_b = make_tensor_map_2d(p.b, CU_TENSOR_MAP_DATA_TYPE_UINT8, p.k, b_rows, p.ldb, kBlockK,
                                                b_box_rows, CU_TENSOR_MAP_SWIZZLE_128B, "b");
  const int num_k_blocks = static_cast<int>(ceil_div<int64_t>(p.k, kBlockK));
  const CUtensorMap tmap_sfa =
      make_tensor_map_2d(p.a_scale, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, p.m, num_k_blocks, p.a_scale_ld * 4,
                         kBlockM + Cfg::kSfaSlack, 1,
                         CU_TENSOR_MAP_SWIZZLE_NONE, "a_scale");
  // Row-scaled B: B scales [kb, n] fp32, row stride b_scale_ld; the other kinds never read it.
  const CUtensorMap tmap_sfb =
      kKind == GemmKind::kDenseRowScaledB
          ? make_tensor_map_2d(p.b_scale, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, p.n, num_k_blocks, p.b_scale_ld * 4,
                               kBlockN, 1, CU_TENSOR_MAP_SWIZZLE_NONE, "b_scale")
          : tmap_sfa;
  // Staged (TMA-store) epilogue: bf16 out [m, n], row stride ldo, 64 x 64 boxes, 128B swizzle.
  const CUtensorMap tmap_out =
      Cfg::kStagingBytes > 0 && p.out_kind == OutKind::kBF16
          ? make_tensor_map_2d(p.out, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, p.n, p.m, p.ldo * 2, 64, 64,
                               CU_TENSOR_MAP_SWIZZLE_128B, "out")
          : tmap_sfa;

  KernelArgs args;
  args.b_scale = p.b_scale;
  args.bias = p.bias;
  args.out = p.out;
  args.m = p.m;
  args.n = p.n;
  args.k = p.k;
  args.ldo = p.ldo;
  args.num_k_blocks = num_k_blocks;
  args.out_fp32 = p.out_kind == OutKind::kFP32 ? 1 : 0;
  args.group_rows = grouped != nullptr ? grouped->group_rows : nullptr;
  args.num_groups = grouped != nullptr ? grouped->num_groups : 0;
  args.rows_per_group = grouped != nullptr ? grouped->rows_per_group : 0;
  args.b_scale_group_stride = ceil_div<int64_t>(p.n, 128) * num_k_blocks;
  args.k_blocks_per_split = num_k_blocks;
  args.num_splits = 1;
  args.partial = nullptr;
  args.k_block_bounds = nullptr;
  args.raster_band = p.raster_band != 0 ? p.raster_band : 16;
  if constexpr (kKind == GemmKind::kDenseRowScaledB) {
    if (p.k_block_bounds != nullptr) {  // K-grouped: the scheduler's "splits" are the groups
      args.k_block_bounds = p.k_block_bounds;
      args.num_splits = p.num_k_groups;
    }
  }
  if constexpr (kKind == GemmKind::kDense) {
    args.num_splits = effective_splits(num_k_blocks, p.forced_splits);
    args.k_blocks_per_split = k_blocks_per_split(num_k_blocks, args.num_splits);
    if (args.num_splits > 1) {
      if (p.workspace == nullptr) throw_error("split-K needs a workspace (sm90_fp8_gemm_workspace_floats)");
      args.partial = p.workspace;
    }
  }

  int device = 0;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  // Per-device one-time setup: smem attribute and, for clusters, how many can be co-resident
  // (a persistent grid larger than that would run a second, serialized wave).
  constexpr int kMaxDevices = 64;
  static int max_clusters[kMaxDevices] = {};  // 0: not yet queried
  if (device >= kMaxDevices) throw_error("device ordinal " + std::to_string(device) + " >= 64");
  if (max_clusters[device] == 0) {
    check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(Cfg::kSmemBytes)),
               "cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
    int count = 1 << 30;
    if constexpr (Cfg::kClusterSize > 1) {
      const ClusterLaunch query(Cfg::kClusterSize * 66, Cfg::kThreads, Cfg::kSmemBytes, Cfg::kClusterSize, nullptr);
      check_cuda(cudaOccupancyMaxActiveClusters(&count, kernel, &query.cfg), "cudaOccupancyMaxActiveClusters");
      if (count < 1) throw_error("no cluster of this config fits on the device");
    }
    max_clusters[device] = count;
  }

  // Cluster tiles. Grouped: the expert sizes live on the device, so take the bound reached when
  // every expert's rows start a fresh m-block.
  const int64_t m_blocks = ceil_div<int64_t>(p.m, kBlockM) + (grouped != nullptr ? grouped->num_groups : 0);
  const int64_t tiles = ceil_div<int64_t>(m_blocks, kClusterM) *
                        ceil_div<int64_t>(ceil_div<int64_t>(p.n, kBlockN), kClusterN) * args.num_splits;
  int64_t clusters = std::min<int64_t>(tiles, p.num_sms / Cfg::kClusterSize);
  clusters = std::min<int64_t>(clusters, max_clusters[device]);
  clusters = std::max<int64_t>(clusters, 1);
  // Dense with K >= 2048: the fewest CTAs that keep the same number of tile waves (e.g. 512 tiles:
  // 128 CTAs x 4 waves, not 132 with 16 idle in the last wave). The GPU runs at its power limit on
  // these compute-bound shapes, so unused SMs let the busy ones clock higher (4096x4096x7168: +7%,
  // RESULTS.md). Short K is bound by memory traffic and keeps every SM (4096x32768x512: -8%).
  // TORCH_FP8GEMM_FULL_GRID=1 launches min(tiles, SMs) CTAs instead (for A/B measurements).
  static const bool full_grid = std::getenv("TORCH_FP8GEMM_FULL_GRID") != nullptr;
  if (grouped == nullptr && !full_grid && num_k_blocks >= 16) {
    const int64_t waves = ceil_div<int64_t>(tiles, clusters);
    clusters = ceil_div<int64_t>(tiles, waves);
  }

  static const bool debug = std::getenv("TORCH_FP8GEMM_DEBUG") != nullptr;
  if (debug) {
    std::fprintf(stderr, "torch_fp8gemm: bm%d bn%d cluster %dx%d stages %d smem %zu grid %lld (max clusters %d)\n",
                 kBlockM, kBlockN, kClusterM, kClusterN, Cfg::kStages, Cfg::kSmemBytes,
                 static_cast<long long>(clusters * Cfg::kClusterSize), max_clusters[device]);
  }

  const ClusterLaunch launch(static_cast<unsigned>(clusters * Cfg::kClusterSize), Cfg::kThreads, Cfg::kSmemBytes,
                             Cfg::kClusterSize, p.stream);
  check_cuda(cudaLaunchKernelEx(&launch.cfg, kernel, tmap_a, tmap_b, tmap_sfa, args, tmap_sfb, tmap_out),
             "cudaLaunchKernelEx");
}

// Shared by the grouped and row-scaled pickers: 128 x 256 tiles (two column waves) over 128 x 128
// unless they leave a thin last wave; a 128 x 256 tile takes ~1.87x a 128 x 128 one (dense runs).
inline bool prefer_128x256_tiles(int64_t m_blocks, int64_t n, int num_sms) {
  const int64_t sms = std::max(1, num_sms);
  const double waves_128 = static_cast<double>(ceil_div<int64_t>(m_blocks * ceil_div<int64_t>(n, 128), sms));
  const double waves_256 = static_cast<double>(ceil_div<int64_t>(m_blocks * ceil_div<int64_t>(n, 256), sms));
  return waves_256 * 1.87 < waves_128;
}

// kStagedOut: bf16 results leave through a shared-memory staging tile and TMA stores that overlap
// the next tile's main loop (one pipeline stage fewer; pays for short K, see the cost model).
template <int kBlockM, int kBlockN, int kClusterM, int kClusterN, bool kStagedOut = false>
void launch_dense(const DenseGemmParams& p) {
  launch_kernel<kBlockM, kBlockN, kClusterM, kClusterN, GemmKind::kDense, kStagedOut>(p, nullptr);
}

template <int kBlockM, int kBlockN>
void launch_dense_row_scaled(const DenseGemmParams& p) {
  launch_kernel<kBlockM, kBlockN, 1, 1, GemmKind::kDenseRowScaledB>(p, nullptr);
}

template <int kBlockM, int kBlockN, GemmKind kKind, bool kStagedOut = false>
void launch_grouped(const GroupedGemmParams& p) {
  launch_kernel<kBlockM, kBlockN, 1, 1, kKind, kStagedOut>(p.gemm, &p);
}

}  // namespace torch_fp8gemm::sm90
