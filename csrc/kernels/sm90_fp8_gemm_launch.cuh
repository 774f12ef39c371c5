// Host side of the sm_90a FP8 GEMM: TMA descriptors, shared-memory attribute, persistent launch.
// No torch; throws std::runtime_error on any failure.
#pragma once
#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
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

// Tensor map of a rank-1 or rank-2 row-major tensor: dims {cols, rows}, one row stride in bytes.
inline CUtensorMap make_tensor_map(int rank, const void* base, CUtensorMapDataType dtype, const cuuint64_t* dims,
                                   uint64_t row_stride_bytes, const cuuint32_t* box, CUtensorMapSwizzle swizzle,
                                   const char* name) {
  CUtensorMap map;
  const cuuint64_t strides[1] = {row_stride_bytes};
  const cuuint32_t elem_strides[2] = {1, 1};
  const CUresult res = tensor_map_encode_fn()(&map, dtype, rank, const_cast<void*>(base), dims, strides, box,
                                              elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle,
                                              CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (res != CUDA_SUCCESS) {
    throw_error(std::string("cuTensorMapEncodeTiled(") + name + ") failed with CUresult " + std::to_string(res) +
                " (dims " + std::to_string(dims[0]) + (rank == 2 ? " x " + std::to_string(dims[1]) : std::string()) +
                ", row stride " + std::to_string(row_stride_bytes) + " B)");
  }
  return map;
}

// 2-D row-major tensor [rows, cols] (cols contiguous), row stride in bytes, box {box_cols, box_rows}.
inline CUtensorMap make_tensor_map_2d(const void* base, CUtensorMapDataType dtype, uint64_t cols, uint64_t rows,
                                      uint64_t row_stride_bytes, uint32_t box_cols, uint32_t box_rows,
                                      CUtensorMapSwizzle swizzle, const char* name) {
  const cuuint64_t dims[2] = {cols, rows};
  const cuuint32_t box[2] = {box_cols, box_rows};
  return make_tensor_map(2, base, dtype, dims, row_stride_bytes, box, swizzle, name);
}

// 1-D tensor of `elems` elements, boxes of box_elems.
inline CUtensorMap make_tensor_map_1d(const void* base, CUtensorMapDataType dtype, uint64_t elems, uint32_t box_elems,
                                      const char* name) {
  const cuuint64_t dims[1] = {elems};
  const cuuint32_t box[1] = {box_elems};
  return make_tensor_map(1, base, dtype, dims, 16, box, CU_TENSOR_MAP_SWIZZLE_NONE, name);
}

// K-major A scales sit in a ring of `slots` boxes, one loaded with K blocks 0, 4, 8, ... of each
// tile. A slot is rewritten `slots` boxes later, which must lie >= `stages` K blocks further on (the
// stage it was read with is then released): a window of `slots` gaps between boxes holds at most
// ceil(slots / boxes per tile) tile crossings, each a gap of the tile's last box (1-4 K blocks).
inline bool k_major_ring_holds(int slots, int stages, int64_t num_k_blocks) {
  if (slots <= 0 || num_k_blocks <= 0) return false;
  const int64_t boxes = ceil_div<int64_t>(num_k_blocks, 4), last_gap = num_k_blocks - 4 * (boxes - 1);
  const int64_t crossings = std::min<int64_t>(slots, ceil_div<int64_t>(slots, boxes));
  return 4 * (slots - crossings) + last_gap * crossings >= stages;
}

// What the heuristic decides besides the configuration: the persistent grid and the raster band.
struct LaunchShape {
  int grid_ctas;
  int raster_band;
};

// Launches configuration <BM, BN, CM> of kind kKind on p.stream; arguments already validated.
// `grouped` describes the experts for the grouped kinds (p.b is then [G * n, k], p.b_scale
// [G, ceil(n/128), ceil(k/128)]).
template <int kBlockM, int kBlockN, int kClusterM, GemmKind kKind>
void launch_kernel(const DenseGemmParams& p, const GroupedGemmParams* grouped, const LaunchShape& shape) {
  using S = GemmShape<kBlockM, kBlockN, kKind>;
  constexpr size_t kSmemBytes = sizeof(SharedStorage<kBlockM, kBlockN, kKind>);
  static_assert(kSmemBytes <= kMaxSmemBytes, "shared storage exceeds the 227 KB opt-in limit");
  auto kernel = sm90_fp8_gemm_kernel<kBlockM, kBlockN, kClusterM, kKind>;
  const int64_t b_rows = grouped != nullptr ? grouped->num_groups * p.n : p.n;
  const int num_k_blocks = static_cast<int>(ceil_div<int64_t>(p.k, kBlockK));
  const auto u8 = CU_TENSOR_MAP_DATA_TYPE_UINT8, f32 = CU_TENSOR_MAP_DATA_TYPE_FLOAT32;
  const CUtensorMap tmap_a = make_tensor_map_2d(p.a, u8, p.k, p.m, p.lda, kBlockK, kBlockM, CU_TENSOR_MAP_SWIZZLE_128B, "a");
  // With multicast each CTA of the pair loads half of B's box.
  const CUtensorMap tmap_b = make_tensor_map_2d(p.b, u8, p.k, b_rows, p.ldb, kBlockK, kBlockN / kClusterM,
                                                CU_TENSOR_MAP_SWIZZLE_128B, "b");
  if (p.a_scale_k_major && !k_major_ring_holds(S::kBoxSlots, S::kStages, num_k_blocks)) {
    throw_error("this configuration cannot load these K-major A scales (M-major only, or too few K blocks per box)");
  }
  if (S::kOutTypeFixed && p.a_scale_k_major && p.out_kind == OutKind::kFP32) {
    throw_error("fp32 output takes M-major A scales only");
  }
  // Packed K-major rows (a_scale_ld == 4): the tensor is one run of 4 * (m - 1) + kb floats.
  const bool packed = p.a_scale_k_major && p.a_scale_ld == 4;
  const CUtensorMap tmap_sfa =
      packed              ? make_tensor_map_1d(p.a_scale, f32, 4 * (p.m - 1) + num_k_blocks, std::min(4 * kBlockM, 256), "a_scale")
      : p.a_scale_k_major ? make_tensor_map_2d(p.a_scale, f32, num_k_blocks, p.m, p.a_scale_ld * 4, 4, kBlockM,
                                               CU_TENSOR_MAP_SWIZZLE_NONE, "a_scale")
                          : make_tensor_map_2d(p.a_scale, f32, p.m, num_k_blocks, p.a_scale_ld * 4, S::kSfaBox,
                                               1, CU_TENSOR_MAP_SWIZZLE_NONE, "a_scale");
  const CUtensorMap tmap_sfb = S::kDense1x128 ? make_tensor_map_2d(p.b_scale, f32, p.n, num_k_blocks, p.b_scale_ld * 4,
                                                                   kBlockN, 1, CU_TENSOR_MAP_SWIZZLE_NONE, "b_scale")
                                              : tmap_sfa;
  const bool staged = S::kStaged && p.out_kind == OutKind::kBF16;
  const CUtensorMap tmap_out = staged ? make_tensor_map_2d(p.out, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, p.n, p.m, p.ldo * 2,
                                                           S::kStagingSpan / 2, S::kStoreRows,
                                                           S::kStagingSpan == 128  ? CU_TENSOR_MAP_SWIZZLE_128B
                                                           : S::kStagingSpan == 64 ? CU_TENSOR_MAP_SWIZZLE_64B
                                                                                   : CU_TENSOR_MAP_SWIZZLE_32B,
                                                           "out")
                                      : tmap_sfa;

  KernelArgs args{};
  args.b_scale = p.b_scale;
  args.out = OutView{p.out, p.bias, p.n, p.ldo};
  args.m = p.m;
  args.n = p.n;
  args.num_k_blocks = num_k_blocks;
  args.out_fp32 = p.out_kind == OutKind::kFP32 ? 1 : 0;
  args.a_scale_k_major = p.a_scale_k_major ? 1 : 0;
  args.a_scale_packed = packed ? 1 : 0;
  if (grouped != nullptr) {
    args.group_ends = grouped->group_ends;  // the union's one pointer, either layout
    args.num_groups = grouped->num_groups;
    args.rows_per_group = grouped->rows_per_group;
    args.b_scale_group_stride = ceil_div<int64_t>(p.n, 128) * num_k_blocks;
  }
  args.k_block_bounds = p.k_block_bounds;
  args.num_k_groups = p.k_block_bounds != nullptr ? p.num_k_groups : 1;
  if (grouped == nullptr) {
    args.raster = DenseRaster::make(kBlockM, kBlockN, p.m, p.n, args.num_k_groups, shape.raster_band > 0 ? shape.raster_band : 16);
  }

  int device = 0;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  // Per device, once: the smem attribute and, for clusters, how many fit at once (SMs come in GPCs;
  // a persistent grid larger than that would run a second, serialized wave of clusters).
  constexpr int kMaxDevices = 64;
  static int max_clusters[kMaxDevices] = {};  // 0: not yet queried
  if (device >= kMaxDevices) throw_error("device ordinal " + std::to_string(device) + " >= 64");
  if (max_clusters[device] == 0) {
    check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kSmemBytes)),
               "cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
    int count = 1 << 30;
    if constexpr (kClusterM > 1) {
      cudaLaunchAttribute query_attr[1];
      query_attr[0].id = cudaLaunchAttributeClusterDimension;
      query_attr[0].val.clusterDim = {static_cast<unsigned>(kClusterM), 1, 1};
      cudaLaunchConfig_t query = {};
      query.gridDim = dim3(kClusterM * 66, 1, 1);
      query.blockDim = dim3(S::kThreads, 1, 1);
      query.dynamicSmemBytes = kSmemBytes;
      query.attrs = query_attr;
      query.numAttrs = 1;
      check_cuda(cudaOccupancyMaxActiveClusters(&count, kernel, &query), "cudaOccupancyMaxActiveClusters");
      if (count < 1) throw_error("no cluster of this configuration fits on the device");
    }
    max_clusters[device] = count;
  }
  const int grid_ctas = std::min(shape.grid_ctas, max_clusters[device] * kClusterM);
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = kClusterM;
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(static_cast<unsigned>(grid_ctas), 1, 1);
  cfg.blockDim = dim3(S::kThreads, 1, 1);
  cfg.dynamicSmemBytes = kSmemBytes;
  cfg.stream = p.stream;
  cfg.attrs = attr;
  cfg.numAttrs = kClusterM > 1 ? 1 : 0;
  check_cuda(cudaLaunchKernelEx(&cfg, kernel, tmap_a, tmap_b, tmap_sfa, tmap_sfb, tmap_out, args), "cudaLaunchKernelEx");
}

