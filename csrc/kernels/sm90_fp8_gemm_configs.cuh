// The compiled configurations of the sm_90a FP8 GEMM, as X-macro lists: one list per kind and, for
// the dense kind, one per BLOCK_M (each sm90_fp8_gemm_inst_*.cu file instantiates one list, so that
// they compile in parallel). The heuristic (sm90_fp8_gemm_heuristics.cu) builds its tables and the
// config names from the same lists. Stage counts follow from the shared-memory budget (GemmShape).
//   dense: X(BLOCK_M, BLOCK_N); grouped: X(BLOCK_M, BLOCK_N, CLUSTER_M), CLUSTER_M = 2: a 2-CTA
//   cluster of two m-blocks of one expert sharing (multicasting) its B.
// The dense set covers what the cost model picks over LLM layer shapes from M = 1 to 16384: block N
// in steps of 16 to fill the SMs, 16- and 32-row tiles for decode-sized M, 256-row tiles for large
// M and N. Dense tiles run as single CTAs: the best 2-CTA cluster lost to the best single CTA on every
// shape measured, by 3-13% (H100, forced, M-major scales, us: 128x32768x512 16.1 vs 15.2, 384x32768x512
// 24.0 vs 21.4, 512x7168x2048 21.3 vs 18.9, 768x8192x1024 18.5 vs 16.6, 192x24576x1536 27.6 vs 26.2;
// K = 7168 and m >= 1024 likewise).
#pragma once

#define TORCH_FP8GEMM_SMALL_M_CONFIGS(X, BM) \
  X(BM, 16) X(BM, 32) X(BM, 48) X(BM, 64) X(BM, 80) X(BM, 96) X(BM, 112) X(BM, 128) X(BM, 144)

#define TORCH_FP8GEMM_DENSE_BM16_CONFIGS(X) TORCH_FP8GEMM_SMALL_M_CONFIGS(X, 16)
#define TORCH_FP8GEMM_DENSE_BM32_CONFIGS(X) TORCH_FP8GEMM_SMALL_M_CONFIGS(X, 32)
#define TORCH_FP8GEMM_DENSE_BM64_CONFIGS(X) TORCH_FP8GEMM_SMALL_M_CONFIGS(X, 64)
#define TORCH_FP8GEMM_DENSE_BM128_CONFIGS(X) \
  X(128, 64) X(128, 80) X(128, 96) X(128, 112) X(128, 128) X(128, 144) X(128, 160) X(128, 192)
#define TORCH_FP8GEMM_DENSE_BM256_CONFIGS(X) X(256, 128)

#define TORCH_FP8GEMM_DENSE_CONFIGS(X)                                             \
  TORCH_FP8GEMM_DENSE_BM16_CONFIGS(X) TORCH_FP8GEMM_DENSE_BM32_CONFIGS(X)           \
  TORCH_FP8GEMM_DENSE_BM64_CONFIGS(X) TORCH_FP8GEMM_DENSE_BM128_CONFIGS(X)          \
  TORCH_FP8GEMM_DENSE_BM256_CONFIGS(X)

// MoE: X(BLOCK_M, BLOCK_N, CLUSTER_M), each for the contiguous and the masked layout, one list per BLOCK_M;
// CLUSTER_M = 2: two m-blocks of one expert's n-block share its weights (B) by multicast.
// Widths are multiples of 64: their epilogue stores the widest (128-B swizzled) TMA slabs, which
// matters at short K (the expert GEMMs of DeepSeek-V3's down projection have K = 2048); 192 for
// experts of thousands of rows (fewer tiles pull each expert's rows of A through L2); 256x128 as the
// dense kind's at large m (two 64-row waves per warpgroup), for experts of thousands of rows.
#define TORCH_FP8GEMM_GROUPED_BM64_CONFIGS(X) X(64, 64, 1) X(64, 128, 1)
#define TORCH_FP8GEMM_GROUPED_BM128_CONFIGS(X) X(128, 64, 1) X(128, 128, 1) X(128, 192, 1) X(128, 192, 2)
#define TORCH_FP8GEMM_GROUPED_BM256_CONFIGS(X) X(256, 128, 1)
#define TORCH_FP8GEMM_GROUPED_CONFIGS(X) \
  TORCH_FP8GEMM_GROUPED_BM64_CONFIGS(X) TORCH_FP8GEMM_GROUPED_BM128_CONFIGS(X) TORCH_FP8GEMM_GROUPED_BM256_CONFIGS(X)

// dense_1x128 (B scaled per 1x128 group: weight gradients), dense and K-grouped.
#define TORCH_FP8GEMM_DENSE_1X128_CONFIGS(X) X(64, 128) X(128, 128) X(128, 192)
