// Epilogue stores of the sm_90a GEMM: one 64-row wgmma accumulator fragment (FP32) to the output.
// Fragment layout (PTX ISA "Matrix fragments for wgmma .m64nNk32", f32 accumulator): in 8-column
// group i, registers 4i, 4i+1 hold row (warp * 16 + lane / 4), columns 8i + 2 * (lane % 4) + {0, 1};
// registers 4i+2, 4i+3 hold the same columns of row + 8.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>
#include <type_traits>

#include "ptx/mbarrier.cuh"
#include "ptx/tma.cuh"
#include "ptx/wgmma.cuh"

namespace torch_fp8gemm::sm90 {

// Where a fragment goes: out [.., n] row-major with row stride ldo, bias [n] (output dtype) or null.
struct OutView {
  void* out;
  const void* bias;
  int64_t n;
  int64_t ldo;
};

// acc += bias[col0 + column] over the kWaves fragments of this thread, before any store: each bias
// pair is loaded once per tile, and a tile without bias skips all of it in one uniform branch.
// Columns at or past n load nothing (n % 8 == 0: a thread's column pair is all in or all out).
template <typename BiasT, int kBlockN, int kWaves>
__device__ __forceinline__ void add_bias(float* acc, const void* bias_ptr, int64_t n, int64_t col0) {
  constexpr int kNumAccum = kBlockN / 2;
  const BiasT* bias = static_cast<const BiasT*>(bias_ptr) + col0;
  const int cols = static_cast<int>(n - col0 < kBlockN ? n - col0 : kBlockN), q = threadIdx.x % 4;
#pragma unroll
  for (int i = 0; i < kBlockN / 8; ++i) {
    const int c = 8 * i + 2 * q;
    if (c >= cols) continue;
    float b0, b1;
    if constexpr (std::is_same_v<BiasT, float>) {
      const float2 bv = *reinterpret_cast<const float2*>(bias + c);
      b0 = bv.x, b1 = bv.y;
    } else {
      const __nv_bfloat162 bv = *reinterpret_cast<const __nv_bfloat162*>(bias + c);
      b0 = __low2float(bv), b1 = __high2float(bv);
    }
#pragma unroll
    for (int w = 0; w < kWaves; ++w) {
      acc[w * kNumAccum + 4 * i + 0] += b0, acc[w * kNumAccum + 4 * i + 2] += b0;
      acc[w * kNumAccum + 4 * i + 1] += b1, acc[w * kNumAccum + 4 * i + 3] += b1;
    }
  }
}

// Masked direct stores, 2 columns per register pair (FP32 out, and bf16 tiles whose width is not a
// multiple of 32). Rows at or past row_end are never written; n % 8 == 0 makes an 8-column group
// all in or all out.
template <typename OutT, int kBlockN>
__device__ __forceinline__ void store_fragment(const float* acc, const OutView& o, int64_t row0, int64_t col0,
                                               int64_t row_end) {
  const int lane = threadIdx.x % 32, warp = (threadIdx.x % 128) / 32;
  const int64_t row = row0 + warp * 16 + lane / 4;
  OutT* out = static_cast<OutT*>(o.out);
#pragma unroll
  for (int i = 0; i < kBlockN / 8; ++i) {
    const int64_t col = col0 + 8 * i + 2 * (lane % 4);
    if (col >= o.n) continue;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t r = row + 8 * h;
      if (r >= row_end) continue;
      const float x = acc[4 * i + 2 * h], y = acc[4 * i + 2 * h + 1];
      OutT* dst = out + r * o.ldo + col;
      if constexpr (std::is_same_v<OutT, float>) {
        *reinterpret_cast<float2*>(dst) = make_float2(x, y);
      } else {
        *reinterpret_cast<__nv_bfloat162*>(dst) = __floats2bfloat162_rn(x, y);
      }
    }
  }
}

