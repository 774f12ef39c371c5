// FP8 e4m3 quantization kernels (API and numerics: quantize_api.h). Device code and its launchers
// only; no torch.
//
// All three kernels are bound by memory bandwidth: per element they read 2 or 4 bytes and write 1,
// plus 4 bytes of scale per 128 (1x128) or 16384 (128x128) elements. What they share:
//   * 16-byte vector loads when the base pointer, the row stride and K allow it (checked on the host
//     at every launch; otherwise the same kernel runs with element loads and byte stores), all
//     issued before the first reduction, so that every thread has 64 to 256 bytes in flight (the
//     per-kernel comments give the numbers and the resulting occupancy);
//   * the raw input words stay in registers (16-bit inputs are converted to float only when
//     quantized), which halves the registers that hold the data for bf16/fp16 and keeps more
//     threads, hence more loads, resident per SM;
//   * group amax as the maximum of the bit patterns with the sign cleared, compared as unsigned
//     integers: for non-negative floats of any of the three formats that order is the numeric
//     order, and NaN patterns sort above +inf, so a NaN propagates like torch's amax (fmaxf would
//     drop it). 16-bit inputs take their maxima two at a time (vmax.u16x2);
//   * scale = max(amax, 1e-12f) / 448 and q = x / scale with __fdiv_rn (a correctly rounded
//     division whatever the compiler flags), then cvt.rn.satfinite.e4m3x2.f32. The reference's
//     clamp to +-448 is folded into the conversion: |x| <= amax gives |q| <= 448 * (1 + 2^-23), which
//     rounds to 448 anyway, q is never infinite (an infinite x makes the scale infinite), and
//     satfinite keeps NaN a NaN where a fminf/fmaxf clamp would turn it into +-448.
// Indices that can exceed 2^31 (element offsets, rows of huge tensors) are int64.
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "quantize_api.h"

namespace torch_fp8gemm {
namespace {

constexpr int kGroup = 128;  // 1x128 group length and 128x128 block side
constexpr float kFp8Max = 448.0f;
constexpr float kAmaxFloor = 1e-12f;  // float(1e-12), the reference's clamp_min bound
constexpr uint32_t kFullMask = 0xffffffffu;

// ---------------------------------------------------------------------------------------------
// Input element types: raw storage and its exact conversion to float.

template <QuantInputType kType>
struct Input;

template <>
struct Input<QuantInputType::kBF16> {
  using Raw = uint16_t;
  static __device__ __forceinline__ float to_float(uint32_t v) { return __uint_as_float(v << 16); }
};

template <>
struct Input<QuantInputType::kFP16> {
  using Raw = uint16_t;
  static __device__ __forceinline__ float to_float(uint32_t v) {
    return __half2float(__ushort_as_half(static_cast<unsigned short>(v)));
  }
};

template <>
struct Input<QuantInputType::kFP32> {
  using Raw = uint32_t;
  static __device__ __forceinline__ float to_float(uint32_t v) { return __uint_as_float(v); }
};

template <class In>
constexpr bool kIs16Bit = sizeof(typename In::Raw) == 2;

// Elements per 16-byte vector: 8 (bf16, fp16) or 4 (fp32).
template <class In>
constexpr int kVecElems = 16 / static_cast<int>(sizeof(typename In::Raw));

// One 16-byte vector of raw input elements, element 0 in the low bits of w[0].
struct Chunk {
  uint32_t w[4];
};

// Division by a divisor fixed for the launch (the tile counts that split blockIdx.x) as a
// multiply-high, an add and a shift instead of the ~20 instructions of an integer division: the
// round-up method of Granlund and Montgomery, exact for 0 <= n < 2^31 and 1 <= d < 2^31.
struct FastDiv {
  uint32_t divisor, magic, shift;
  __device__ __forceinline__ uint32_t div(uint32_t n) const { return (__umulhi(n, magic) + n) >> shift; }
};

// ---------------------------------------------------------------------------------------------
// Device helpers

// kVecElems<In> consecutive elements of a row starting at column `col`; zeros (the pattern of +0 in
// every format) past k or when the row does not exist (`live` false: row_ptr is then not
// dereferenced). kVector: one 16-byte load; the host guarantees 16-byte aligned rows and
// k % kVecElems == 0, so a vector is wholly in or out. x is read-only for the whole kernel, so the
// non-coherent path is safe.
template <class In, bool kVector>
__device__ __forceinline__ Chunk load_chunk(const typename In::Raw* row_ptr, int col, int k, bool live) {
  Chunk c = {{0u, 0u, 0u, 0u}};
  if constexpr (kVector) {
    if (live && col < k) {
      const uint4 bits = __ldg(reinterpret_cast<const uint4*>(row_ptr + col));
      c = {{bits.x, bits.y, bits.z, bits.w}};
    }
  } else {
#pragma unroll
    for (int i = 0; i < kVecElems<In>; ++i) {
      if (live && col + i < k) {
        const uint32_t raw = row_ptr[col + i];
        if constexpr (kIs16Bit<In>) {
          c.w[i / 2] |= raw << (16 * (i % 2));
        } else {
          c.w[i] = raw;
        }
      }
    }
  }
  return c;
}

// Element i of a chunk as float.
template <class In>
__device__ __forceinline__ float chunk_element(const Chunk& c, int i) {
  if constexpr (kIs16Bit<In>) {
    return In::to_float(i % 2 == 0 ? c.w[i / 2] & 0xffffu : c.w[i / 2] >> 16);
  } else {
    return __uint_as_float(c.w[i]);
  }
}

// Running max of |x| over chunks, as bit patterns with the sign cleared. 16-bit inputs keep two
// packed halves (elements 2j and 2j+1 of the chunks accumulate separately); fp32 keeps one word.
template <class In>
__device__ __forceinline__ uint32_t amax_accumulate(uint32_t acc, const Chunk& c) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    if constexpr (kIs16Bit<In>) {
      acc = __vmaxu2(acc, c.w[i] & 0x7fff7fffu);
    } else {
      acc = max(acc, c.w[i] & 0x7fffffffu);
    }
  }
  return acc;
}

