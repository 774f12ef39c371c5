// The sm_90a FP8 (e4m3) GEMM with DeepSeek-V3 fine-grained scaling:
//   out[m, n] = sum_k (A[m, k] * sa[m, k / 128]) * (B[n, k] * sb[n / 128, k / 128])  (+ bias[n])
// A [m, k] and B [n, k] are K-major; out [m, n] is row-major (bf16 or fp32).
// Roles (one persistent CTA per SM, 128 + 128 * kNumMathWG threads):
//   math warpgroups (1 for BLOCK_M <= 64, else 2): wgmma m64nBNk32, promotion, epilogue
//   producer warpgroup (the last): one thread issues every TMA load into a kNumStages ring
// Per 128-wide K block (one ring stage) a math warpgroup issues 4 wgmmas into a temporary fragment, waits,
// and adds sa[row] * sb[column block] * tmp to its FP32 accumulators ("promotion") while the other's run.
// BLOCK_M = 256: two 64-row waves per warpgroup (rows wave * 128 + wg * 64). BLOCK_M = 16/32 loads only that
// many rows of A (decode-sized m): the wgmma computes 64 rows, those past BLOCK_M are never stored.
// Grouped 2-CTA clusters (CLUSTER_M = 2) multicast B. B scales staged per tile, A's per stage.
// Epilogue: bf16 tiles go through a swizzled staging tile (stmatrix) and TMA stores that overlap
// the next tile's main loop; fp32 out and grouped tiles that straddle experts store from registers.
#pragma once
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "common.cuh"
#include "epilogue.cuh"
#include "promotion.cuh"
#include "ptx/mbarrier.cuh"
#include "ptx/tma.cuh"
#include "ptx/wgmma.cuh"
#include "scheduler.cuh"

