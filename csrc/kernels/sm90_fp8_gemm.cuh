// The sm_90a FP8 (e4m3) GEMM with DeepSeek-V3 fine-grained scaling:
//   out[m, n] = sum_k (A[m, k] * sa[m, k / 128]) * (B[n, k] * sb[n / 128, k / 128])  (+ bias[n])
// A [m, k] and B [n, k] are K-major; out [m, n] is row-major (bf16 or fp32).
//
// Roles (one persistent CTA per SM):
//   warpgroups 0 .. kNumMathWG-1  math: wgmma m64nBNk32 on 64 rows each, promotion, epilogue
//   warpgroup  kNumMathWG         producer: one thread issues every TMA load into a kNumStages ring
// Per 128-wide K block (one ring stage) a math warpgroup issues 4 wgmmas into a temporary fragment
// (the first with scale-d = 0), waits, releases the stage, then adds sa[row] * sb[col-block] * tmp into
// the FP32 accumulators ("promotion"). For BN <= 128 the K loop is software-pipelined over two
// temporary fragments (block kb + 1 is issued before block kb is promoted); with two math
// warpgroups the other warpgroup's wgmmas also cover each promotion.
// Optional 2-CTA clusters multicast the shared operand (A for CLUSTER_N = 2, B for CLUSTER_M = 2).
// Epilogue: direct global stores from registers (bf16: quad-transposed 16-byte stores), bias fused;
// or, with kStagedOut (bf16 out), the fragments go to a swizzled shared-memory staging tile that TMA
// stores write out while the next tile's main loop runs (costs one pipeline stage: short K only).
// Split-K (dense, opt-in): a tile's K blocks are divided over work units that store FP32 partial
// sums; split_k_reduce.cu adds them up.
#pragma once
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "common.cuh"
#include "ptx/mbarrier.cuh"
#include "ptx/tma.cuh"
#include "ptx/wgmma.cuh"
#include "scheduler.cuh"