// A 16-bit amax pattern (low 16 bits) as the float32 pattern of the same value; exact, monotonic,
// NaN stays NaN.
template <class In>
__device__ __forceinline__ uint32_t half_amax_bits(uint32_t h) {
  return __float_as_uint(In::to_float(h));
}

// The accumulator of amax_accumulate as the float32 pattern of the amax.
template <class In>
__device__ __forceinline__ uint32_t amax_bits(uint32_t acc) {
  if constexpr (kIs16Bit<In>) {
    return half_amax_bits<In>(max(acc & 0xffffu, acc >> 16));
  } else {
    return acc;
  }
}

// Scale of a group from the float32 bit pattern of its amax (the unsigned max with the floor's
// pattern is clamp_min(amax, 1e-12f) with NaN kept).
__device__ __forceinline__ float scale_from_amax(uint32_t amax) {
  const uint32_t floored = max(amax, __float_as_uint(kAmaxFloor));
  return __fdiv_rn(__uint_as_float(floored), kFp8Max);
}

// Four values -> four e4m3 bytes, the first in the lowest byte (memory order).
__device__ __forceinline__ uint32_t quantize4(float v0, float v1, float v2, float v3, float scale) {
  const uint32_t lo = __nv_cvt_float2_to_fp8x2(make_float2(__fdiv_rn(v0, scale), __fdiv_rn(v1, scale)),
                                               __NV_SATFINITE, __NV_E4M3);
  const uint32_t hi = __nv_cvt_float2_to_fp8x2(make_float2(__fdiv_rn(v2, scale), __fdiv_rn(v3, scale)),
                                               __NV_SATFINITE, __NV_E4M3);
  return lo | (hi << 16);
}

// Stores n (4 or 8) quantized bytes held in words[]: one store when kVector (dst aligned to n),
// else the first `valid` bytes one by one.
template <int kBytes, bool kVector>
__device__ __forceinline__ void store_bytes(uint8_t* dst, const uint32_t (&words)[kBytes / 4], int valid) {
  static_assert(kBytes == 4 || kBytes == 8, "one 4- or 8-byte store");
  if constexpr (kVector) {
    if constexpr (kBytes == 8) {
      *reinterpret_cast<uint2*>(dst) = make_uint2(words[0], words[1]);
    } else {
      *reinterpret_cast<uint32_t*>(dst) = words[0];
    }
  } else {
#pragma unroll
    for (int i = 0; i < kBytes; ++i) {
      if (i < valid) dst[i] = static_cast<uint8_t>(words[i / 4] >> (8 * (i % 4)));
    }
  }
}

// Quantizes the chunk's elements into dst[0..kVecElems), skipping columns at or past k (`col` is
// the chunk's first column). The elements are quantized unconditionally (zeros past k are
// harmless) so that the divisions stay free of per-element branches.
template <class In, bool kVector>
__device__ __forceinline__ void store_chunk(uint8_t* dst, const Chunk& c, float scale, int col, int k) {
  constexpr int kV = kVecElems<In>;
  if (col >= k) return;
  uint32_t words[kV / 4];
#pragma unroll
  for (int i = 0; i < kV / 4; ++i) {
    words[i] = quantize4(chunk_element<In>(c, 4 * i), chunk_element<In>(c, 4 * i + 1),
                         chunk_element<In>(c, 4 * i + 2), chunk_element<In>(c, 4 * i + 3), scale);
  }
  store_bytes<kV, kVector>(dst, words, k - col);
}

// ---------------------------------------------------------------------------------------------
// 1x128 along the rows: x [m, k] -> out [m, k], M-major scales.
//
// 8 lanes own a group, 16 elements each, read as 16-byte vectors whose j-th load covers 128
// contiguous bytes across the 8 lanes, so every warp load instruction is fully coalesced; the group
// amax takes 3 xor-shuffles. A 256-thread block runs 32 groups per pass and 2 passes, all loads
// issued first.
//
// The groups of a block form a tile of tile_rows rows x tile_kbs K blocks, rows fastest: the scales
// of one K block are M-major, so consecutive rows make consecutive scale addresses and the 4 groups
// of a warp store one 16-byte piece instead of 4 scattered words. The host takes 8 K blocks per
// tile (2 KB contiguous per row of a 16-bit tile) and more rows, and narrows the tile along
// whichever dim is short, so that K = 128 or a 1-row decode batch still fills the slots.
constexpr int kRowsThreads = 256;
constexpr int kLanesPerGroup = 8;
constexpr int kElemsPerLane = kGroup / kLanesPerGroup;         // 16
constexpr int kGroupsPerPass = kRowsThreads / kLanesPerGroup;  // 32