namespace torch_fp8gemm::sm90 {

// K blocks of B scales staged per chunk: one per thread of a math warpgroup (K <= 16384 in one chunk).
constexpr int kSfbChunk = 128;

// Compile-time shape of a configuration (host code sizes the launch from it too).
template <int kBlockM, int kBlockN, GemmKind kKind>
struct GemmShape {
  static constexpr bool kGrouped = is_grouped(kKind);
  static constexpr bool kDense1x128 = kKind == GemmKind::kDense1x128;
  static constexpr int kNumMathWG = kBlockM <= 64 ? 1 : 2;
  static constexpr int kWavesM = kBlockM == 256 ? 2 : 1;
  static constexpr int kThreads = 128 * (kNumMathWG + 1);
  static constexpr int kMathRegs = kNumMathWG == 1 ? 248 : 232, kProducerRegs = 40;
  // A scales come in one of two layouts (the host picks by the tensor's strides):
  //   M-major [kb][m] (quantize_1x128's): with each stage a box {BM + slack, 1}, sfa[stage][r];
  //   K-major [m][kb], 16-byte rows (row-major per-token scales): with K blocks 0, 4, ... of a tile a
  //   box {4, BM} into the next slot of a ring, box[slot][4 * r + j], read 4 at once with its stage and
  //   rewritten kBoxSlots boxes later (where that is >= kStages K blocks on: k_major_ring_holds).
  // Experts start at any row, M-major boxes 16-byte aligned: at m0 & ~3, kSfaSlack floats wider (grouped).
  // A TMA box spans at most 256: 256-row grouped tiles take two boxes of 128 + slack, overlapping by the slack.
  static constexpr int kSfaSlack = kGrouped ? 4 : 0;
  static constexpr int kSfaBoxes = kBlockM + kSfaSlack > 256 ? 2 : 1, kSfaBox = kBlockM / kSfaBoxes + kSfaSlack;
  // Floats of scales per stage, M-major: A scales of the tile's rows; dense_1x128: then B's, at kBlockM.
  static constexpr int kMMajorScales = kBlockM + kSfaSlack + (kDense1x128 ? kBlockN : 0);
  static constexpr int kMMajorLoaded = kSfaBoxes * kSfaBox + (kDense1x128 ? kBlockN : 0);  // boxes may overlap
  static constexpr int kStageScales = (kMMajorScales + 31) / 32 * 32;  // 128-B aligned TMA rows
  static constexpr int kStagingBytes = kDense1x128 ? 16 : kBlockM * kBlockN * 2;  // bf16 staging tile (below)
  static constexpr int kSfbRows = 128 % kBlockN == 0 ? 1 : 2;  // 128-row scale blocks of B a tile can span
  static constexpr int kFixedBytes = kStagingBytes + 3 * kNumMathWG * kSfbRows * kSfbChunk * 4 + 3 * 1024;
  static constexpr int kStageBytes = kBlockM * kBlockK + kBlockN * kBlockK + kStageScales * 4 + 16;
  // Stages that fit beside a ring of one K-major box (16 * BM bytes) per 4 stages, or without one.
  static constexpr int stages_for(bool ring) {
    int s = 16;
    while (s > 0 && kFixedBytes + s * kStageBytes + (ring ? (s + 3) / 4 * 16 * kBlockM : 0) > kMaxSmemBytes) --s;
    return s;
  }
  // Taken where the ring costs no stage or still leaves 6 (dense 256x128: one slot beside its 3
  // stages); not by grouped 256-row tiles, whose K-major loop spills and measured no faster.
  static constexpr bool kKMajorScales = !kDense1x128 && (kWavesM == 1 || !kGrouped) &&
                                        (stages_for(true) >= 6 || stages_for(true) == stages_for(false));
  static constexpr int kStages = stages_for(kKMajorScales);
  static constexpr int kBoxSlots = kKMajorScales ? (kStages + 3) / 4 : 0;
  // Two wgmma fragments in flight per warpgroup where the registers hold them: one wave, BN <= 128,
  // and block scales (dense_1x128 keeps a column of scales per thread live through promotion).
  static constexpr bool kPipelined = !kDense1x128 && kWavesM == 1 && kBlockN <= 128;
  // bf16 tiles leave through a staging tile and TMA stores: slabs of kStagingSpan bytes per row
  // (the widest TMA swizzle dividing a row), boxes of kStoreRows rows (one warpgroup's).
  static constexpr bool kStaged = !kDense1x128;
  // The output type as a compile-time value of the tile loop (fp32 with M-major scales only), where the
  // registers allow: not dense_1x128, not 192-wide grouped tiles (their straddling stores then spill).
  static constexpr bool kOutTypeFixed = !kDense1x128 && !(kGrouped && kBlockN > 128);
  static constexpr int kStagingSpan = kBlockN % 64 == 0 ? 128 : kBlockN % 32 == 0 ? 64 : 32;
  static constexpr int kStoreRows = kBlockM < 64 ? kBlockM : 64;
  static_assert(kBlockM == 16 || kBlockM == 32 || kBlockM == 64 || kBlockM == 128 || kBlockM == 256, "BLOCK_M");
  static_assert(kBlockN % 16 == 0 && kBlockN <= (kBlockM == 256 ? 128 : 192), "BLOCK_N: registers");
  static_assert(kStages >= 3, "fewer than 3 stages cannot hide TMA latency");
};

template <int kBlockM, int kBlockN, GemmKind kKind>
struct SharedStorage {
  using S = GemmShape<kBlockM, kBlockN, kKind>;
  // 128B-swizzled operand tiles [rows][128 B] in 1024-B atoms of 8 rows; a is followed directly by
  // b, so the 64-row wgmma of a 16/32-row tile reads allocated (if meaningless) bytes.
  alignas(1024) uint8_t a[S::kStages][kBlockM * kBlockK];
  alignas(1024) uint8_t b[S::kStages][kBlockN * kBlockK];
  alignas(1024) uint8_t staging[S::kStagingBytes];  // bf16 output tile for the TMA store
  alignas(128) float sfa[S::kStages][S::kStageScales];  // M-major A scales (GemmShape); dense_1x128: B's at kBlockM
  alignas(128) float box[S::kBoxSlots > 0 ? S::kBoxSlots : 1][S::kBoxSlots > 0 ? 4 * kBlockM : 1];  // K-major ring
  float sfb[3][S::kNumMathWG][S::kSfbRows][kSfbChunk];  // [buf][wg][row][kb]: B scale rows n0 / 128 and of the last column
  uint64_t full[S::kStages];   // producer -> math: stage loaded (1 arrival + tx bytes)
  uint64_t empty[S::kStages];  // math -> producer: stage consumed (one arrival per math warp per CTA)
};

struct KernelArgs {
  const float* b_scale;  // [ceil(n/128), num_k_blocks] per expert (dense_1x128: TMA-loaded instead)
  OutView out;           // out [m, n] (K-grouped: [G * m, n]), bias
  int64_t m, n;
  int num_k_blocks;      // ceil(k / 128)
  int out_fp32;
  int a_scale_k_major;   // tmap_sfa reads K-major scales (GemmShape::kKMajorScales configurations only)
  int a_scale_packed;    // K-major rows of exactly 4 floats: tmap_sfa is 1-D (a box: pieces of kPackedPiece floats)
  DenseRaster raster;    // dense kinds: the tile walk
  // Grouped kinds: G experts, b is [G * n, k]; expert bounds (contiguous: ends, masked: sizes) as GroupedScheduler reads them.
  union { const int32_t* group_ends; const int32_t* group_sizes; };
  int num_groups;
  int64_t rows_per_group;        // masked: max_m
  int64_t b_scale_group_stride;  // floats of b_scale per expert
  // K-grouped dense_1x128: group g reduces over K blocks [bounds[g], bounds[g + 1]) into out rows
  // [g * m, (g + 1) * m) (the MoE weight gradient); nullptr: one group over every K block.
  const int32_t* k_block_bounds;
  int num_k_groups;
};

template <int kBlockM, int kBlockN, int kClusterM, GemmKind kKind>
__global__ void __launch_bounds__(GemmShape<kBlockM, kBlockN, kKind>::kThreads, 1)
    sm90_fp8_gemm_kernel(const __grid_constant__ CUtensorMap tmap_a,    // A [m, k] fp8, box {128, BM}
                         const __grid_constant__ CUtensorMap tmap_b,    // B [n, k] fp8, box {128, BN / CLUSTER_M}
                         const __grid_constant__ CUtensorMap tmap_sfa,  // A scales: [kb, m], box {BM + slack, 1}; [m, kb], box {4, BM}; packed: 1-D
                         const __grid_constant__ CUtensorMap tmap_sfb,  // dense_1x128: B scales [kb, n], box {BN, 1}
                         const __grid_constant__ CUtensorMap tmap_out,  // staged: out [m, n] bf16, box {span / 2, kStoreRows}
                         const KernelArgs args) {
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900)
  using S = GemmShape<kBlockM, kBlockN, kKind>;
  using Mma = ptx::WgmmaFp8<kBlockN>;
  constexpr int kNumStages = S::kStages, kNumMathWG = S::kNumMathWG, kWavesM = S::kWavesM;
  // B shared across the cluster: each CTA loads its share of the box and multicasts it to both.
  constexpr int kBoxRowsB = kBlockN / kClusterM;
  constexpr uint16_t kClusterMask = (1u << kClusterM) - 1;
  static_assert(kClusterM <= 2 && kBoxRowsB % 8 == 0, "2-CTA clusters, 1024-B aligned shares");
  static_assert(kClusterM == 1 || S::kGrouped, "clusters: grouped kinds only");
  static_assert(S::kSfaBox <= 256, "a TMA box spans at most 256 scales");
  // 128 % BN == 0: a tile never straddles two 128-row scale blocks of B.
  constexpr bool kSingleScaleRow = S::kSfbRows == 1;
  const bool k_major = S::kKMajorScales && args.a_scale_k_major;
  // Packed K-major rows (stride 4: K <= 512) make a box one run, loaded in pieces of <= 256 floats: its
  // 16-byte rows would each be an L2 request, to the few lines that every CTA of a small-m GEMM reads.
  constexpr int kPackedPiece = 4 * kBlockM < 256 ? 4 * kBlockM : 256;
  int slot = 0;  // K-major: the ring slot of the next box
  auto next_slot = [&] { slot = slot + 1 < S::kBoxSlots ? slot + 1 : 0; };
  const uint32_t tx_operands = (kBlockM + kBlockN) * kBlockK, tx_m_major = tx_operands + S::kMMajorLoaded * 4;

