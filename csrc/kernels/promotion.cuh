// One 128-wide K block of the sm_90a FP8 GEMM's main loop: its wgmma group into a temporary
// fragment, the wait for it, and the promotion of the fragment into the FP32 accumulators with the
// block's scales (DeepSeek-V3: FP32 accumulation promoted every 128 of K).
#pragma once
#include <type_traits>

#include "common.cuh"
#include "ptx/wgmma.cuh"

namespace torch_fp8gemm::sm90 {

// v.x, v.y, v.z or v.w (i = 0..3) without local memory: K-major A scales, 4 K blocks per load.
__device__ __forceinline__ float float4_at(const float4& v, int i) { return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w; }

// The four k32 wgmmas of one 128-wide K block into `t` (scale-d = 0 on the first, so `t` needs no
// zeroing), committed as one group. a_desc / b_desc: low descriptor words; a 32-byte K step adds 2.
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

// Waits for the wgmma group that filled `t`: every committed group, or all but the newest one
// (`one_pending`: a later block's group is in flight). The operand fences keep reads of `t` after it.
template <typename Mma>
__device__ __forceinline__ void wait_k_block(float* t, bool one_pending) {
  if (one_pending) {
    ptx::wgmma_wait_group<1>();
  } else {
    ptx::wgmma_wait_group<0>();
  }
#pragma unroll
  for (int i = 0; i < Mma::kNumAccum; ++i) ptx::fence_operand(t[i]);
}

// acc += sa[row] * sb * t. 8-column groups i < num_former use B scale row 0 (sb0), the rest row 1
// (sb1): a select per group, not two loops, keeps the FFMAs in one straight run. kNumFormer >= 0
// is num_former as a compile-time value: the selects then fold away.
template <int kBlockN, bool kSingleScaleRow, int kNumFormer>
__device__ __forceinline__ void promote(float* acc, const float* t, float sa0, float sa1, float sb0, float sb1,
                                        int num_former) {
  if constexpr (kNumFormer >= 0) num_former = kNumFormer;
  const float s00 = sa0 * sb0, s10 = sa1 * sb0;
  const float s01 = kSingleScaleRow ? s00 : sa0 * sb1, s11 = kSingleScaleRow ? s10 : sa1 * sb1;
#pragma unroll
  for (int i = 0; i < kBlockN / 8; ++i) {
    const bool former = kSingleScaleRow || i < num_former;
    acc[4 * i + 0] = fmaf(former ? s00 : s01, t[4 * i + 0], acc[4 * i + 0]);
    acc[4 * i + 1] = fmaf(former ? s00 : s01, t[4 * i + 1], acc[4 * i + 1]);
    acc[4 * i + 2] = fmaf(former ? s10 : s11, t[4 * i + 2], acc[4 * i + 2]);
    acc[4 * i + 3] = fmaf(former ? s10 : s11, t[4 * i + 3], acc[4 * i + 3]);
  }
}

// Calls f(integral_constant<num_former>) for the tile widths whose tiles start at few distinct
// offsets inside a 128-column scale block (gcd(BN, 128) >= 32: at most 4), f(integral_constant<-1>)
// (num_former at run time) for the others and for widths that divide 128 (one scale row). A tile at
// n0 = j * BN has num_former (128 - n0 % 128) / 8 where it straddles two blocks, else BN / 8: a
// multiple of gcd(BN, 128) / 8 up to BN / 8, so the last candidate needs no test.
constexpr int gcd128(int n) { return n % 128 == 0 ? 128 : n % 64 == 0 ? 64 : n % 32 == 0 ? 32 : n % 16 == 0 ? 16 : 8; }
template <int kBlockN, int kValue = gcd128(kBlockN) / 8, typename F>
__device__ __forceinline__ void with_num_former(int num_former, F&& f) {
  constexpr bool kDispatch = 128 % kBlockN != 0 && gcd128(kBlockN) >= 32;
  if constexpr (!kDispatch) {
    f(std::integral_constant<int, -1>{});
  } else if constexpr (kValue + gcd128(kBlockN) / 8 > kBlockN / 8) {
    f(std::integral_constant<int, kValue>{});
  } else if (num_former == kValue) {
    f(std::integral_constant<int, kValue>{});
  } else {
    with_num_former<kBlockN, kValue + gcd128(kBlockN) / 8>(num_former, f);
  }
}

// dense_1x128 (B scaled per 1x128 group): column c gets sa[row] * sb[c], sb read from the stage. A thread's
// columns 8i + 2q + {0, 1} are one float2; the 4 quads of a warp read 4 distinct float2 (conflict-free).
template <int kBlockN>
__device__ __forceinline__ void promote_dense_1x128(float* acc, const float* t, float sa0, float sa1, const float* sb) {
  const int q = threadIdx.x % 4;
#pragma unroll
  for (int i = 0; i < kBlockN / 8; ++i) {
    const float2 s = *reinterpret_cast<const float2*>(sb + 8 * i + 2 * q);
    acc[4 * i + 0] = fmaf(sa0 * s.x, t[4 * i + 0], acc[4 * i + 0]);
    acc[4 * i + 1] = fmaf(sa0 * s.y, t[4 * i + 1], acc[4 * i + 1]);
    acc[4 * i + 2] = fmaf(sa1 * s.x, t[4 * i + 2], acc[4 * i + 2]);
    acc[4 * i + 3] = fmaf(sa1 * s.y, t[4 * i + 3], acc[4 * i + 3]);
  }
}

}  // namespace torch_fp8gemm::sm90