namespace torch_fp8gemm::sm90 {

// K blocks whose B scales are staged in shared memory per tile (K <= 32768); longer K reads the
// scales from global memory in the K loop.
constexpr int kMaxSfbKBlocks = 256;  // K <= 32768 (DeepSeek-V3's K = N = 18432 included)
constexpr int kSfbPerThread = kMaxSfbKBlocks / 128;  // scales each thread of a warpgroup stages

// Shared memory of one CTA. The host takes sizeof() of this struct, so device offsets and the
// launch's smem size come from one definition.
// A-scale rows are loaded by TMA from [kb, m] fp32 at column m0, whose byte offset must be 16-byte
// aligned. Dense tiles start at multiples of 64 rows; grouped tiles start at an expert's first row
// (any row: no padding of group sizes), so their box starts at m0 rounded down to 4 rows and is
// kSfaSlack = 4 floats wider; the math warpgroups read it shifted by m0 % 4.
template <GemmKind kKind>
inline constexpr int kSfaSlackOf = is_grouped(kKind) ? 4 : 0;

// Floats of scales that TMA loads into one stage: the A scales of the tile's rows (+ slack) and,
// for row-scaled B, the B scales of the tile's columns (stored right after, at offset kBlockM).
template <GemmKind kKind, int kBlockM, int kBlockN>
inline constexpr int kStageScaleFloatsOf =
    kBlockM + kSfaSlackOf<kKind> + (kKind == GemmKind::kDenseRowScaledB ? kBlockN : 0);

// Math warpgroups of a CTA: one for 64-row tiles, else two. A warpgroup computes its rows of the
// tile as kWavesM x kWavesN sub-tiles of 64 rows x kSubN columns ("waves"), one wgmma fragment each:
// BLOCK_M = 256 gives each warpgroup two 64-row waves (rows w * 128 + wg * 64), BLOCK_N = 256 two
// 128-column waves. The waves share one temporary fragment and each has its own FP32 accumulators,
// so a 256 x 128 or 128 x 256 tile needs 64 + 128 registers, where a single m64n256 fragment would
// need 128 + 128. Larger tiles load fewer operand bytes per flop (measured +5-9% over 128 x 128 at
// M >= 4096; the CUDA-core promotion, not the loads, is what limits them: RESULTS.md, session 3).
// BLOCK_M = 192 runs three math warpgroups of one wave each: with one temporary fragment per
// warpgroup, two others' wgmmas cover each warpgroup's promotion.
template <int kBlockM>
inline constexpr int kNumMathWGOf = kBlockM == 64 ? 1 : kBlockM == 192 ? 3 : 2;
// Registers per thread after setmaxnreg: producer warpgroup / math warpgroups (the sum over all
// warpgroups stays within the 64K register file).
template <int kBlockM>
inline constexpr int kProducerRegsOf = kNumMathWGOf<kBlockM> == 3 ? 24 : 40;
template <int kBlockM>
inline constexpr int kMathRegsOf = kNumMathWGOf<kBlockM> == 1 ? 248 : kNumMathWGOf<kBlockM> == 2 ? 232 : 160;
template <int kBlockM>
inline constexpr int kWavesMOf = kBlockM / (64 * kNumMathWGOf<kBlockM>);
// Column waves of a tile (host code uses this too: the dense cost model).
__host__ __device__ constexpr int num_column_waves(int block_n) { return block_n > 192 ? 2 : 1; }
template <int kBlockN>
inline constexpr int kWavesNOf = num_column_waves(kBlockN);

// Bytes of the bf16 output staging tile of the TMA-store epilogue: dense and grouped tiles whose
// width is a multiple of 64 columns (128-byte swizzled slabs). A grouped tile must not write rows of
// the next expert, which a TMA box cannot mask: a warpgroup whose rows straddle the expert's end
// takes the register epilogue for that tile. The other widths always keep the register epilogue.
template <GemmKind kKind, int kBlockM, int kBlockN>
inline constexpr int kStagingBytesOf =
    ((kKind == GemmKind::kDense || is_grouped(kKind)) && kBlockN % 64 == 0) ? kBlockM * kBlockN * 2 : 0;

template <int kBlockM, int kBlockN, int kNumStages, int kStageScaleFloats = kBlockM, int kStagingBytes = 0>
struct SharedStorage {
  static_assert(kBlockN % 8 == 0, "BLOCK_N must be a multiple of 8 so B stages stay 1024-B aligned");
  static_assert(kBlockM % 64 == 0, "BLOCK_M is a multiple of the 64-row wgmma");
  // 128B-swizzled operand tiles: [rows][128 bytes], 8-row atoms of 1024 B, atoms 1024-B aligned.
  alignas(1024) uint8_t a[kNumStages][kBlockM * kBlockK];
  alignas(1024) uint8_t b[kNumStages][kBlockN * kBlockK];
  // Output staging (TMA-store epilogue): BN / 64 slabs of [BM rows][128 B], 16-byte chunks XOR-
  // swizzled with the row (CU_TENSOR_MAP_SWIZZLE_128B), so the quad-transposed fragment writes
  // are bank-conflict free.
  alignas(1024) uint8_t d[kStagingBytes > 0 ? kStagingBytes : 1];
  // Scales of the stage's K block: sfa[s][r] = a_scale[kb, (m0 & ~3) + r] (TMA, same barrier as
  // A/B); (m0 & ~3) == m0 without slack. Row-scaled B: sfa[s][kBlockM + c] = b_scale[kb, n0 + c].
  // Rows are padded to 128 B: a TMA destination must be 128-byte aligned.
  static constexpr int kSfaRowFloats = (kStageScaleFloats + 31) / 32 * 32;
  alignas(128) float sfa[kNumStages][kSfaRowFloats];
  // B scales of a tile, per math warpgroup, double-buffered across tiles: sfb[buf][wg][row][kb],
  // row 0 = scale block n0 / 128, row 1 = the block the tile's last valid column falls in.
  float sfb[2][kNumMathWGOf<kBlockM>][2][kMaxSfbKBlocks];
  uint64_t full[kNumStages];   // producer -> math: stage loaded (1 arrival + tx bytes)
  uint64_t empty[kNumStages];  // math -> producer: stage consumed (one arrival per math warp)
};

// Largest stage count whose SharedStorage fits the opt-in limit, capped.
template <int kBlockM, int kBlockN, int kStageScaleFloats = kBlockM, int kStagingBytes = 0, int kCap = 12>
constexpr int max_stages() {
  constexpr int per_stage = kBlockM * kBlockK + kBlockN * kBlockK + (kStageScaleFloats + 31) / 32 * 128 + 16;
  // sfb + staging + alignment padding
  constexpr int fixed = 2 * kNumMathWGOf<kBlockM> * 2 * kMaxSfbKBlocks * 4 + kStagingBytes + (kStagingBytes > 0 ? 2048 : 1024);
  int s = (kMaxSmemBytes - fixed) / per_stage;
  return s > kCap ? kCap : s;
}

struct KernelArgs {
  const float* b_scale;  // [ceil(n/128), num_k_blocks] row-major (row-scaled B: TMA-loaded, unused here)
  const void* bias;      // [n] in the output dtype, or nullptr
  void* out;             // [m, n] row-major, row stride ldo (elements)
  int64_t m, n, k;
  int64_t ldo;
  int num_k_blocks;  // ceil(k / 128)
  int out_fp32;      // 0: bf16 out, 1: fp32 out
  // Grouped kinds only (m is then the total row count of A/out, b is [G * n, k]):
  const int32_t* group_rows;     // [G] on the device: contiguous: cumulative row ends; masked: valid rows
  int num_groups;                // G
  int64_t rows_per_group;        // masked: max_m (expert g starts at row g * max_m)
  int64_t b_scale_group_stride;  // floats of b_scale per expert: ceil(n / 128) * num_k_blocks
  // Split-K (kDense only; 1 elsewhere): work unit s of a tile runs K blocks [s * k_blocks_per_split,
  // min((s + 1) * k_blocks_per_split, num_k_blocks)) and stores its FP32 partial sums, without bias,
  // to partial[s][m][n]; split_k_reduce adds them up in a fixed order (deterministic) into out.
  int num_splits;
  int k_blocks_per_split;
  float* partial;
  // K-grouped (kDenseRowScaledB only, else nullptr): num_splits groups, group g reducing over K
  // blocks [k_block_bounds[g], k_block_bounds[g + 1]) into out rows [g * m, (g + 1) * m) -- the
  // MoE weight gradient dW_g = dy_g^T x_g with each expert's tokens padded to whole K blocks.
  const int32_t* k_block_bounds;
  int raster_band;  // DenseScheduler's band (kDense): > 0 m-blocks, < 0 n-blocks (see scheduler.cuh)
};


template <int kBlockM, int kBlockN, int kNumStages>
constexpr int num_threads() {
  return (kNumMathWGOf<kBlockM> + 1) * 128;
}

// Epilogue of one 64-row warpgroup slice: direct (masked) stores from the accumulator fragment.
// Fragment layout (PTX ISA "Matrix fragments for wgmma .m64nNk32", f32 accumulator): in 8-column
// group i, registers 4i, 4i+1 hold row (warp*16 + lane/4), columns 8i + 2*(lane%4) + {0,1};
// registers 4i+2, 4i+3 hold the same columns of row + 8.
template <typename OutT, int kBlockN>
__device__ __forceinline__ void store_fragment(const float* acc, const KernelArgs& args, int64_t row0, int64_t col0,
                                               int64_t row_end) {
  const int lane = threadIdx.x % 32;
  const int warp = (threadIdx.x % 128) / 32;
  const int64_t row = row0 + warp * 16 + lane / 4;
  const int64_t col_base = col0 + 2 * (lane % 4);
  OutT* out = static_cast<OutT*>(args.out);
  const OutT* bias = static_cast<const OutT*>(args.bias);
#pragma unroll
  for (int i = 0; i < kBlockN / 8; ++i) {
    const int64_t col = col_base + 8 * i;
    if (col >= args.n) continue;  // n % 8 == 0: an 8-column group is all in or all out
    float b0 = 0.f, b1 = 0.f;
    if (bias != nullptr) {
      if constexpr (std::is_same_v<OutT, float>) {
        const float2 bv = *reinterpret_cast<const float2*>(bias + col);
        b0 = bv.x, b1 = bv.y;
      } else {
        const __nv_bfloat162 bv = *reinterpret_cast<const __nv_bfloat162*>(bias + col);
        b0 = __low2float(bv), b1 = __high2float(bv);
      }
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t r = row + 8 * h;
      if (r >= row_end) continue;
      const float x = acc[4 * i + 2 * h] + b0, y = acc[4 * i + 2 * h + 1] + b1;
      OutT* dst = out + r * args.ldo + col;
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
// g0 + q from lanes 0..3, i.e. 8 consecutive columns. Two butterfly rounds of 2 shuffles each.
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

// Four 8-column groups g0 .. g0 + 3 of a fragment (columns col_base + 8 * group + 2 * q + {0, 1}),
// bias added, packed to bf16 and quad-transposed: on return w[h] holds the 8 consecutive columns of
// group g0 + q (this lane's position q in its quad) in row half h. Shared by the bf16 epilogues;
// kMayHaveBias = false drops the bias loads and the "+ 0" adds (x + 0.f is not foldable: -0 + 0 = +0).
template <bool kMayHaveBias = true>
__device__ __forceinline__ void pack_transposed_groups(const float* acc, const __nv_bfloat16* bias, int64_t n,
                                                       int64_t col_base, int g0, int q, uint32_t (&w)[2][4]) {
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int i = g0 + j;
    if constexpr (kMayHaveBias) {
      const int64_t col = col_base + 8 * i + 2 * q;
      float b0 = 0.f, b1 = 0.f;
      if (bias != nullptr && col < n) {
        const __nv_bfloat162 bv = *reinterpret_cast<const __nv_bfloat162*>(bias + col);
        b0 = __low2float(bv), b1 = __high2float(bv);
      }
#pragma unroll
      for (int h = 0; h < 2; ++h) w[h][j] = pack_bf16x2(acc[4 * i + 2 * h] + b0, acc[4 * i + 2 * h + 1] + b1);
    } else {
#pragma unroll
      for (int h = 0; h < 2; ++h) w[h][j] = pack_bf16x2(acc[4 * i + 2 * h], acc[4 * i + 2 * h + 1]);
    }
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) quad_transpose(w[h][0], w[h][1], w[h][2], w[h][3], q);
}

// BF16 epilogue with 16-byte stores: a quad transpose turns each thread's 2-column pieces of four
// 8-column groups into one whole group, so a warp store writes 64 contiguous bytes per row instead
// of 16 (4x fewer store instructions and L1 wavefronts). Needs (BN / 8) % 4 == 0.
template <int kBlockN>
__device__ __forceinline__ void store_fragment_bf16_x16(const float* acc, const KernelArgs& args, int64_t row0,
                                                        int64_t col0, int64_t row_end) {
  static_assert((kBlockN / 8) % 4 == 0, "groups are transposed four at a time");
  const int lane = threadIdx.x % 32;
  const int warp = (threadIdx.x % 128) / 32;
  const int q = lane % 4;
  const int64_t row = row0 + warp * 16 + lane / 4;
  __nv_bfloat16* out = static_cast<__nv_bfloat16*>(args.out);
  const __nv_bfloat16* bias = static_cast<const __nv_bfloat16*>(args.bias);
#pragma unroll
  for (int g0 = 0; g0 < kBlockN / 8; g0 += 4) {
    uint32_t w[2][4];
    pack_transposed_groups(acc, bias, args.n, col0, g0, q, w);
    const int64_t col = col0 + 8 * (g0 + q);
    if (col < args.n) {  // n % 8 == 0: an 8-column group is all in or all out
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int64_t r = row + 8 * h;
        if (r < row_end) {
          *reinterpret_cast<uint4*>(out + r * args.ldo + col) = make_uint4(w[h][0], w[h][1], w[h][2], w[h][3]);
        }
      }
    }
  }
}

// Interior tiles without bias (every row and column of the 64-row slice lies inside the output):
// the same 16-byte stores with no bounds checks, no bias loads and no "+ 0" adds, so the code a warp
// runs once per tile is branch-free. Small-K shapes run this once per tile with cold instruction
// caches (ncu at 128x32768x512: 31% of stall samples waiting on instruction fetch).
template <int kBlockN>
__device__ __forceinline__ void store_fragment_bf16_x16_interior(const float* acc, const KernelArgs& args,
                                                                 int64_t row0, int64_t col0) {
  static_assert((kBlockN / 8) % 4 == 0, "groups are transposed four at a time");
  const int lane = threadIdx.x % 32;
  const int warp = (threadIdx.x % 128) / 32;
  const int q = lane % 4;
  __nv_bfloat16* out = static_cast<__nv_bfloat16*>(args.out) + (row0 + warp * 16 + lane / 4) * args.ldo + col0 + 8 * q;
#pragma unroll
  for (int g0 = 0; g0 < kBlockN / 8; g0 += 4) {
    uint32_t w[2][4];
    pack_transposed_groups<false>(acc, nullptr, args.n, col0, g0, q, w);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      *reinterpret_cast<uint4*>(out + 8 * h * args.ldo + 8 * g0) = make_uint4(w[h][0], w[h][1], w[h][2], w[h][3]);
    }
  }
}

// TMA-store epilogue, part 1: one 64-row wave fragment (kSubN columns starting at tile column
// col_in_tile) into the swizzled staging tile, bias added, bf16. Rows and columns past the output
// are written here too; the TMA store clips them.
template <int kBlockM, int kSubN>
__device__ __forceinline__ void stage_fragment_bf16(const float* acc, const KernelArgs& args, uint8_t* staging,
                                                    int row_in_tile, int col_in_tile, int64_t n0) {
  static_assert((kSubN / 8) % 4 == 0, "groups are transposed four at a time");
  const int lane = threadIdx.x % 32;
  const int warp = (threadIdx.x % 128) / 32;
  const int q = lane % 4;
  const int row = row_in_tile + warp * 16 + lane / 4;
  const __nv_bfloat16* bias = static_cast<const __nv_bfloat16*>(args.bias);
#pragma unroll
  for (int g0 = 0; g0 < kSubN / 8; g0 += 4) {
    uint32_t w[2][4];
    pack_transposed_groups(acc, bias, args.n, n0 + col_in_tile, g0, q, w);
    const int group = col_in_tile / 8 + g0 + q;  // this lane's 8-column group in the tile
    const int chunk = group % 8;                 // its 16-byte chunk in the slab's 128-byte row
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = row + 8 * h;
      uint8_t* dst = staging + (group / 8) * (kBlockM * 128) + r * 128 + ((chunk ^ (r & 7)) * 16);
      *reinterpret_cast<uint4*>(dst) = make_uint4(w[h][0], w[h][1], w[h][2], w[h][3]);
    }
  }
}