// 4x4 transpose of 32-bit words across the 4 lanes of a quad: on entry lane q holds word j of
// 8-column group g0 + j (its 2 columns of that group); on exit lane q holds the 4 words of group
// g0 + q, i.e. 8 consecutive columns. Two butterfly rounds of 2 shuffles each.
__device__ __forceinline__ void quad_transpose(uint32_t& x0, uint32_t& x1, uint32_t& x2, uint32_t& x3, int q) {
  const bool odd = q & 1;
  uint32_t sa = odd ? x0 : x1, sb = odd ? x2 : x3;
  uint32_t ra = __shfl_xor_sync(0xffffffffu, sa, 1), rb = __shfl_xor_sync(0xffffffffu, sb, 1);
  if (odd) {
    x0 = ra, x2 = rb;
  } else {
    x1 = ra, x3 = rb;
  }
  const bool high = q & 2;
  sa = high ? x0 : x2, sb = high ? x1 : x3;
  ra = __shfl_xor_sync(0xffffffffu, sa, 2), rb = __shfl_xor_sync(0xffffffffu, sb, 2);
  if (high) {
    x0 = ra, x1 = rb;
  } else {
    x2 = ra, x3 = rb;
  }
}

__device__ __forceinline__ uint32_t pack_bf16x2(float x, float y) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(x, y);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// Groups g0 .. g0 + 3 of a fragment (columns col0 + 8 * group + 2 * q + {0, 1}), packed to bf16 and
// quad-transposed: on return w[h] holds the 8 consecutive columns of group g0 + q (q = this lane's
// position in its quad) in row half h.
__device__ __forceinline__ void pack_transposed_groups(const float* acc, int g0, int q, uint32_t (&w)[2][4]) {
#pragma unroll
  for (int j = 0; j < 4; ++j) {
#pragma unroll
    for (int h = 0; h < 2; ++h) w[h][j] = pack_bf16x2(acc[4 * (g0 + j) + 2 * h], acc[4 * (g0 + j) + 2 * h + 1]);
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) quad_transpose(w[h][0], w[h][1], w[h][2], w[h][3], q);
}

// BF16 with 16-byte stores: after the quad transpose a warp store writes 64 contiguous bytes per row
// instead of 16 (4x fewer store instructions). Needs (BN / 8) % 4 == 0.
template <int kBlockN>
__device__ __forceinline__ void store_fragment_bf16_x16(const float* acc, const OutView& o, int64_t row0,
                                                        int64_t col0, int64_t row_end) {
  static_assert((kBlockN / 8) % 4 == 0, "groups are transposed four at a time");
  const int lane = threadIdx.x % 32, warp = (threadIdx.x % 128) / 32, q = lane % 4;
  const int64_t row = row0 + warp * 16 + lane / 4;
  __nv_bfloat16* out = static_cast<__nv_bfloat16*>(o.out);
#pragma unroll
  for (int g0 = 0; g0 < kBlockN / 8; g0 += 4) {
    uint32_t w[2][4];
    pack_transposed_groups(acc, g0, q, w);
    const int64_t col = col0 + 8 * (g0 + q);
    if (col >= o.n) continue;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t r = row + 8 * h;
      if (r < row_end) *reinterpret_cast<uint4*>(out + r * o.ldo + col) = make_uint4(w[h][0], w[h][1], w[h][2], w[h][3]);
    }
  }
}

// The bf16 store a fragment takes when it does not go through the staging tile.
template <typename OutT, int kBlockN>
__device__ __forceinline__ void store_fragment_direct(const float* acc, const OutView& o, int64_t row0,
                                                      int64_t col0, int64_t row_end) {
  if constexpr (std::is_same_v<OutT, __nv_bfloat16> && (kBlockN / 8) % 4 == 0) {
    store_fragment_bf16_x16<kBlockN>(acc, o, row0, col0, row_end);
  } else {
    store_fragment<OutT, kBlockN>(acc, o, row0, col0, row_end);
  }
}

