// The sm_90a FP8 (e4m3) GEMM with DeepSeek-V3 fine-grained scaling:
//   out[m, n] = sum_k (A[m, k] * sa[m, k / 128]) * (B[n, k] * sb[n / 128, k / 128])  (+ bias[n])
// A [m, k] and B [n, k] are K-major; out [m, n] is row-major (bf16 or fp32).
//
// Roles (one persistent CTA per SM):
//   warpgroups 0 .. kNumMathWG-1  math: wgmma m64nBNk32 on 64 rows each, promotion, epilogue
//   warpgroup  kNumMathWG         producer: one thread issues every TMA load into a kNumStages ring
// Per 128-wide K block (one ring stage) a math warpgroup issues 4 wgmmas into a temporary fragment
// (the first with scale-d = 0), waits, releases the stage, then adds sa[row] * sb[col-block] * tmp into
// the FP32 accumulators ("promotion"). With two math warpgroups, one promotes while the other's
// wgmmas run on the tensor cores.
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

// Shared memory of one CTA. The host takes sizeof() of this struct, so device offsets and the
// launch's smem size come from one definition.
template <int kBlockM, int kBlockN, int kNumStages>
struct SharedStorage {
  static_assert(kBlockN % 8 == 0, "BLOCK_N must be a multiple of 8 so B stages stay 1024-B aligned");
  static_assert(kBlockM % 64 == 0, "BLOCK_M is a multiple of the 64-row wgmma");
  // 128B-swizzled operand tiles: [rows][128 bytes], 8-row atoms of 1024 B, atoms 1024-B aligned.
  alignas(1024) uint8_t a[kNumStages][kBlockM * kBlockK];
  alignas(1024) uint8_t b[kNumStages][kBlockN * kBlockK];
  // A scales of the stage's K block: sfa[s][r] = a_scale[kb, m0 + r] (TMA, same barrier as A/B).
  alignas(128) float sfa[kNumStages][kBlockM];
  uint64_t full[kNumStages];   // producer -> math: stage loaded (1 arrival + tx bytes)
  uint64_t empty[kNumStages];  // math -> producer: stage consumed (one arrival per math warp)
};

// Largest stage count that fits (with 1 KB slack for aligning the dynamic smem base), capped.
template <int kBlockM, int kBlockN, int kCap = 12>
constexpr int max_stages() {
  constexpr int per_stage = kBlockM * kBlockK + kBlockN * kBlockK + kBlockM * 4 + 16;
  int s = (kMaxSmemBytes - 1024 - 1024) / per_stage;
  return s > kCap ? kCap : s;
}

struct KernelArgs {
  const float* b_scale;  // [ceil(n/128), num_k_blocks] row-major
  const void* bias;      // [n] in the output dtype, or nullptr
  void* out;             // [m, n] row-major, row stride ldo (elements)
  int64_t m, n, k;
  int64_t ldo;
  int num_k_blocks;  // ceil(k / 128)
  int out_fp32;      // 0: bf16 out, 1: fp32 out
};

template <int kBlockM, int kBlockN, int kNumStages>
constexpr int num_threads() {
  return (kBlockM / 64 + 1) * 128;
}