  extern __shared__ __align__(1024) uint8_t smem_raw[];
  auto& ss = *reinterpret_cast<SharedStorage<kBlockM, kBlockN, kKind>*>(smem_raw);
  const int wg = __shfl_sync(0xffffffff, static_cast<int>(threadIdx.x) / 128, 0);  // warp-uniform
  const uint32_t rank = kClusterM > 1 ? ptx::cluster_cta_rank() : 0;
  if (threadIdx.x == 0) {
    for (int s = 0; s < kNumStages; ++s) {
      ptx::mbarrier_init(&ss.full[s], 1);
      // With multicast the peer writes into this CTA's stage too: both CTAs' math warps release it.
      ptx::mbarrier_init(&ss.empty[s], kNumMathWG * 4 * kClusterM);
    }
    ptx::fence_mbarrier_init();
  }
  if (threadIdx.x == kNumMathWG * 128) {
    ptx::prefetch_tensormap(&tmap_a);
    ptx::prefetch_tensormap(&tmap_b);
    ptx::prefetch_tensormap(&tmap_sfa);
    if constexpr (S::kDense1x128) ptx::prefetch_tensormap(&tmap_sfb);
    if constexpr (S::kStaged) ptx::prefetch_tensormap(&tmap_out);
  }
  // With clusters, the peers' barriers are initialised before any multicast targets them.
  kClusterM > 1 ? ptx::cluster_sync() : __syncthreads();