__device__ __forceinline__ void named_barrier_sync(int id, int num_threads) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(num_threads) : "memory");
}

// Issues the four k32 wgmmas of one 128-wide K block into fragment `t` (scale-d = 0 on the first,
// so `t` needs no zeroing) and commits them as one group. a_desc / b_desc: the low descriptor words
// of the operands' first K column (ptx::smem_desc_sw128_lo); a 32-byte K step adds 2.
template <typename Mma>
__device__ __forceinline__ void issue_k_block(uint32_t a_desc, uint32_t b_desc, float* t) {
#pragma unroll
  for (int i = 0; i < Mma::kNumAccum; ++i) ptx::fence_operand(t[i]);
  ptx::wgmma_fence();
#pragma unroll
  for (int j = 0; j < kBlockK / 32; ++j) {
    Mma::mma(ptx::smem_desc_sw128(a_desc + j * 2), ptx::smem_desc_sw128(b_desc + j * 2), t, j > 0 ? 1 : 0);
  }
  ptx::wgmma_commit_group();
}

// Promotion: acc += sa[row] * sb[column block] * t. Groups i < num_former use B scale row nb0
// (sb0), the rest nb1 (sb1); a select per group, not two loops (design note 1.4).
template <int kBlockN, bool kSingleScaleRow>
__device__ __forceinline__ void promote(float* acc, const float* t, float sa0, float sa1, float sb0, float sb1,
                                        int num_former) {
  const float s00 = sa0 * sb0, s10 = sa1 * sb0;
  const float s01 = kSingleScaleRow ? s00 : sa0 * sb1;
  const float s11 = kSingleScaleRow ? s10 : sa1 * sb1;
#pragma unroll
  for (int i = 0; i < kBlockN / 8; ++i) {
    const bool former = kSingleScaleRow || i < num_former;
    const float f0 = former ? s00 : s01;
    const float f1 = former ? s10 : s11;
    acc[4 * i + 0] = fmaf(f0, t[4 * i + 0], acc[4 * i + 0]);
    acc[4 * i + 1] = fmaf(f0, t[4 * i + 1], acc[4 * i + 1]);
    acc[4 * i + 2] = fmaf(f1, t[4 * i + 2], acc[4 * i + 2]);
    acc[4 * i + 3] = fmaf(f1, t[4 * i + 3], acc[4 * i + 3]);
  }
}