// Two passes: 64 (16-bit) or 128 (fp32) bytes in flight per thread at 48 (16-bit) or 64 (fp32)
// registers, i.e. 5 or 4 CTAs (1280 or 1024 threads) per SM, 80 or 128 KB of loads in flight. Four
// passes double the bytes per thread but need 80 registers for 16-bit inputs, which leaves 3 CTAs
// per SM: about the same bytes in flight and fewer warps to overlap the divisions.
constexpr int kRowsPasses = 2;
constexpr int kRowsTileGroups = kGroupsPerPass * kRowsPasses;  // 64
// Register budgets (they set the CTAs per SM above). Without them ptxas picks other counts per
// instantiation and now and then spills one value around the division slow-path call.
template <class In>
constexpr int kRowsMaxRegs = kIs16Bit<In> ? 48 : 64;

template <class In, bool kVector>
__global__ void __maxnreg__(kRowsMaxRegs<In>) quantize_1x128_rows_kernel(
    const typename In::Raw* __restrict__ x,  // [m, k], row stride ldx elements
    int m, int k, int64_t ldx,
    uint8_t* __restrict__ out,               // [m, k] contiguous
    float* __restrict__ scale,               // M-major [ceil(k/128), scale_ld]
    int scale_ld, int log2_tile_rows, FastDiv kb_tiles) {
  constexpr int kV = kVecElems<In>;
  constexpr int kChunks = kElemsPerLane / kV;  // per lane and group: 2 or 4
  constexpr int kPasses = kRowsPasses;
  const int sub = threadIdx.x % kLanesPerGroup;  // lane within the group
  // Rows, columns and scale entries fit in int32 (checked by the host); element offsets are int64.
  const int num_kb = (k + kGroup - 1) / kGroup;
  const int row_tile = static_cast<int>(kb_tiles.div(blockIdx.x));
  const int kb_tile = static_cast<int>(blockIdx.x - row_tile * kb_tiles.divisor);
  const int tile_rows = 1 << log2_tile_rows;
  const int tile_kbs = kRowsTileGroups >> log2_tile_rows;

  Chunk v[kPasses][kChunks];
  int row[kPasses], kb[kPasses];
#pragma unroll
  for (int pass = 0; pass < kPasses; ++pass) {
    const int slot = pass * kGroupsPerPass + static_cast<int>(threadIdx.x) / kLanesPerGroup;
    row[pass] = row_tile * tile_rows + (slot & (tile_rows - 1));
    kb[pass] = kb_tile * tile_kbs + (slot >> log2_tile_rows);
    const bool live = row[pass] < m && kb[pass] < num_kb;
    const typename In::Raw* row_ptr = x + (live ? row[pass] * ldx : 0);
#pragma unroll
    for (int j = 0; j < kChunks; ++j) {
      const int col = kb[pass] * kGroup + (j * kLanesPerGroup + sub) * kV;
      v[pass][j] = load_chunk<In, kVector>(row_ptr, col, k, live);
    }
  }

  // Group amax of every pass before any divergent code: all lanes take part in the shuffles
  // (absent groups reduce zeros), so the full mask holds.
  float scales[kPasses];
#pragma unroll
  for (int pass = 0; pass < kPasses; ++pass) {
    uint32_t acc = 0;
#pragma unroll
    for (int j = 0; j < kChunks; ++j) acc = amax_accumulate<In>(acc, v[pass][j]);
    uint32_t amax = amax_bits<In>(acc);
#pragma unroll
    for (int offset = kLanesPerGroup / 2; offset > 0; offset /= 2) {
      amax = max(amax, __shfl_xor_sync(kFullMask, amax, offset));
    }
    scales[pass] = scale_from_amax(amax);
  }

#pragma unroll
  for (int pass = 0; pass < kPasses; ++pass) {
    if (kb[pass] >= num_kb || row[pass] >= scale_ld) continue;
    const float s = scales[pass];
    if (sub == 0) scale[static_cast<int64_t>(kb[pass]) * scale_ld + row[pass]] = row[pass] < m ? s : 0.0f;
    if (row[pass] >= m) continue;  // a padding row: its scale is 0 and it has no values
    uint8_t* out_row = out + static_cast<int64_t>(row[pass]) * k;
#pragma unroll
    for (int j = 0; j < kChunks; ++j) {
      const int col = kb[pass] * kGroup + (j * kLanesPerGroup + sub) * kV;
      store_chunk<In, kVector>(out_row + col, v[pass][j], s, col, k);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// 1x128 along the columns: x [m, k] -> out = x^T [k, m], groups of 128 rows of x per column.
//
// A 128-thread block owns one 128-row M block and 64 columns of x. Each thread loads an 8x8
// sub-tile (8 rows x one 16-byte vector of 8 columns for 16-bit inputs, two vectors of 4 columns
// 32 columns apart for fp32), so the 8 lanes of a warp that share a row read 128 contiguous bytes
// per instruction: the reads are coalesced without staging the tile in shared memory. The
// transpose then costs nothing, because a thread already holds 8 consecutive rows of each of its
// columns, i.e. 8 consecutive bytes of an output row: the 4 lanes that share a column write one
// full 32-byte sector per store instruction, so the writes are coalesced too.
// The group of a column spans the 4 row blocks of a warp (2 xor-shuffles) and the 4 warps; the
// warps meet once through a 4 x 64 word shared array and one __syncthreads. Threads 0..63 then
// store the block's 64 scales as one contiguous 256-byte run (x^T's M-major scales are indexed by
// column).
// Gathered rows (MoE weight gradients: each expert's tokens laid out in whole 128-row blocks): row r
// of the quantized matrix is x[rows[r]], zeros where that index is negative or past x's rows, so the
// expert-block layout never exists as a separate tensor.
constexpr int kColsThreads = 128;
constexpr int kColsWarps = kColsThreads / 32;
constexpr int kColsTileCols = 64;
constexpr int kColsSub = 8;  // rows per thread = columns per thread
static_assert(kColsWarps * 4 * kColsSub == kGroup, "4 warps x 4 row blocks x 8 rows = one 128-row group");

// Column (within the 64-column tile) of a thread's register column i (lane_col = lane % 8).
template <class In>
__device__ __forceinline__ int cols_tile_col(int lane_col, int i) {
  if constexpr (kVecElems<In> == 8) {
    return lane_col * 8 + i;
  } else {
    return (i / 4) * 32 + lane_col * 4 + i % 4;
  }
}

// Register budgets: 64 (16-bit) keeps 8 CTAs = 1024 threads per SM with 128 bytes each in flight;
// fp32 holds 64 data registers alone, 96 keeps 5 CTAs = 640 threads with 256 bytes each. Without
// them ptxas picks other counts per instantiation and now and then spills one value around the
// division slow-path call.
template <class In>
constexpr int kColsMaxRegs = kIs16Bit<In> ? 64 : 96;

template <class In, bool kVectorLoad, bool kVectorStore>
__global__ void __maxnreg__(kColsMaxRegs<In>) quantize_1x128_cols_kernel(
    const typename In::Raw* __restrict__ x,  // [x_rows, k], row stride ldx elements
    int m, int k, int64_t ldx,
    uint8_t* __restrict__ out,               // [k, m] contiguous
    float* __restrict__ scale,               // M-major for out: [ceil(m/128), scale_ld]
    int scale_ld, FastDiv col_tiles,
    const int64_t* __restrict__ rows,        // [m] source rows, or nullptr: row r is x's row r
    int64_t x_rows) {
  constexpr int kV = kVecElems<In>;
  constexpr int kChunksPerRow = kColsSub / kV;  // 1 or 2
  __shared__ uint32_t warp_amax[kColsWarps][kColsTileCols];

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int lane_col = lane % 8, lane_row = lane / 8;
  const int mb = static_cast<int>(col_tiles.div(blockIdx.x));
  const int c0 = static_cast<int>(blockIdx.x - mb * col_tiles.divisor) * kColsTileCols;
  const int r0 = mb * kGroup + warp * 32 + lane_row * kColsSub;  // first of this thread's 8 rows

  Chunk v[kColsSub][kChunksPerRow];  // [row][chunk]: register column i is element i % kV of chunk i / kV
#pragma unroll
  for (int r = 0; r < kColsSub; ++r) {
    int64_t src = r0 + r;
    if (rows != nullptr && r0 + r < m) src = __ldg(rows + r0 + r);
    const bool live = r0 + r < m && src >= 0 && src < x_rows;
    const typename In::Raw* row_ptr = x + (live ? src * ldx : 0);
#pragma unroll
    for (int h = 0; h < kChunksPerRow; ++h) {
      v[r][h] = load_chunk<In, kVectorLoad>(row_ptr, c0 + cols_tile_col<In>(lane_col, h * kV), k, live);
    }
  }

  // Column maxima over the thread's 8 rows, then over the warp's 4 row blocks.
  uint32_t amax[kColsSub];
  if constexpr (kIs16Bit<In>) {
#pragma unroll
    for (int p = 0; p < kColsSub / 2; ++p) {  // columns 2p and 2p+1 share a word
      uint32_t acc = 0;
#pragma unroll
      for (int r = 0; r < kColsSub; ++r) acc = __vmaxu2(acc, v[r][0].w[p] & 0x7fff7fffu);
      amax[2 * p] = half_amax_bits<In>(acc & 0xffffu);
      amax[2 * p + 1] = half_amax_bits<In>(acc >> 16);
    }
  } else {
#pragma unroll
    for (int i = 0; i < kColsSub; ++i) {
      amax[i] = 0;
#pragma unroll
      for (int r = 0; r < kColsSub; ++r) amax[i] = max(amax[i], v[r][i / kV].w[i % kV] & 0x7fffffffu);
    }
  }
#pragma unroll
  for (int i = 0; i < kColsSub; ++i) {
    amax[i] = max(amax[i], __shfl_xor_sync(kFullMask, amax[i], 8));
    amax[i] = max(amax[i], __shfl_xor_sync(kFullMask, amax[i], 16));
  }
  if (lane_row == 0) {
#pragma unroll
    for (int i = 0; i < kColsSub; ++i) warp_amax[warp][cols_tile_col<In>(lane_col, i)] = amax[i];
  }
  __syncthreads();

  if (threadIdx.x < kColsTileCols) {
    const int col = c0 + static_cast<int>(threadIdx.x);
    uint32_t block_amax = 0;
#pragma unroll
    for (int w = 0; w < kColsWarps; ++w) block_amax = max(block_amax, warp_amax[w][threadIdx.x]);
    if (col < scale_ld) {
      scale[static_cast<int64_t>(mb) * scale_ld + col] = col < k ? scale_from_amax(block_amax) : 0.0f;
    }
  }

#pragma unroll
  for (int i = 0; i < kColsSub; ++i) {
    const int tile_col = cols_tile_col<In>(lane_col, i);
    uint32_t block_amax = 0;
#pragma unroll
    for (int w = 0; w < kColsWarps; ++w) block_amax = max(block_amax, warp_amax[w][tile_col]);
    const float s = scale_from_amax(block_amax);
    const int col = c0 + tile_col;
    if (col >= k || r0 >= m) continue;
    float q[kColsSub];
#pragma unroll
    for (int r = 0; r < kColsSub; ++r) q[r] = chunk_element<In>(v[r][i / kV], i % kV);
    const uint32_t words[2] = {quantize4(q[0], q[1], q[2], q[3], s), quantize4(q[4], q[5], q[6], q[7], s)};
    // kVectorStore: m % 8 == 0, so the thread's 8 rows are all in or all out.
    store_bytes<8, kVectorStore>(out + static_cast<int64_t>(col) * m + r0, words, m - r0);
  }
}

// ---------------------------------------------------------------------------------------------
// Shared by the two 128x128 kernels (one CTA per block, blockIdx.x = (batch_idx * nb + nbi) * kb + kbi).

struct BlockCoord {
  int batch_idx, nbi, kbi;  // blocks, rows and columns fit in int32 (checked by the host)
};

__device__ __forceinline__ BlockCoord block_coord(FastDiv nb, FastDiv kb) {
  const int block = static_cast<int>(blockIdx.x);
  const int block_row = static_cast<int>(kb.div(block));  // batch_idx * nb + nbi
  const int batch_idx = static_cast<int>(nb.div(block_row));
  return {batch_idx, block_row - batch_idx * static_cast<int>(nb.divisor),
          block - block_row * static_cast<int>(kb.divisor)};
}

// The block's scale from each thread's amax bit pattern: one redux.sync per warp, one word per warp
// through shared memory (warp_amax holds kWarps words), one __syncthreads.
template <int kWarps>
__device__ __forceinline__ float block_scale(uint32_t amax, uint32_t* warp_amax) {
  amax = __reduce_max_sync(kFullMask, amax);
  if (threadIdx.x % 32 == 0) warp_amax[threadIdx.x / 32] = amax;
  __syncthreads();
#pragma unroll
  for (int i = 0; i < kWarps; ++i) amax = max(amax, warp_amax[i]);
  return scale_from_amax(amax);
}

// ---------------------------------------------------------------------------------------------
// 128x128 blocks: w [batch, n, k] -> out [batch, n, k], scale [batch, ceil(n/128), ceil(k/128)].
//
// One CTA per block, 256 threads for 16-bit inputs and 512 for fp32, so that every thread holds
// 8 vectors (128 bytes in flight) of the block in registers across the block-wide amax, which is
// one redux.sync per warp plus one word per warp through shared memory. A row of the block is
// 128/kV lanes x 16 bytes, so each load instruction reads whole 256- (16-bit) or 512-byte (fp32)
// row segments. The scale array is [batch, nb, kb] contiguous, i.e. indexed by the CTA's linear id.
template <class In>
constexpr int kBlockThreads = kIs16Bit<In> ? 256 : 512;
constexpr int kBlockMaxWarps = 16;

// Register budgets: 16-bit inputs take about 70 registers, 3 CTAs = 768 threads (96 KB of loads in
// flight) per SM; 64 would give 4 CTAs but spills. fp32 fits 64, 2 CTAs = 1024 threads (128 KB).
template <class In>
constexpr int kBlockMaxRegs = kIs16Bit<In> ? 80 : 64;

template <class In, bool kVector>
__global__ void __maxnreg__(kBlockMaxRegs<In>) quantize_128x128_kernel(
    const typename In::Raw* __restrict__ w,  // [batch, n, k] contiguous
    int n, int k,
    uint8_t* __restrict__ out,               // [batch, n, k] contiguous
    float* __restrict__ scale,               // [batch, nb, kb] contiguous
    FastDiv nb, FastDiv kb) {
  constexpr int kV = kVecElems<In>;
  constexpr int kLanesPerRow = kGroup / kV;                       // 16 or 32
  constexpr int kRowsPerStep = kBlockThreads<In> / kLanesPerRow;  // 16
  constexpr int kSteps = kGroup / kRowsPerStep;                   // 8
  constexpr int kWarps = kBlockThreads<In> / 32;
  static_assert(kWarps <= kBlockMaxWarps, "one shared word per warp");
  __shared__ uint32_t warp_amax[kBlockMaxWarps];

  // Element offsets are int64.
  const auto [batch_idx, nbi, kbi] = block_coord(nb, kb);
  const int col = kbi * kGroup + static_cast<int>(threadIdx.x) % kLanesPerRow * kV;
  const int row0 = nbi * kGroup + static_cast<int>(threadIdx.x) / kLanesPerRow;
  const int rows_left = n - row0;  // this thread's rows are row0 + step * kRowsPerStep < n
  // Element offset of the thread's first row; its step-th row is step * step_stride further.
  const int64_t first = (static_cast<int64_t>(batch_idx) * n + row0) * k;
  const int64_t step_stride = static_cast<int64_t>(kRowsPerStep) * k;

  Chunk v[kSteps];
#pragma unroll
  for (int step = 0; step < kSteps; ++step) {
    const bool live = step * kRowsPerStep < rows_left;
    v[step] = load_chunk<In, kVector>(w + (live ? first + step * step_stride : 0), col, k, live);
  }

  uint32_t acc = 0;
#pragma unroll
  for (int step = 0; step < kSteps; ++step) acc = amax_accumulate<In>(acc, v[step]);
  const float s = block_scale<kWarps>(amax_bits<In>(acc), warp_amax);
  if (threadIdx.x == 0) scale[blockIdx.x] = s;

#pragma unroll
  for (int step = 0; step < kSteps; ++step) {
    if (step * kRowsPerStep < rows_left) {
      store_chunk<In, kVector>(out + first + step * step_stride + col, v[step], s, col, k);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// 128x128 blocks written transposed: w [batch, n, k] -> out = fp8 w^T [batch, k, n], scale
// [batch, ceil(k/128), ceil(n/128)] -- the same values and scales as quantize_128x128 followed by a
// transpose, in one pass (the dgrad operand W^T of the training recipe; an fp8 transpose through
// torch's byte-wise copy took ~0.8 ms for a 7168 x 18432 weight on the H200).
//
// One 256-thread CTA per block. Warp w owns rows (w % 4) * 32 .. +31 and columns (w / 4) * 64 .. +63
// of the block; lane l loads 8 consecutive rows (l / 8) * 8 .. +7 of 8 consecutive columns (l % 8) * 8
// .. +7, so the 8 lanes that share rows read 128 (16-bit) or 256 (fp32) contiguous bytes per row.
// After the block-wide amax, a thread holds 8 consecutive rows of each of its 8 columns, i.e. 8
// consecutive bytes of 8 rows of w^T: one 8-byte store each, and the 4 lanes that share a column
// fill one 32-byte sector.
constexpr int kBlockTThreads = 256;
constexpr int kBlockTSub = 8;  // rows and columns per thread

template <class In, bool kVectorLoad, bool kVectorStore>
__global__ void __maxnreg__(128) quantize_128x128_t_kernel(
    const typename In::Raw* __restrict__ w,  // [batch, n, k] contiguous
    int n, int k,
    uint8_t* __restrict__ out,               // [batch, k, n] contiguous
    float* __restrict__ scale,               // [batch, kb, nb] contiguous
    FastDiv nb, FastDiv kb) {
  constexpr int kV = kVecElems<In>;
  constexpr int kChunks = kBlockTSub / kV;  // 1 (16-bit) or 2 (fp32) vectors per row
  __shared__ uint32_t warp_amax[kBlockTThreads / 32];

  const auto [batch_idx, nbi, kbi] = block_coord(nb, kb);
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int r0 = nbi * kGroup + (warp % 4) * 32 + (lane / 8) * kBlockTSub;  // first of 8 rows of w
  const int c0 = kbi * kGroup + (warp / 4) * 64 + (lane % 8) * kBlockTSub;  // first of 8 columns of w
  const int64_t batch_offset = static_cast<int64_t>(batch_idx) * n * k;

  Chunk v[kBlockTSub][kChunks];  // [row][chunk]
#pragma unroll
  for (int r = 0; r < kBlockTSub; ++r) {
    const bool live = r0 + r < n;
    const typename In::Raw* row_ptr = w + (live ? batch_offset + static_cast<int64_t>(r0 + r) * k : 0);
#pragma unroll
    for (int h = 0; h < kChunks; ++h) v[r][h] = load_chunk<In, kVectorLoad>(row_ptr, c0 + h * kV, k, live);
  }

  uint32_t acc = 0;
#pragma unroll
  for (int r = 0; r < kBlockTSub; ++r) {
#pragma unroll
    for (int h = 0; h < kChunks; ++h) acc = amax_accumulate<In>(acc, v[r][h]);
  }
  const float s = block_scale<kBlockTThreads / 32>(amax_bits<In>(acc), warp_amax);
  if (threadIdx.x == 0) {
    scale[(static_cast<int64_t>(batch_idx) * kb.divisor + kbi) * nb.divisor + nbi] = s;
  }

  // Column c0 + i of w is row c0 + i of w^T; its bytes r0 .. r0 + 7 are this thread's 8 rows.
  uint8_t* out_batch = out + static_cast<int64_t>(batch_idx) * k * n;
#pragma unroll
  for (int i = 0; i < kBlockTSub; ++i) {
    if (c0 + i >= k || r0 >= n) continue;
    float x[kBlockTSub];
#pragma unroll
    for (int r = 0; r < kBlockTSub; ++r) x[r] = chunk_element<In>(v[r][i / kV], i % kV);
    const uint32_t words[2] = {quantize4(x[0], x[1], x[2], x[3], s), quantize4(x[4], x[5], x[6], x[7], s)};
    store_bytes<8, kVectorStore>(out_batch + static_cast<int64_t>(c0 + i) * n + r0, words, n - r0);
  }
}

// ---------------------------------------------------------------------------------------------
// Host side

[[noreturn]] void fail(const char* fn, const std::string& what) {
  throw std::runtime_error(std::string("torch_fp8gemm ") + fn + ": " + what);
}

void check_launch(const char* fn) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    fail(fn, std::string("kernel launch failed: ") + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")");
  }
}

bool aligned(const void* p, uintptr_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// The kernels index rows, columns and scale entries with int32 (element offsets with int64); a tile
// may reach up to 64 groups (8192 elements) past the end.
constexpr int64_t kMaxDim = INT32_MAX - (int64_t{1} << 16);

int64_t ceil_div64(int64_t a, int64_t b) { return (a + b - 1) / b; }

int ceil_log2(int64_t v) {
  int log2 = 0;
  while ((int64_t{1} << log2) < v) ++log2;
  return log2;
}

FastDiv make_fast_div(int64_t divisor) {
  // magic = floor(2^32 * (2^shift - d) / d) + 1 with 2^shift >= d: below 2^32 for every d < 2^31.
  const uint32_t shift = static_cast<uint32_t>(ceil_log2(divisor));
  const uint64_t magic = (uint64_t{1} << 32) * ((uint64_t{1} << shift) - divisor) / divisor + 1;
  return FastDiv{static_cast<uint32_t>(divisor), static_cast<uint32_t>(magic), shift};
}

unsigned grid_size(const char* fn, int64_t blocks) {
  if (blocks > INT32_MAX) fail(fn, "tensor too large: " + std::to_string(blocks) + " thread blocks needed");
  return static_cast<unsigned>(blocks);
}

// Calls f(Input<T>{}) for the run-time input type.
template <class F>
void dispatch_input(const char* fn, QuantInputType type, F&& f) {
  switch (type) {
    case QuantInputType::kBF16: f(Input<QuantInputType::kBF16>{}); return;
    case QuantInputType::kFP16: f(Input<QuantInputType::kFP16>{}); return;
    case QuantInputType::kFP32: f(Input<QuantInputType::kFP32>{}); return;
  }
  fail(fn, "unknown input type " + std::to_string(static_cast<int>(type)));
}

void check_1x128_params(const char* fn, const Quantize1x128Params& p, int64_t scale_ld_min) {
  if (p.m < 0 || p.k < 0 || p.ldx < 0) {
    fail(fn, "expected m, k, ldx >= 0, got m=" + std::to_string(p.m) + " k=" + std::to_string(p.k) +
                 " ldx=" + std::to_string(p.ldx));
  }
  if (p.scale_ld < scale_ld_min) {
    fail(fn, "expected scale_ld >= " + std::to_string(scale_ld_min) + ", got " + std::to_string(p.scale_ld));
  }
  if (p.m > kMaxDim || p.k > kMaxDim || p.scale_ld > kMaxDim) {
    fail(fn, "dims too large: m=" + std::to_string(p.m) + " k=" + std::to_string(p.k) +
                 " scale_ld=" + std::to_string(p.scale_ld) + " (at most " + std::to_string(kMaxDim) + ")");
  }
}

// Whether every row of x (rows m, row stride ldx) can be read as 16-byte vectors.
bool rows_vectorizable(const void* x, int64_t m, int64_t k, int64_t ldx, int elem_bytes) {
  const int64_t vec = 16 / elem_bytes;
  return aligned(x, 16) && k % vec == 0 && (m <= 1 || (ldx * elem_bytes) % 16 == 0);
}

}  // namespace

void fp8_quantize_1x128(const Quantize1x128Params& p) {
  constexpr const char* fn = "fp8_quantize_1x128";
  check_1x128_params(fn, p, p.m);
  if (p.rows != nullptr) fail(fn, "gathered rows are supported by fp8_quantize_1x128_transposed only");
  const int64_t num_kb = ceil_div64(p.k, kGroup);
  if (num_kb == 0 || p.scale_ld == 0) return;  // nothing to write
  if (p.x == nullptr || p.out == nullptr || p.scale == nullptr) fail(fn, "null pointer argument");

  dispatch_input(fn, p.type, [&](auto input) {
    using In = decltype(input);
    using Raw = typename In::Raw;
    // Tile shape (powers of two, tile_rows * tile_kbs = the block's groups): up to 8 K blocks, the
    // rest rows; fewer rows than that when m is smaller, the rest K blocks.
    const int log2_groups = ceil_log2(kRowsTileGroups);
    int log2_rows = log2_groups - (num_kb >= 8 ? 3 : ceil_log2(num_kb));
    if (p.m < (int64_t{1} << log2_rows)) log2_rows = ceil_log2(p.m > 0 ? p.m : 1);
    const int64_t tile_rows = int64_t{1} << log2_rows;
    const int64_t kb_tiles = ceil_div64(num_kb, kRowsTileGroups / tile_rows);
    // Row tiles cover scale_ld, not just m: the padding rows' scales are zeroed by the same kernel.
    const unsigned blocks = grid_size(fn, ceil_div64(p.scale_ld, tile_rows) * kb_tiles);
    const bool vector = rows_vectorizable(p.x, p.m, p.k, p.ldx, sizeof(Raw)) && aligned(p.out, 16);
    auto kernel = vector ? quantize_1x128_rows_kernel<In, true> : quantize_1x128_rows_kernel<In, false>;
    kernel<<<blocks, kRowsThreads, 0, p.stream>>>(static_cast<const Raw*>(p.x), static_cast<int>(p.m),
                                                  static_cast<int>(p.k), p.ldx, static_cast<uint8_t*>(p.out),
                                                  p.scale, static_cast<int>(p.scale_ld), log2_rows,
                                                  make_fast_div(kb_tiles));
  });
  check_launch(fn);
}

void fp8_quantize_1x128_transposed(const Quantize1x128Params& p) {
  constexpr const char* fn = "fp8_quantize_1x128_transposed";
  check_1x128_params(fn, p, p.k);
  if (p.rows != nullptr && (p.x_rows < 0 || p.x_rows > kMaxDim)) {
    fail(fn, "expected 0 <= x_rows <= " + std::to_string(kMaxDim) + ", got " + std::to_string(p.x_rows));
  }
  if (p.m == 0 || p.scale_ld == 0) return;  // nothing to write
  if (p.out == nullptr || p.scale == nullptr) fail(fn, "null pointer argument");
  if (p.x == nullptr && (p.rows == nullptr || p.x_rows > 0)) fail(fn, "null pointer argument");

  // Column tiles cover scale_ld (>= k) so that the padding columns' scales are zeroed too.
  const int64_t col_tiles = ceil_div64(p.scale_ld, kColsTileCols);
  const unsigned blocks = grid_size(fn, ceil_div64(p.m, kGroup) * col_tiles);

  dispatch_input(fn, p.type, [&](auto input) {
    using In = decltype(input);
    using Raw = typename In::Raw;
    const int64_t x_rows = p.rows != nullptr ? p.x_rows : p.m;
    const bool vector_load = rows_vectorizable(p.x, x_rows, p.k, p.ldx, sizeof(Raw));
    // 8-byte stores of 8 consecutive rows: every output row must start 8-byte aligned.
    const bool vector_store = p.m % 8 == 0 && aligned(p.out, 8);
    auto kernel = vector_load ? (vector_store ? quantize_1x128_cols_kernel<In, true, true>
                                              : quantize_1x128_cols_kernel<In, true, false>)
                              : (vector_store ? quantize_1x128_cols_kernel<In, false, true>
                                              : quantize_1x128_cols_kernel<In, false, false>);
    kernel<<<blocks, kColsThreads, 0, p.stream>>>(static_cast<const Raw*>(p.x), static_cast<int>(p.m),
                                                  static_cast<int>(p.k), p.ldx, static_cast<uint8_t*>(p.out),
                                                  p.scale, static_cast<int>(p.scale_ld),
                                                  make_fast_div(col_tiles), p.rows, x_rows);
  });
  check_launch(fn);
}

void fp8_quantize_128x128(const Quantize128x128Params& p) {
  constexpr const char* fn = "fp8_quantize_128x128";
  if (p.batch < 0 || p.n < 0 || p.k < 0) {
    fail(fn, "expected batch, n, k >= 0, got batch=" + std::to_string(p.batch) + " n=" + std::to_string(p.n) +
                 " k=" + std::to_string(p.k));
  }
  if (p.batch == 0 || p.n == 0 || p.k == 0) return;
  if (p.w == nullptr || p.out == nullptr || p.scale == nullptr) fail(fn, "null pointer argument");
  if (p.n > kMaxDim || p.k > kMaxDim) {
    fail(fn, "dims too large: n=" + std::to_string(p.n) + " k=" + std::to_string(p.k) + " (at most " +
                 std::to_string(kMaxDim) + ")");
  }
  const int64_t nb = ceil_div64(p.n, kGroup), kb = ceil_div64(p.k, kGroup);
  const unsigned blocks = grid_size(fn, p.batch * nb * kb);

  dispatch_input(fn, p.type, [&](auto input) {
    using In = decltype(input);
    using Raw = typename In::Raw;
    if (p.transpose_out) {
      const bool vector_load = rows_vectorizable(p.w, p.batch * p.n, p.k, p.k, sizeof(Raw));
      // 8-byte stores of 8 consecutive rows: every row of w^T (n bytes) must start 8-byte aligned.
      const bool vector_store = p.n % 8 == 0 && aligned(p.out, 8);
      auto kernel = vector_load ? (vector_store ? quantize_128x128_t_kernel<In, true, true>
                                                : quantize_128x128_t_kernel<In, true, false>)
                                : (vector_store ? quantize_128x128_t_kernel<In, false, true>
                                                : quantize_128x128_t_kernel<In, false, false>);
      kernel<<<blocks, kBlockTThreads, 0, p.stream>>>(static_cast<const Raw*>(p.w), static_cast<int>(p.n),
                                                      static_cast<int>(p.k), static_cast<uint8_t*>(p.out), p.scale,
                                                      make_fast_div(nb), make_fast_div(kb));
      return;
    }
    const bool vector = rows_vectorizable(p.w, p.batch * p.n, p.k, p.k, sizeof(Raw)) && aligned(p.out, 16);
    auto kernel = vector ? quantize_128x128_kernel<In, true> : quantize_128x128_kernel<In, false>;
    kernel<<<blocks, kBlockThreads<In>, 0, p.stream>>>(static_cast<const Raw*>(p.w), static_cast<int>(p.n),
                                                   static_cast<int>(p.k), static_cast<uint8_t*>(p.out), p.scale,
                                                   make_fast_div(nb), make_fast_div(kb));
  });
  check_launch(fn);
}

}  // namespace torch_fp8gemm