  auto scheduler = [&] {
    if constexpr (S::kGrouped) {
      return GroupedScheduler<kBlockM, kBlockN, kClusterM, kKind == GemmKind::kGroupedMasked>(
          kKind == GemmKind::kGroupedMasked ? args.group_sizes : args.group_ends, args.num_groups, args.m, args.n,
          args.rows_per_group, static_cast<int>(rank));
    } else {
      return DenseScheduler(args.raster, args.m);
    }
  }();
  // The K blocks of a tile: all of them, or its K group's range (clamped: bad bounds never read
  // outside the operands).
  auto k_range = [&](const Tile& t, int& begin, int& end) {
    begin = 0, end = args.num_k_blocks;
    if (S::kDense1x128 && args.k_block_bounds != nullptr) {
      begin = min(max(__ldg(args.k_block_bounds + t.group), 0), args.num_k_blocks);
      end = min(max(__ldg(args.k_block_bounds + t.group + 1), begin), args.num_k_blocks);
    }
  };
  Tile tile;
  int stage = 0;
  uint32_t phase = 0;
  auto advance = [&] { if (++stage == kNumStages) stage = 0, phase ^= 1; };

  if (wg == kNumMathWG) {
    // ------------------------------------------------------------------ producer warpgroup
    ptx::setmaxnreg_dec<S::kProducerRegs>();
    if (threadIdx.x / 32 == kNumMathWG * 4 && ptx::elect_one_sync()) {
      while (scheduler.next(tile)) {
        const int m0 = static_cast<int>(tile.row0) + tile.m_block * kBlockM;
        const int n0 = tile.n_block * kBlockN + (S::kGrouped ? tile.group * static_cast<int>(args.n) : 0);
        int kb_begin, kb_end;
        k_range(tile, kb_begin, kb_end);
        for (int kb = kb_begin; kb < kb_end; ++kb, advance()) {
          ptx::mbarrier_wait_parity(&ss.empty[stage], phase ^ 1);
          uint64_t* full = &ss.full[stage];
          ptx::mbarrier_arrive_expect_tx(full, !k_major ? tx_m_major : tx_operands + ((kb & 3) == 0 ? 16 * kBlockM : 0));
          const int k0 = kb * kBlockK;
          ptx::tma_load_2d(ss.a[stage], &tmap_a, full, k0, m0);
          if constexpr (kClusterM == 2) {
            ptx::tma_load_2d_multicast(ss.b[stage] + rank * kBoxRowsB * kBlockK, &tmap_b, full, k0, n0 + rank * kBoxRowsB, kClusterMask);
          } else {
            ptx::tma_load_2d(ss.b[stage], &tmap_b, full, k0, n0);
          }
          if (k_major && (kb & 3) == 0) {
            for (int i = 0; args.a_scale_packed && i < 4 * kBlockM; i += kPackedPiece) {
              ptx::tma_load_1d(ss.box[slot] + i, &tmap_sfa, full, 4 * m0 + i);
            }
            if (!args.a_scale_packed) ptx::tma_load_2d(ss.box[slot], &tmap_sfa, full, kb, m0);
            next_slot();
          } else if (!k_major) {
            for (int r = 0; r < kBlockM; r += kBlockM / S::kSfaBoxes) {
              ptx::tma_load_2d(ss.sfa[stage] + r, &tmap_sfa, full, (S::kSfaSlack > 0 ? (m0 & ~3) : m0) + r, kb);
            }
          }
          if constexpr (S::kDense1x128) ptx::tma_load_2d(ss.sfa[stage] + kBlockM, &tmap_sfb, full, n0, kb);
        }
      }
    }
  } else {
    // ------------------------------------------------------------------ math warpgroups
    ptx::setmaxnreg_inc<S::kMathRegs>();
    const int lane = threadIdx.x % 32, warp = (threadIdx.x % 128) / 32, wg_thread = threadIdx.x % 128;
    const int sfa_row = wg * 64 + warp * 16 + lane / 4;  // this thread's first row in the tile
    float4 sfa_group[kWavesM][2];                        // K-major: this thread's rows' scales of 4 K blocks
    // Low descriptor words of this warpgroup's A rows and of B in stage 0 (ptx::smem_desc_sw128_lo).
    const uint32_t a_desc0 = ptx::opaque(ptx::smem_desc_sw128_lo(ptx::smem_u32(ss.a[0]) + wg * 64 * kBlockK));
    const uint32_t b_desc0 = ptx::opaque(ptx::smem_desc_sw128_lo(ptx::smem_u32(ss.b[0])));
    // One arrival per math warp on every CTA of the cluster (lane r -> CTA r).
    auto release = [&](int s) {
      if (kClusterM == 1 && lane == 0) ptx::mbarrier_arrive(&ss.empty[s]);
      if (kClusterM > 1 && lane < kClusterM) ptx::mbarrier_arrive_cluster(&ss.empty[s], static_cast<uint32_t>(lane));
    };
    // f(k_major, out_fp32) as std::bool_constant values (out_fp32 read at run time without kOutTypeFixed).
    auto with_variant = [&](auto&& f) {
      if (S::kOutTypeFixed && args.out_fp32) return f(std::false_type{}, std::true_type{});
      if (k_major) return f(std::true_type{}, std::false_type{});  // constant false without the ring
      f(std::false_type{}, std::false_type{});
    };
    float acc[kWavesM * Mma::kNumAccum], tmp[Mma::kNumAccum];
    // B scale rows of a tile: n0 / 128 and the block of its last column (clamped: phantom tiles lie
    // past n); groups i < num_former of a fragment use the first.
    auto scale_rows = [&](const Tile& t, int64_t& nb0, int64_t& nb1) {
      const int64_t n0 = static_cast<int64_t>(t.n_block) * kBlockN, last = (args.n - 1) / 128;
      nb0 = min(n0 / 128, last), nb1 = max(nb0, min((min(n0 + kBlockN, args.n) - 1) / 128, last));
      return args.b_scale + (S::kGrouped ? t.group * args.b_scale_group_stride : 0);
    };
    // B scales reach shared memory by cp.async, per chunk K blocks [kc, kc + kSfbChunk) of a tile's two
    // rows. With K <= kSfbChunk * 128 (one chunk) a tile's copy is issued while the tile before runs, so no
    // tile starts by waiting on global memory (short K: 4 K blocks per tile). It is issued where the
    // accumulators are dead (192-wide tiles have no registers to spare), into the third buffer: its last
    // readers, two tiles back, have all passed the previous tile's barrier. Longer K copies each chunk as it starts.
    const bool one_chunk = !S::kDense1x128 && args.num_k_blocks <= kSfbChunk;
    auto copy_sfb = [&](const Tile& t, int kc, int into) {
      int64_t nb0, nb1;
      const float* src = scale_rows(t, nb0, nb1) + kc + wg_thread;
      float* sfb = ss.sfb[into][wg][0] + wg_thread;
      if (kc + wg_thread < args.num_k_blocks) {
        ptx::cp_async_4(sfb, src + nb0 * args.num_k_blocks);
        if (!kSingleScaleRow) ptx::cp_async_4(sfb + kSfbChunk, src + nb1 * args.num_k_blocks);
      }
      ptx::cp_async_commit();
    };
    int buf = 0;
    auto rotate = [](int b) { return b == 2 ? 0 : b + 1; };
    Tile next;
    bool has_tile = scheduler.next(tile);
    if (has_tile && one_chunk) copy_sfb(tile, 0, buf);
    // Scale layout and output type are compile-time values for the whole tile loop: no branch on the layout
    // in the main loop, no register moves per tile (~130) where the bf16 and fp32 epilogues would join.
    with_variant([&](auto k_major_c, auto out_fp32_c) {
      const bool out_fp32 = S::kOutTypeFixed ? decltype(out_fp32_c)::value : args.out_fp32 != 0;
      for (; has_tile; tile = next) {
        has_tile = scheduler.next(next);
        if (one_chunk) {
          if (has_tile) copy_sfb(next, 0, rotate(buf));
          else ptx::cp_async_commit();  // an empty group: cp_async_wait<1> below still waits for this tile's
        }
        const int64_t m0 = tile.row0 + static_cast<int64_t>(tile.m_block) * kBlockM;
        const int64_t n0 = static_cast<int64_t>(tile.n_block) * kBlockN;
        const int sfa_shift = S::kSfaSlack > 0 ? static_cast<int>(m0 & 3) : 0;  // M-major grouped boxes
        int kb_begin, kb_end;
        k_range(tile, kb_begin, kb_end);
        // A warpgroup whose rows all lie past the end (or whose tile is a phantom) keeps the ring in step.
        if (!tile.valid || m0 + wg * 64 >= tile.row_end) {
          ptx::named_barrier_sync(1 + wg, 128);  // as a computed tile's (the buffers rotate per tile)
          buf = rotate(buf);
          for (int kb = kb_begin; kb < kb_end; ++kb, advance()) {
            ptx::mbarrier_wait_parity(&ss.full[stage], phase);
            release(stage);
            if (k_major && (kb & 3) == 0) next_slot();
          }
          continue;
        }
        int64_t nb0, nb1;
        scale_rows(tile, nb0, nb1);
        const int num_former = nb1 > nb0 ? static_cast<int>((128 - n0 % 128) / 8) : kBlockN / 8;
#pragma unroll
        for (int i = 0; i < kWavesM * Mma::kNumAccum; ++i) acc[i] = 0.f;

        with_num_former<kBlockN>(num_former, [&](auto former) {
          for (int kc = kb_begin; kc < kb_end; kc += kSfbChunk) {
            const int kc_end = min(kb_end, kc + kSfbChunk);
            float* sfb = ss.sfb[buf][wg][0];
            if constexpr (!S::kDense1x128) {
              if (one_chunk) {
                ptx::cp_async_wait<1>();
              } else {
                copy_sfb(tile, kc, buf);
                ptx::cp_async_wait<0>();
              }
              ptx::named_barrier_sync(1 + wg, 128);
            }
            buf = rotate(buf);
            // What a K block is promoted with: sa0, sa1 (this thread's rows), sb0, sb1, and its stage.
            struct Block { float sa0, sa1, sb0, sb1; int stage; };
            // Waits for block kb's stage (wave 0), reads its scales for wave w (A's before the stage is released).
            auto read_scales = [&](int kb, Block& blk, int w) {
              if (w == 0) {
                blk.sb0 = sfb[kb - kc], blk.sb1 = kSingleScaleRow ? blk.sb0 : sfb[kSfbChunk + kb - kc];
                blk.stage = stage;
                ptx::mbarrier_wait_parity(&ss.full[stage], phase);
              }
              if constexpr (decltype(k_major_c)::value) {
                if ((kb & 3) == 0) {
                  const float4* sa = reinterpret_cast<const float4*>(ss.box[slot]) + sfa_row + w * 128;
                  sfa_group[w][0] = sa[0], sfa_group[w][1] = sa[8];
                  if (w == kWavesM - 1) next_slot();
                }
                blk.sa0 = float4_at(sfa_group[w][0], kb & 3), blk.sa1 = float4_at(sfa_group[w][1], kb & 3);
              } else {
                const float* sa = ss.sfa[blk.stage] + sfa_shift + sfa_row + w * 128;
                blk.sa0 = sa[0], blk.sa1 = sa[8];
              }
            };
            auto issue = [&](float* t, const Block& blk, int w) {
              issue_k_block<Mma>(a_desc0 + blk.stage * (kBlockM * kBlockK / 16) + w * (128 * kBlockK / 16),
                                 b_desc0 + blk.stage * (kBlockN * kBlockK / 16), t);
            };
            auto retire = [&](const float* t, const Block& blk, int w) {
              float* a = acc + w * Mma::kNumAccum;
              if constexpr (S::kDense1x128) {
                promote_dense_1x128<kBlockN>(a, t, blk.sa0, blk.sa1, ss.sfa[blk.stage] + kBlockM);
                if (w == kWavesM - 1) release(blk.stage);
              } else {
                if (w == kWavesM - 1) release(blk.stage);
                promote<kBlockN, kSingleScaleRow, decltype(former)::value>(a, t, blk.sa0, blk.sa1, blk.sb0, blk.sb1, num_former);
              }
            };
            if constexpr (S::kPipelined) {
              // Two fragments in flight: block kb + 1 is issued before block kb is promoted, so the
              // tensor cores work through the promotion, the barrier wait and the scale loads.
              float t1[Mma::kNumAccum];
              Block b0, b1;
              int kb = kc;
              read_scales(kb, b0, 0);
              issue(tmp, b0, 0);
              advance();
              // Retires `cur` after issuing the next block into `nxt`, or last; false once it was the last.
              auto step = [&](float* cur, const Block& cur_blk, float* nxt, Block& nxt_blk) {
                if (++kb < kc_end) {
                  read_scales(kb, nxt_blk, 0);
                  issue(nxt, nxt_blk, 0);
                  advance();
                  wait_k_block<Mma>(cur, true);
                  retire(cur, cur_blk, 0);
                  return true;
                }
                wait_k_block<Mma>(cur, false);
                retire(cur, cur_blk, 0);
                return false;
              };
              while (step(tmp, b0, t1, b1) && step(t1, b1, tmp, b0)) {
              }
            } else {
              // One fragment: the next wave's (or block's) stage wait and scale reads run under this wgmma.
              Block cur;
              read_scales(kc, cur, 0);
              for (int kb = kc; kb < kc_end; ++kb) {
#pragma unroll
                for (int w = 0; w < kWavesM; ++w) {
                  issue(tmp, cur, w);
                  Block nxt = cur;
                  if (w + 1 < kWavesM) {
                    read_scales(kb, nxt, w + 1);
                  } else {
                    advance();
                    if (kb + 1 < kc_end) read_scales(kb + 1, nxt, 0);
                  }
                  wait_k_block<Mma>(tmp, false);
                  retire(tmp, cur, w);
                  cur = nxt;
                }
              }
            }
          }
        });

        // Epilogue. K-grouped: group g's rows of out start at g * m.
        if (args.out.bias != nullptr) {
          if (out_fp32) add_bias<float, kBlockN, kWavesM>(acc, args.out.bias, args.n, n0);
          else add_bias<__nv_bfloat16, kBlockN, kWavesM>(acc, args.out.bias, args.n, n0);
        }
        const int64_t out_row0 = S::kDense1x128 && args.k_block_bounds != nullptr ? tile.group * args.m : 0;
        const int64_t row_end = out_row0 + min(tile.row_end, m0 + kBlockM);
        bool staged = !out_fp32;
        // Grouped: a TMA box cannot stop at the expert's last row; a straddling warpgroup stores from registers.
        if constexpr (S::kGrouped) staged = staged && m0 + (kWavesM - 1) * 128 + wg * 64 + 64 <= tile.row_end;
        if constexpr (S::kStaged) {
          if (staged) {
            store_tile_staged<kBlockM, kBlockN, kWavesM, S::kStagingSpan, S::kStoreRows>(acc, ss.staging, &tmap_out, wg, m0, n0,
                                                                                  tile.row_end, args.n);
            continue;
          }
        }
#pragma unroll
        for (int w = 0; w < kWavesM; ++w) {
          const int64_t row0 = out_row0 + m0 + w * 128 + wg * 64;
          if (out_fp32) {
            store_fragment<float, kBlockN>(acc + w * Mma::kNumAccum, args.out, row0, n0, row_end);
          } else if constexpr (S::kGrouped || !S::kStaged) {  // dense bf16 tiles are always staged
            store_fragment_direct<__nv_bfloat16, kBlockN>(acc + w * Mma::kNumAccum, args.out, row0, n0, row_end);
          }
        }
      }
    });
    // TMA stores must finish reading shared memory before the CTA exits.
    if (S::kStaged && wg_thread < kBlockN * 2 / S::kStagingSpan) ptx::bulk_wait_group_0();
    ptx::cp_async_wait<0>();  // a skipped last tile's scale copy
  }
  // No CTA of a cluster may exit while a peer can still arrive on its barriers or multicast into its smem.
  if constexpr (kClusterM > 1) ptx::cluster_sync();
#else
  asm volatile("trap;");  // built for an architecture without wgmma / TMA: never runs there
#endif
}

}  // namespace torch_fp8gemm::sm90