// Promotion with B scaled per row (kDenseRowScaledB): column c of the fragment gets sa[row] * sb[c],
// sb read from the stage's TMA-loaded row of B scales. A thread's columns 8i + 2q + {0, 1} are one
// float2; the 4 quads of a warp read 4 distinct float2 (32 B), so the loads are conflict-free.
template <int kBlockN>
__device__ __forceinline__ void promote_row_scaled(float* acc, const float* t, float sa0, float sa1,
                                                   const float* sb_row) {
  const int q = threadIdx.x % 4;
#pragma unroll
  for (int i = 0; i < kBlockN / 8; ++i) {
    const float2 sb = *reinterpret_cast<const float2*>(sb_row + 8 * i + 2 * q);
    acc[4 * i + 0] = fmaf(sa0 * sb.x, t[4 * i + 0], acc[4 * i + 0]);
    acc[4 * i + 1] = fmaf(sa0 * sb.y, t[4 * i + 1], acc[4 * i + 1]);
    acc[4 * i + 2] = fmaf(sa1 * sb.x, t[4 * i + 2], acc[4 * i + 2]);
    acc[4 * i + 3] = fmaf(sa1 * sb.y, t[4 * i + 3], acc[4 * i + 3]);
  }
}

template <int kBlockM, int kBlockN, int kNumStages, int kClusterM, int kClusterN,
          GemmKind kKind = GemmKind::kDense, bool kStagedOut = false>