// The launch functions the heuristic's tables point to, one per config and kind.
template <int kBlockM, int kBlockN>
void launch_dense(const DenseGemmParams& p, const LaunchShape& shape) {
  launch_kernel<kBlockM, kBlockN, 1, GemmKind::kDense>(p, nullptr, shape);
}
template <int kBlockM, int kBlockN>
void launch_dense_1x128(const DenseGemmParams& p, const LaunchShape& shape) {
  launch_kernel<kBlockM, kBlockN, 1, GemmKind::kDense1x128>(p, nullptr, shape);
}
template <int kBlockM, int kBlockN, int kClusterM>
void launch_contiguous(const GroupedGemmParams& p, const LaunchShape& shape) {
  launch_kernel<kBlockM, kBlockN, kClusterM, GemmKind::kGroupedContiguous>(p.gemm, &p, shape);
}
template <int kBlockM, int kBlockN, int kClusterM>
void launch_masked(const GroupedGemmParams& p, const LaunchShape& shape) {
  launch_kernel<kBlockM, kBlockN, kClusterM, GemmKind::kGroupedMasked>(p.gemm, &p, shape);
}

}  // namespace torch_fp8gemm::sm90

// Explicit instantiation definitions (the sm90_fp8_gemm_inst_*.cu files) and declarations (the
// heuristic's tables) of a config list's launch functions.
#define TORCH_FP8GEMM_INSTANTIATE_DENSE(BM, BN) \
  template void launch_dense<BM, BN>(const DenseGemmParams&, const LaunchShape&);
#define TORCH_FP8GEMM_INSTANTIATE_GROUPED(BM, BN, CM)                                      \
  template void launch_contiguous<BM, BN, CM>(const GroupedGemmParams&, const LaunchShape&); \
  template void launch_masked<BM, BN, CM>(const GroupedGemmParams&, const LaunchShape&);
#define TORCH_FP8GEMM_INSTANTIATE_DENSE_1X128(BM, BN) \
  template void launch_dense_1x128<BM, BN>(const DenseGemmParams&, const LaunchShape&);
#define TORCH_FP8GEMM_DECLARE_DENSE(BM, BN) extern TORCH_FP8GEMM_INSTANTIATE_DENSE(BM, BN)
#define TORCH_FP8GEMM_DECLARE_GROUPED(BM, BN, CM)                                                 \
  extern template void launch_contiguous<BM, BN, CM>(const GroupedGemmParams&, const LaunchShape&); \
  extern template void launch_masked<BM, BN, CM>(const GroupedGemmParams&, const LaunchShape&);
#define TORCH_FP8GEMM_DECLARE_DENSE_1X128(BM, BN) extern TORCH_FP8GEMM_INSTANTIATE_DENSE_1X128(BM, BN)