// Epilogue of one 64-row warpgroup slice: direct (masked) stores from the accumulator fragment.
// Fragment layout (PTX ISA "Matrix fragments for wgmma .m64nNk32", f32 accumulator): in 8-column
// group i, registers 4i, 4i+1 hold row (warp*16 + lane/4), columns 8i + 2*(lane%4) + {0,1};
// registers 4i+2, 4i+3 hold the same columns of row + 8.
template <typename OutT, int kBlockN>
__device__ __forceinline__ void store_fragment(const float* acc, const KernelArgs& args, int64_t row0, int64_t col0) {
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
      if (r >= args.m) continue;
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

template <int kBlockM, int kBlockN, int kNumStages>
__global__ void __launch_bounds__(num_threads<kBlockM, kBlockN, kNumStages>(), 1)
    sm90_fp8_gemm_kernel(const __grid_constant__ CUtensorMap tmap_a,    // A   [m, k] fp8, box {128, BM}, 128B swizzle
                         const __grid_constant__ CUtensorMap tmap_b,    // B   [n, k] fp8, box {128, BN}, 128B swizzle
                         const __grid_constant__ CUtensorMap tmap_sfa,  // SFA [kb, m] fp32, box {BM, 1}
                         const KernelArgs args) {
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900)
  constexpr int kNumMathWG = kBlockM / 64;
  constexpr int kNumMathWarps = kNumMathWG * 4;
  constexpr uint32_t kStageBytes = kBlockM * kBlockK + kBlockN * kBlockK + kBlockM * 4;
  // 128 % BN == 0: a tile never straddles two 128-row scale blocks of B.
  constexpr bool kSingleScaleRow = (kBlockN <= 128) && (128 % kBlockN == 0);
  using Mma = ptx::WgmmaFp8<kBlockN>;
  using Storage = SharedStorage<kBlockM, kBlockN, kNumStages>;

  // The dynamic smem window starts 1024-B aligned when the kernel has no static shared memory
  // (checked below); using the array directly keeps shared-space addressing (LDS, not generic LD).
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  Storage& ss = *reinterpret_cast<Storage*>(smem_raw);
  if ((ptx::smem_u32(smem_raw) & 1023u) != 0) asm volatile("trap;");

  const int wg = __shfl_sync(0xffffffff, static_cast<int>(threadIdx.x) / 128, 0);  // warp-uniform

  if (threadIdx.x == 0) {
#pragma unroll
    for (int s = 0; s < kNumStages; ++s) {
      ptx::mbarrier_init(&ss.full[s], 1);
      ptx::mbarrier_init(&ss.empty[s], kNumMathWarps);
    }
    ptx::fence_mbarrier_init();
    ptx::fence_proxy_async_shared();
  }
  if (threadIdx.x == kNumMathWG * 128) {
    ptx::prefetch_tensormap(&tmap_a);
    ptx::prefetch_tensormap(&tmap_b);
    ptx::prefetch_tensormap(&tmap_sfa);
  }
  __syncthreads();

  DenseScheduler<kBlockM, kBlockN> scheduler(args.m, args.n);
  const int num_k_blocks = args.num_k_blocks;
  TileCoord tile;

  if (wg == kNumMathWG) {
    // ------------------------------------------------------------------ producer warpgroup
    ptx::setmaxnreg_dec<40>();
    if (threadIdx.x == kNumMathWG * 128) {
      int stage = 0;
      uint32_t phase = 0;
      while (scheduler.next(tile)) {
        const int m0 = tile.m_block * kBlockM;
        const int n0 = tile.n_block * kBlockN;
        for (int kb = 0; kb < num_k_blocks; ++kb) {
          ptx::mbarrier_wait_parity(&ss.empty[stage], phase ^ 1);
          ptx::mbarrier_arrive_expect_tx(&ss.full[stage], kStageBytes);
          ptx::tma_load_2d(ss.a[stage], &tmap_a, &ss.full[stage], kb * kBlockK, m0);
          ptx::tma_load_2d(ss.b[stage], &tmap_b, &ss.full[stage], kb * kBlockK, n0);
          ptx::tma_load_2d(ss.sfa[stage], &tmap_sfa, &ss.full[stage], m0, kb);
          if (++stage == kNumStages) stage = 0, phase ^= 1;
        }
      }
    }
  } else {
    // ------------------------------------------------------------------ math warpgroups
    if constexpr (kNumMathWG == 2) {
      ptx::setmaxnreg_inc<232>();  // 2 * 128 * 232 + 128 * 40 = 64512 <= 65536
    } else {
      ptx::setmaxnreg_inc<240>();
    }
    const int lane = threadIdx.x % 32;
    const int warp = (threadIdx.x % 128) / 32;
    const int sfa_row = wg * 64 + warp * 16 + lane / 4;  // this thread's first row inside the tile
    const uint32_t a_base = ptx::smem_u32(ss.a[0]) + wg * 64 * kBlockK;
    const uint32_t b_base = ptx::smem_u32(ss.b[0]);

    float acc[Mma::kNumAccum];
    float tmp[Mma::kNumAccum];
    int stage = 0;
    uint32_t phase = 0;

    while (scheduler.next(tile)) {
      const int64_t m0 = static_cast<int64_t>(tile.m_block) * kBlockM;
      const int64_t n0 = static_cast<int64_t>(tile.n_block) * kBlockN;
      // A warpgroup whose 64 rows all lie past m only keeps the ring in step.
      const bool wg_active = m0 + wg * 64 < args.m;

      // B scale rows touched by this tile: nb0 and (if the valid columns cross a 128 boundary) nb1.
      const int64_t nb0 = n0 / 128;
      const int64_t n_end = min(n0 + kBlockN, args.n);
      const int64_t nb1 = (n_end - 1) / 128;
      // 8-column groups that use nb0's scale (the rest use nb1's).
      const int num_former = (nb1 > nb0) ? static_cast<int>((128 - n0 % 128) / 8) : kBlockN / 8;
      const float* sfb0 = args.b_scale + nb0 * num_k_blocks;
      const float* sfb1 = args.b_scale + nb1 * num_k_blocks;
      float sb0_next = __ldg(sfb0);
      float sb1_next = kSingleScaleRow ? 0.f : __ldg(sfb1);

#pragma unroll
      for (int i = 0; i < Mma::kNumAccum; ++i) acc[i] = 0.f;

      for (int kb = 0; kb < num_k_blocks; ++kb) {
        // B scales of this block were loaded one iteration ahead; issue the next block's loads now.
        const float sb0 = sb0_next, sb1 = sb1_next;
        if (kb + 1 < num_k_blocks) {
          sb0_next = __ldg(sfb0 + kb + 1);
          if constexpr (!kSingleScaleRow) sb1_next = __ldg(sfb1 + kb + 1);
        }
        ptx::mbarrier_wait_parity(&ss.full[stage], phase);
#ifdef TORCH_FP8GEMM_EXP_NO_MMA  // experiment: pipeline only (TMA + barriers), no tensor-core work
        if (false) {
#else
        if (wg_active) {
#endif
          // Read the A scales before the stage can be released.
          const float sa0 = ss.sfa[stage][sfa_row];
          const float sa1 = ss.sfa[stage][sfa_row + 8];
#pragma unroll
          for (int i = 0; i < Mma::kNumAccum; ++i) ptx::fence_operand(tmp[i]);
          ptx::wgmma_fence();
#pragma unroll
          for (int j = 0; j < kBlockK / 32; ++j) {
            const uint64_t da = ptx::make_smem_desc_sw128(a_base + stage * (kBlockM * kBlockK) + j * 32);
            const uint64_t db = ptx::make_smem_desc_sw128(b_base + stage * (kBlockN * kBlockK) + j * 32);
            Mma::mma(da, db, tmp, j > 0 ? 1 : 0);
          }
          ptx::wgmma_commit_group();
          ptx::wgmma_wait_group<0>();
#pragma unroll
          for (int i = 0; i < Mma::kNumAccum; ++i) ptx::fence_operand(tmp[i]);
          if (lane == 0) ptx::mbarrier_arrive(&ss.empty[stage]);

#ifdef TORCH_FP8GEMM_EXP_NO_PROMOTE  // experiment: skip the promotion FFMAs
          if (kb != num_k_blocks + 7) { if (++stage == kNumStages) stage = 0, phase ^= 1; continue; }
#endif
          // Promotion: acc += sa[row] * sb[col block] * tmp.
          const float s00 = sa0 * sb0, s10 = sa1 * sb0;
          const float s01 = kSingleScaleRow ? s00 : sa0 * sb1;
          const float s11 = kSingleScaleRow ? s10 : sa1 * sb1;
#pragma unroll
          for (int i = 0; i < kBlockN / 8; ++i) {
            const bool former = kSingleScaleRow || i < num_former;
            const float f0 = former ? s00 : s01;
            const float f1 = former ? s10 : s11;
            acc[4 * i + 0] = fmaf(f0, tmp[4 * i + 0], acc[4 * i + 0]);
            acc[4 * i + 1] = fmaf(f0, tmp[4 * i + 1], acc[4 * i + 1]);
            acc[4 * i + 2] = fmaf(f1, tmp[4 * i + 2], acc[4 * i + 2]);
            acc[4 * i + 3] = fmaf(f1, tmp[4 * i + 3], acc[4 * i + 3]);
          }
        } else {
          if (lane == 0) ptx::mbarrier_arrive(&ss.empty[stage]);
        }
        if (++stage == kNumStages) stage = 0, phase ^= 1;
      }

      if (wg_active) {
        if (args.out_fp32) {
          store_fragment<float, kBlockN>(acc, args, m0 + wg * 64, n0);
        } else {
          store_fragment<__nv_bfloat16, kBlockN>(acc, args, m0 + wg * 64, n0);
        }
      }
    }
  }
#else
  // Built for an architecture without wgmma/TMA: this kernel must never run there.
  asm volatile("trap;");
#endif
}

}  // namespace torch_fp8gemm::sm90