__global__ void __launch_bounds__(num_threads<kBlockM, kBlockN, kNumStages>(), 1)
    sm90_fp8_gemm_kernel(const __grid_constant__ CUtensorMap tmap_a,    // A   [m, k] fp8, box {128, BM / kClusterN}, 128B swizzle
                         const __grid_constant__ CUtensorMap tmap_b,    // B   [n, k] fp8, box {128, BN / kClusterM}, 128B swizzle
                         const __grid_constant__ CUtensorMap tmap_sfa,  // SFA [kb, m] fp32, box {BM + slack, 1}
                         const KernelArgs args,
                         const __grid_constant__ CUtensorMap tmap_sfb,   // row-scaled B only: SFB [kb, n] fp32, box {BN, 1}
                         const __grid_constant__ CUtensorMap tmap_out) { // staged epilogue only: out [m, n] bf16, box {64, 64}, 128B swizzle
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900)
  constexpr int kNumMathWG = kNumMathWGOf<kBlockM>;
  constexpr int kWavesM = kWavesMOf<kBlockM>;
  constexpr int kWavesN = kWavesNOf<kBlockN>;
  constexpr int kNumWaves = kWavesM * kWavesN;
  constexpr int kSubN = kBlockN / kWavesN;  // columns of one wave's wgmma
  static_assert(kWavesM * kNumMathWG * 64 == kBlockM, "BLOCK_M is 64, 128, 192 or 256");
  static_assert(kNumMathWG * 128 * kMathRegsOf<kBlockM> + 128 * kProducerRegsOf<kBlockM> <= 65536,
                "register file overcommitted");
  static_assert(kWavesN == 1 || kSubN % 128 == 0, "column waves must each lie in one 128-column scale block");
  constexpr int kNumMathWarps = kNumMathWG * 4;
  constexpr int kClusterSize = kClusterM * kClusterN;
  constexpr bool kMulticastA = kClusterN == 2;  // the pair shares the m-block: A is multicast
  constexpr bool kMulticastB = kClusterM == 2;  // the pair shares the n-block: B is multicast
  // Rows of the shared operand that a loading CTA of the pair loads (and multicasts to both).
  constexpr int kRowsA = kMulticastA ? kBlockM / kMulticastSlices : kBlockM;
  constexpr int kRowsB = kMulticastB ? kBlockN / kMulticastSlices : kBlockN;
  static_assert(kRowsA % 8 == 0 && kRowsB % 8 == 0, "multicast halves must stay 1024-B aligned");
  // Bytes that land in this CTA's stage per K block (own loads + the peer's multicast half).
  constexpr bool kGrouped = is_grouped(kKind);
  constexpr bool kRowScaledB = kKind == GemmKind::kDenseRowScaledB;
  constexpr int kSfaSlack = kSfaSlackOf<kKind>;
  constexpr int kStageScaleFloats = kStageScaleFloatsOf<kKind, kBlockM, kBlockN>;
  constexpr uint32_t kStageBytes = kBlockM * kBlockK + kBlockN * kBlockK + kStageScaleFloats * 4;
  // 128 % BN == 0: a tile never straddles two 128-row scale blocks of B. With column waves the tile
  // spans two blocks but each wave lies in one: wave 0 uses scale row nb0, wave 1 row nb1.
  constexpr bool kSingleScaleRow = (kBlockN <= 128) && (128 % kBlockN == 0);
  constexpr bool kWaveSingleScaleRow = kSingleScaleRow || kWavesN > 1;
  using Mma = ptx::WgmmaFp8<kSubN>;
  static_assert(!kGrouped || kBlockM <= 128, "grouped kinds: the A-scale box (BLOCK_M + slack) must stay <= 256");
  static_assert(!kStagedOut || kStagingBytesOf<kKind, kBlockM, kBlockN> > 0,
                "the staged epilogue serves dense and grouped tiles whose width is a multiple of 64");
  constexpr int kStagingBytes = kStagedOut ? kStagingBytesOf<kKind, kBlockM, kBlockN> : 0;
  using Storage = SharedStorage<kBlockM, kBlockN, kNumStages, kStageScaleFloats, kStagingBytes>;
  static_assert(kKind == GemmKind::kDense || kClusterSize == 1, "only the plain dense kind runs in clusters");

  // The dynamic smem window starts 1024-B aligned when the kernel has no static shared memory
  // (checked below); using the array directly keeps shared-space addressing (LDS, not generic LD).
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  Storage& ss = *reinterpret_cast<Storage*>(smem_raw);
  if ((ptx::smem_u32(smem_raw) & 1023u) != 0) asm volatile("trap;");

  const int wg = __shfl_sync(0xffffffff, static_cast<int>(threadIdx.x) / 128, 0);  // warp-uniform
  const uint32_t cta_rank = kClusterSize > 1 ? ptx::cluster_cta_rank() : 0;

  if (threadIdx.x == 0) {
#pragma unroll
    for (int s = 0; s < kNumStages; ++s) {
      ptx::mbarrier_init(&ss.full[s], 1);
      // Every math warp of every CTA of the cluster releases the stage: with multicast, the peer
      // writes into this CTA's stage too, so it may refill it only once both CTAs are done with it.
      ptx::mbarrier_init(&ss.empty[s], kNumMathWarps * kClusterSize);
    }
    ptx::fence_mbarrier_init();
    ptx::fence_proxy_async_shared();
  }
  if (threadIdx.x == kNumMathWG * 128) {
    ptx::prefetch_tensormap(&tmap_a);
    ptx::prefetch_tensormap(&tmap_b);
    ptx::prefetch_tensormap(&tmap_sfa);
    if constexpr (kRowScaledB) ptx::prefetch_tensormap(&tmap_sfb);
    if constexpr (kStagingBytes > 0) ptx::prefetch_tensormap(&tmap_out);
  }
  if constexpr (kClusterSize > 1) {
    ptx::cluster_sync();  // the peer's barriers are initialised before any multicast targets them
  } else {
    __syncthreads();
  }

  auto scheduler = [&] {
    if constexpr (!kGrouped) {
      return DenseScheduler<kBlockM, kBlockN, kClusterM, kClusterN>(args.m, args.n, static_cast<int>(cta_rank),
                                                                    args.num_splits, args.raster_band);
    } else {
      return GroupedScheduler<kBlockM, kBlockN, kKind>(args.group_rows, args.num_groups, args.m, args.n,
                                                        args.rows_per_group);
    }
  }();
  using Tile = typename decltype(scheduler)::Tile;
  const int num_k_blocks = args.num_k_blocks;
  // The K blocks [begin, end) of a work unit: all of them unless split-K divides the tile.
  auto k_range = [&](const Tile& t, int& begin, int& end) {
    if constexpr (kKind == GemmKind::kDense) {
      begin = t.k_split * args.k_blocks_per_split;
      end = min(num_k_blocks, begin + args.k_blocks_per_split);
    } else if constexpr (kKind == GemmKind::kDenseRowScaledB) {
      begin = 0;
      end = num_k_blocks;
      if (args.k_block_bounds != nullptr) {  // clamped: bad bounds never read outside the operands
        begin = min(max(__ldg(args.k_block_bounds + t.k_split), 0), num_k_blocks);
        end = min(max(__ldg(args.k_block_bounds + t.k_split + 1), begin), num_k_blocks);
      }
    } else {
      begin = 0;
      end = num_k_blocks;
    }
  };
  Tile tile;

  if (wg == kNumMathWG) {
    // ------------------------------------------------------------------ producer warpgroup
    ptx::setmaxnreg_dec<kProducerRegsOf<kBlockM>>();
    if (threadIdx.x == kNumMathWG * 128) {
      int stage = 0;
      uint32_t phase = 0;
      while (scheduler.next(tile)) {
        int m0 = tile.m_block * kBlockM;
        int n0 = tile.n_block * kBlockN;
        if constexpr (kGrouped) {
          m0 += static_cast<int>(tile.row0);                // the expert's first row
          n0 += tile.group * static_cast<int>(args.n);      // its weight rows in B [G * n, k]
        }
        int kb_begin, kb_end;
        k_range(tile, kb_begin, kb_end);
        for (int kb = kb_begin; kb < kb_end; ++kb) {
          ptx::mbarrier_wait_parity(&ss.empty[stage], phase ^ 1);
          ptx::mbarrier_arrive_expect_tx(&ss.full[stage], kStageBytes);
          const int k0 = kb * kBlockK;
          if constexpr (kMulticastA) {
            if (kMulticastSlices == 2 || cta_rank == 0) {
              const int r0 = static_cast<int>(cta_rank) * kRowsA;  // 0 with a single slice
              ptx::tma_load_2d_multicast(ss.a[stage] + r0 * kBlockK, &tmap_a, &ss.full[stage], k0, m0 + r0, 0b11);
            }
          } else {
            ptx::tma_load_2d(ss.a[stage], &tmap_a, &ss.full[stage], k0, m0);
          }
          if constexpr (kMulticastB) {
            if (kMulticastSlices == 2 || cta_rank == 0) {
              const int r0 = static_cast<int>(cta_rank) * kRowsB;
              ptx::tma_load_2d_multicast(ss.b[stage] + r0 * kBlockK, &tmap_b, &ss.full[stage], k0, n0 + r0, 0b11);
            }
          } else {
            ptx::tma_load_2d(ss.b[stage], &tmap_b, &ss.full[stage], k0, n0);
          }
          ptx::tma_load_2d(ss.sfa[stage], &tmap_sfa, &ss.full[stage], kSfaSlack > 0 ? (m0 & ~3) : m0, kb);
          if constexpr (kRowScaledB) ptx::tma_load_2d(ss.sfa[stage] + kBlockM, &tmap_sfb, &ss.full[stage], n0, kb);
          if (++stage == kNumStages) stage = 0, phase ^= 1;
        }
      }
    }
  } else {
    // ------------------------------------------------------------------ math warpgroups
    ptx::setmaxnreg_inc<kMathRegsOf<kBlockM>>();
    const int lane = threadIdx.x % 32;
    const int warp = (threadIdx.x % 128) / 32;
    const int sfa_row = wg * 64 + warp * 16 + lane / 4;  // this thread's first row inside the tile
    const uint32_t a_base = ptx::smem_u32(ss.a[0]) + wg * 64 * kBlockK;
    const uint32_t b_base = ptx::smem_u32(ss.b[0]);

    // Stage release: one arrival per math warp on every CTA of the cluster (lane r -> CTA r).
    auto release = [&](int s) {
      if constexpr (kClusterSize == 1) {
        if (lane == 0) ptx::mbarrier_arrive(&ss.empty[s]);
      } else {
        if (lane < kClusterSize) ptx::mbarrier_arrive_cluster(&ss.empty[s], static_cast<uint32_t>(lane));
      }
    };

    // Software pipelining across K blocks: the wgmmas of block kb + 1 go into the second temporary
    // fragment before block kb is promoted, so the tensor cores keep working while the CUDA cores
    // promote. That needs three fragments (acc + 2 tmp) of BN/2 registers: BN <= 128 here; wider
    // tiles wait for each block's wgmmas before promoting it and rely on the other warpgroup.
    constexpr int kRegBudget = kMathRegsOf<kBlockM>;
    constexpr bool kPipelined =
        kNumWaves == 1 && 3 * Mma::kNumAccum + 40 + (kRowScaledB ? kBlockN / 4 : 0) <= kRegBudget;
    float acc[kNumWaves * Mma::kNumAccum];  // wave (wm, wn) at offset (wm * kWavesN + wn) * kNumAccum
    float tmp0[Mma::kNumAccum];
    float tmp1[kPipelined ? Mma::kNumAccum : 1];
    int stage = 0;  // next ring slot to consume
    uint32_t phase = 0;
    auto advance = [&]() {
      if (++stage == kNumStages) stage = 0, phase ^= 1;
    };
    // Low descriptor words of this warpgroup's A rows and of B in stage s (see issue_k_block).
    const uint32_t a_desc0 = ptx::opaque(ptx::smem_desc_sw128_lo(a_base));
    const uint32_t b_desc0 = ptx::opaque(ptx::smem_desc_sw128_lo(b_base));
    auto a_desc = [&](int s) { return a_desc0 + static_cast<uint32_t>(s) * (kBlockM * kBlockK / 16); };
    auto b_desc = [&](int s) { return b_desc0 + static_cast<uint32_t>(s) * (kBlockN * kBlockK / 16); };

    // B scales: with K <= 32768 each warpgroup stages the tile's two scale rows in shared memory.
    // The rows of the next tile are loaded into registers while this tile runs, stored at the start
    // of the next tile, and published with a warpgroup barrier (double buffer: no overwrite race).
    const bool sfb_in_smem = !kRowScaledB && num_k_blocks <= kMaxSfbKBlocks;
    const int wg_thread = static_cast<int>(threadIdx.x % 128);
    const int64_t num_n_scale_blocks = ceil_div<int64_t>(args.n, 128);
    // The expert's [ceil(n/128), num_k_blocks] block of B scales.
    auto b_scales_of = [&](const Tile& t) {
      if constexpr (!kGrouped) {
        return args.b_scale;
      } else {
        return args.b_scale + t.group * args.b_scale_group_stride;
      }
    };
    auto scale_rows = [&](const Tile& t, int64_t& nb0, int64_t& nb1) {
      const int64_t n0 = static_cast<int64_t>(t.n_block) * kBlockN;
      nb0 = min(n0 / 128, num_n_scale_blocks - 1);  // clamped: phantom tiles lie past n
      nb1 = max(nb0, (min(n0 + kBlockN, args.n) - 1) / 128);
    };
    float pf0[kSfbPerThread] = {}, pf1[kSfbPerThread] = {};  // prefetched scales of k-blocks wg_thread + 128 i
    auto prefetch_scales = [&](const Tile& t) {
      int64_t nb0, nb1;
      scale_rows(t, nb0, nb1);
#pragma unroll
      for (int i = 0; i < kSfbPerThread; ++i) {
        const int kbi = wg_thread + 128 * i;
        if (kbi < num_k_blocks) {
          pf0[i] = __ldg(b_scales_of(t) + nb0 * num_k_blocks + kbi);
          pf1[i] = __ldg(b_scales_of(t) + nb1 * num_k_blocks + kbi);
        }
      }
    };
    int buf = 0;

    bool has_tile = scheduler.next(tile);
    if (has_tile && sfb_in_smem) prefetch_scales(tile);
    while (has_tile) {
      Tile next_tile;
      const bool has_next = scheduler.next(next_tile);
      if (sfb_in_smem) {
#pragma unroll
        for (int i = 0; i < kSfbPerThread; ++i) {
          const int kbi = wg_thread + 128 * i;
          if (kbi < num_k_blocks) {
            ss.sfb[buf][wg][0][kbi] = pf0[i];
            ss.sfb[buf][wg][1][kbi] = pf1[i];
          }
        }
        named_barrier_sync(1 + wg, 128);
        if (has_next) prefetch_scales(next_tile);
      }
      int64_t m0 = static_cast<int64_t>(tile.m_block) * kBlockM;
      const int64_t n0 = static_cast<int64_t>(tile.n_block) * kBlockN;
      if constexpr (kGrouped) m0 += tile.row0;
      const int sfa_shift = kSfaSlack > 0 ? static_cast<int>(m0 & 3) : 0;  // see kSfaSlackOf
      // Rows at or past row_end are never stored (dense: m; grouped: the expert's end).
      auto row_end_of = [&]() -> int64_t {
        if constexpr (!kGrouped) {
          return args.m;
        } else {
          return tile.row_end;
        }
      };
      // A warpgroup whose 64 rows all lie past m (or whose tile is a phantom) only keeps the ring in step.
      const bool wg_active = tile.valid && m0 + wg * 64 < row_end_of();
      int kb_begin, kb_end;
      k_range(tile, kb_begin, kb_end);
      if (!wg_active) {
        for (int kb = kb_begin; kb < kb_end; ++kb) {
          ptx::mbarrier_wait_parity(&ss.full[stage], phase);
          release(stage);
          advance();
        }
        buf ^= 1;
        tile = next_tile;
        has_tile = has_next;
        continue;
      }

      int64_t nb0, nb1;
      scale_rows(tile, nb0, nb1);
      // 8-column groups that use nb0's scale (the rest use nb1's).
      const int num_former = (nb1 > nb0) ? static_cast<int>((128 - n0 % 128) / 8) : kBlockN / 8;
      const float* sfb0 = b_scales_of(tile) + nb0 * num_k_blocks;
      const float* sfb1 = b_scales_of(tile) + nb1 * num_k_blocks;

#pragma unroll
      for (int i = 0; i < kNumWaves * Mma::kNumAccum; ++i) acc[i] = 0.f;

      // The main loop is instantiated for both sources of the B scales and the source is chosen once
      // per tile: with a run-time choice inside the loop, ptxas computed both address paths under
      // predicates in every K block, on the path from a block's last promotion to the next issue.
      auto main_loop = [&](auto sfb_source) {
        constexpr bool kSfbInSmem = decltype(sfb_source)::value;
        auto next_b_scales = [&](int kb, float& sb0, float& sb1) {
          if constexpr (kSfbInSmem) {
            sb0 = ss.sfb[buf][wg][0][kb];
            sb1 = kSingleScaleRow ? sb0 : ss.sfb[buf][wg][1][kb];
          } else {
            sb0 = __ldg(sfb0 + kb);
            sb1 = kSingleScaleRow ? sb0 : __ldg(sfb1 + kb);
          }
        };
        // An empty K range (a K-grouped GEMM's group without rows) leaves the accumulators at zero.
        if (kb_begin < kb_end) {
          if constexpr (kPipelined) {
            // The fragment in flight across the loop back-edge is always tmp0 and no issue is
            // conditional inside the loop, so no copies of in-flight accumulator registers are needed
            // (ptxas would otherwise serialize the wgmmas, warning C7514).
            float sa0, sa1, nsa0, nsa1, sb0, sb1;
            int cur_stage, nxt_stage;
            auto wait_and_issue = [&](float* t, float& a0, float& a1, int& s_out) {
              ptx::mbarrier_wait_parity(&ss.full[stage], phase);
              a0 = ss.sfa[stage][sfa_shift + sfa_row], a1 = ss.sfa[stage][sfa_shift + sfa_row + 8];
              issue_k_block<Mma>(a_desc(stage), b_desc(stage), t);
              s_out = stage;
              advance();
            };
            auto retire = [&](int kb, float* t, int s, float a0, float a1) {
#pragma unroll
              for (int i = 0; i < Mma::kNumAccum; ++i) ptx::fence_operand(t[i]);
              if constexpr (kRowScaledB) {  // the B scales live in the stage: promote, then release it
                promote_row_scaled<kBlockN>(acc, t, a0, a1, ss.sfa[s] + kBlockM);
                release(s);
              } else {
                release(s);
                next_b_scales(kb, sb0, sb1);
                promote<kBlockN, kSingleScaleRow>(acc, t, a0, a1, sb0, sb1, num_former);
              }
            };
            wait_and_issue(tmp0, sa0, sa1, cur_stage);  // block kb_begin -> tmp0
            int kb = kb_begin;
            for (; kb + 2 < kb_end; kb += 2) {
              wait_and_issue(tmp1, nsa0, nsa1, nxt_stage);  // block kb + 1 -> tmp1
              ptx::wgmma_wait_group<1>();
              retire(kb, tmp0, cur_stage, sa0, sa1);
              wait_and_issue(tmp0, sa0, sa1, cur_stage);  // block kb + 2 -> tmp0
              ptx::wgmma_wait_group<1>();
              retire(kb + 1, tmp1, nxt_stage, nsa0, nsa1);
            }
            if (kb + 1 < kb_end) {
              wait_and_issue(tmp1, nsa0, nsa1, nxt_stage);
              ptx::wgmma_wait_group<1>();
              retire(kb, tmp0, cur_stage, sa0, sa1);
              ptx::wgmma_wait_group<0>();
              retire(kb + 1, tmp1, nxt_stage, nsa0, nsa1);
            } else {
              ptx::wgmma_wait_group<0>();
              retire(kb, tmp0, cur_stage, sa0, sa1);
            }
          } else {
            // One temporary fragment: each wave's wgmmas are waited for and promoted before the next
            // wave is issued; the other math warpgroup's wgmmas keep the tensor cores busy meanwhile.
            // Keep the path from one wave's wait to the next wave's issue short: that is the time in
            // which the other warpgroup alone must keep the tensor cores busy (ncu: the wgmma issue
            // waiting on descriptor arithmetic cost ~15% against a reference kernel).
            // A wave whose rows all lie past the end is skipped (its stores are too); the first one
            // never is (wg_active). Issue and wait of a wave sit in one branch: in-flight accumulators
            // across a control-flow merge make ptxas serialize the wgmmas (C7514).
            bool wave_active[kWavesM];
#pragma unroll
            for (int wm = 0; wm < kWavesM; ++wm) wave_active[wm] = wm == 0 || m0 + wm * 128 + wg * 64 < row_end_of();
            for (int kb = kb_begin; kb < kb_end; ++kb) {
              float sb0, sb1;
              next_b_scales(kb, sb0, sb1);
              const uint32_t stage_a_desc = a_desc(stage), stage_b_desc = b_desc(stage);
              ptx::mbarrier_wait_parity(&ss.full[stage], phase);
              float sa[kWavesM][2];
#pragma unroll
              for (int wm = 0; wm < kWavesM; ++wm) {
#pragma unroll
                for (int wn = 0; wn < kWavesN; ++wn) {
                  const bool last_wave = wm == kWavesM - 1 && wn == kWavesN - 1;
                  float* wave_acc = acc + (wm * kWavesN + wn) * Mma::kNumAccum;
                  if (wave_active[wm]) {
                    issue_k_block<Mma>(stage_a_desc + wm * 128 * kBlockK / 16, stage_b_desc + wn * kSubN * kBlockK / 16, tmp0);
                    if (wm == 0 && wn == 0) {
                      // The A scales of every wave, read while the first wave runs and before the
                      // stage can be released.
#pragma unroll
                      for (int w = 0; w < kWavesM; ++w) {
                        sa[w][0] = ss.sfa[stage][sfa_shift + sfa_row + w * 128];
                        sa[w][1] = ss.sfa[stage][sfa_shift + sfa_row + w * 128 + 8];
                      }
                    }
                    ptx::wgmma_wait_group<0>();
                  }
#pragma unroll
                  for (int i = 0; i < Mma::kNumAccum; ++i) ptx::fence_operand(tmp0[i]);
                  if constexpr (kRowScaledB) {
                    promote_row_scaled<kSubN>(wave_acc, tmp0, sa[wm][0], sa[wm][1], ss.sfa[stage] + kBlockM + wn * kSubN);
                    if (last_wave) release(stage);
                  } else {
                    if (last_wave) release(stage);
                    // Column wave wn uses scale row nb<wn> alone; a single wave splits the tile's two rows.
                    const float sb_first = wn == 0 ? sb0 : sb1;
                    promote<kSubN, kWaveSingleScaleRow>(wave_acc, tmp0, sa[wm][0], sa[wm][1], sb_first,
                                                        kWavesN > 1 ? sb_first : sb1, num_former);
                  }
                }
              }
              advance();
            }
          }
        }
      };
      if constexpr (kRowScaledB) {
        main_loop(std::false_type{});  // row-scaled B: the scales live in the stage (never sfb_in_smem)
      } else if (sfb_in_smem) {
        main_loop(std::true_type{});
      } else {
        main_loop(std::false_type{});
      }

      // K-grouped: group g's rows of out start at g * m.
      int64_t out_row0 = 0;
      if constexpr (kRowScaledB) {
        if (args.k_block_bounds != nullptr) out_row0 = static_cast<int64_t>(tile.k_split) * args.m;
      }
      bool staged = false;
      if constexpr (kStagingBytes > 0) {
        staged = !args.out_fp32 && args.num_splits == 1;
        // Grouped: only while all of this warpgroup's rows belong to the tile's expert (the TMA box
        // would write the next expert's rows); a straddling tile's warpgroup stores from registers.
        if constexpr (kGrouped) staged = staged && m0 + (kWavesM - 1) * 128 + wg * 64 + 64 <= row_end_of();
      }
      if constexpr (kStagingBytes > 0) if (staged) {
        // TMA-store epilogue: the previous tile's stores must have read the staging rows of this
        // warpgroup before they are rewritten; the stores then run while the next tile computes.
        if (wg_thread == 0) ptx::bulk_wait_group_read_0();
        named_barrier_sync(1 + wg, 128);
#pragma unroll
        for (int wm = 0; wm < kWavesM; ++wm) {
#pragma unroll
          for (int wn = 0; wn < kWavesN; ++wn) {
            stage_fragment_bf16<kBlockM, kSubN>(acc + (wm * kWavesN + wn) * Mma::kNumAccum, args, ss.d,
                                                wm * 128 + wg * 64, wn * kSubN, n0);
          }
        }
        ptx::fence_proxy_async_shared();  // generic-proxy smem writes -> visible to the TMA engine
        named_barrier_sync(1 + wg, 128);
        if (wg_thread == 0) {
#pragma unroll
          for (int wm = 0; wm < kWavesM; ++wm) {
            const int row_in_tile = wm * 128 + wg * 64;
            if (m0 + row_in_tile >= args.m) continue;
#pragma unroll
            for (int slab = 0; slab < kBlockN / 64; ++slab) {
              if (n0 + slab * 64 >= args.n) continue;
              ptx::tma_store_2d(&tmap_out, ss.d + slab * (kBlockM * 128) + row_in_tile * 128,
                                static_cast<int32_t>(n0 + slab * 64), static_cast<int32_t>(m0 + row_in_tile));
            }
          }
          ptx::bulk_commit_group();
        }
      }
      if (!staged) {
#pragma unroll
        for (int wm = 0; wm < kWavesM; ++wm) {
#pragma unroll
          for (int wn = 0; wn < kWavesN; ++wn) {
            const float* wave_acc = acc + (wm * kWavesN + wn) * Mma::kNumAccum;
            const int64_t row0 = out_row0 + m0 + wm * 128 + wg * 64, col0 = n0 + wn * kSubN;
            const int64_t row_end = out_row0 + row_end_of();
            if (kKind == GemmKind::kDense && args.num_splits > 1) {
              KernelArgs partial = args;  // this unit's FP32 slice [m, n] of the partial sums, no bias
              partial.out = args.partial + static_cast<int64_t>(tile.k_split) * args.m * args.n;
              partial.ldo = args.n;
              partial.bias = nullptr;
              store_fragment<float, kSubN>(wave_acc, partial, row0, col0, row_end);
            } else if (args.out_fp32) {
              store_fragment<float, kSubN>(wave_acc, args, row0, col0, row_end);
            } else if constexpr ((kSubN / 8) % 4 == 0) {
              // Dense tiles lying wholly inside the output take the branch-free path (measured on the
              // H200: +6-7% at 128x32768x512, +2% on the other M <= 128 shapes). The grouped kinds keep
              // the checked path until their GPU tests have run on the fast one.
              if (kKind == GemmKind::kDense && args.bias == nullptr && row0 + 64 <= row_end && col0 + kSubN <= args.n) {
                store_fragment_bf16_x16_interior<kSubN>(wave_acc, args, row0, col0);
              } else {
                store_fragment_bf16_x16<kSubN>(wave_acc, args, row0, col0, row_end);
              }
            } else {
              store_fragment<__nv_bfloat16, kSubN>(wave_acc, args, row0, col0, row_end);
            }
          }
        }
      }
      buf ^= 1;
      tile = next_tile;
      has_tile = has_next;
    }
    // Staged stores must finish reading shared memory before the CTA exits.
    if constexpr (kStagingBytes > 0) {
      if (wg_thread == 0) ptx::bulk_wait_group_0();
    }
  }
  if constexpr (kClusterSize > 1) {
    // No CTA may exit while its peer can still arrive on its barriers or multicast into its smem.
    ptx::cluster_sync();
  }
#else
  // Built for an architecture without wgmma/TMA: this kernel must never run there.
  asm volatile("trap;");
#endif
}

}  // namespace torch_fp8gemm::sm90