// TMA-store epilogue, part 1: a fragment into the staging tile as bf16. The tile is
// kBlockN * 2 / kSpan slabs of [kRows][kSpan B] (kSpan = 128, 64 or 32: the TMA swizzle of the
// output map) whose 16-byte chunks are XOR-swizzled with the row: chunk c of row r lies at
// c ^ ((r * kSpan / 128) % (kSpan / 16)), so the 8 rows of each stmatrix matrix hit distinct banks.
// stmatrix takes the fragment as it is: lane l addresses row l % 16 of its warp's 16 rows, in
// 8-column group g + l / 16 (g even: both groups lie in one slab, as kSpan / 16 is even).
// Rows and columns past the output are written here too; the TMA store clips them.
template <int kRows, int kBlockN, int kSpan>
__device__ __forceinline__ void stage_fragment_bf16(const float* acc, uint8_t* staging, int row_in_tile) {
  constexpr int kChunks = kSpan / 16, kGroups = kBlockN / 8;
  static_assert(kSpan == 32 || kSpan == 64 || kSpan == 128, "TMA swizzle spans");
  static_assert((kBlockN * 2) % kSpan == 0, "slabs must tile the row");
  const int lane = threadIdx.x % 32, warp = (threadIdx.x % 128) / 32;
  const int row = row_in_tile + warp * 16 + lane % 16;
  // Chunk bits of this lane's address: the swizzle XOR and the second group of an x4 (c even).
  const uint32_t base =
      (static_cast<uint32_t>(__cvta_generic_to_shared(staging)) + row * kSpan) | ((((lane / 16) ^ (row * kSpan / 128)) % kChunks) << 4);
  auto pack_group = [&](int i, uint32_t& top, uint32_t& bottom) {
    top = pack_bf16x2(acc[4 * i], acc[4 * i + 1]);
    bottom = pack_bf16x2(acc[4 * i + 2], acc[4 * i + 3]);
  };
  auto address = [&](int g) { return (base ^ ((g % kChunks) << 4)) + (g / kChunks) * (kRows * kSpan); };
#pragma unroll
  for (int g = 0; g + 1 < kGroups; g += 2) {
    uint32_t r[4];
    pack_group(g, r[0], r[1]);
    pack_group(g + 1, r[2], r[3]);
    ptx::stmatrix_x4(address(g), r[0], r[1], r[2], r[3]);
  }
  if constexpr (kGroups % 2 == 1) {
    uint32_t r[2];
    pack_group(kGroups - 1, r[0], r[1]);
    ptx::stmatrix_x2(address(kGroups - 1), r[0], r[1]);
  }
}

// TMA-store epilogue, part 2: warpgroup wg's rows of a tile (kWaves fragments) through the staging
// tile to out, one TMA store per slab (lane j of the warpgroup's first warp issues slab j). The
// previous tile's stores must have read the staging rows before they are rewritten; the stores then
// run while the next tile computes. Named barrier 3 + wg spans the warpgroup.
template <int kBlockM, int kBlockN, int kWaves, int kSpan, int kStoreRows>
__device__ __forceinline__ void store_tile_staged(const float* acc, uint8_t* staging, const CUtensorMap* tmap_out, int wg,
                                                  int64_t m0, int64_t n0, int64_t row_end, int64_t n) {
  constexpr int kSlabs = kBlockN * 2 / kSpan;
  const int wg_thread = threadIdx.x % 128, warp = wg_thread / 32;
  if (wg_thread < kSlabs) ptx::bulk_wait_group_read_0();
  ptx::named_barrier_sync(3 + wg, 128);
  if (warp * 16 < kStoreRows) {  // 16/32-row tiles: the warps of rows past the tile hold nothing
#pragma unroll
    for (int w = 0; w < kWaves; ++w) {
      stage_fragment_bf16<kBlockM, kBlockN, kSpan>(acc + w * (kBlockN / 2), staging, w * 128 + wg * 64);
    }
  }
  ptx::fence_proxy_async_shared();  // generic-proxy smem writes -> visible to the TMA engine
  ptx::named_barrier_sync(3 + wg, 128);
  if (wg_thread < kSlabs && n0 + wg_thread * (kSpan / 2) < n) {
#pragma unroll
    for (int w = 0; w < kWaves; ++w) {
      const int row_in_tile = w * 128 + wg * 64;
      if (m0 + row_in_tile >= row_end) continue;
      ptx::tma_store_2d(tmap_out, staging + wg_thread * (kBlockM * kSpan) + row_in_tile * kSpan,
                        static_cast<int32_t>(n0 + wg_thread * (kSpan / 2)), static_cast<int32_t>(m0 + row_in_tile));
    }
  }
  if (wg_thread < kSlabs) ptx::bulk_commit_group();
}

}  // namespace torch_fp8gemm::sm90
