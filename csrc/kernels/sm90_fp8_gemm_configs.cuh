// The compiled config list of the dense sm_90a FP8 GEMM: X(BLOCK_M, BLOCK_N, CLUSTER_M, CLUSTER_N, STAGED).
// CLUSTER_N = 2: 2-CTA cluster along N sharing (multicasting) the A tile ("mc2a");
// CLUSTER_M = 2: 2-CTA cluster along M sharing the B tile ("mc2b"). STAGED = 1: bf16 results leave
// through a shared-memory staging tile and TMA stores that overlap the next tile ("_st"; one stage
// fewer: 4096x32768x512 +20%, 4096x7168x2048 +5%, about even at K >= 7168). Stage counts follow from the
// shared-memory budget (max_stages in sm90_fp8_gemm.cuh). The index in this list is the index used
// by DenseGemmParams::forced_config and sm90_fp8_gemm_config_name. Every entry is instantiated in
// exactly one of the sm90_fp8_gemm_inst_*.cu files (so that they compile in parallel).
//
// Pruned on H200 measurements (bench/standalone/RESULTS_kernel.md): BM=64 tiles serve m <= 128
// (weight streaming, tiles >= #SMs), BM=128 x BN=128 serves large m. 112 and 144 keep the
// two-scale-row path (BN not dividing 128) and the multicast entries keep both cluster paths
// available; the heuristic currently prefers the plain configs. 128x256 and 256x128 (two waves per
// math warpgroup) and 192x128 (three math warpgroups) serve large M and N: 5-10% over 128x128 at
// M = 4096 and 8192, and 192 rows fill the SMs better where 128-row tiles leave a thin last wave.
#pragma once

#define TORCH_FP8GEMM_SM90_LIBRARY_CONFIGS(X) \
  X(64, 16, 1, 1, 0)                           \
  X(64, 32, 1, 1, 0)                           \
  X(64, 56, 1, 1, 0)                           \
  X(64, 64, 1, 1, 0)                           \
  X(64, 128, 1, 1, 0)                          \
  X(128, 32, 1, 1, 0)                          \
  X(128, 64, 1, 1, 0)                          \
  X(128, 112, 1, 1, 0)                         \
  X(128, 128, 1, 1, 0)                         \
  X(128, 144, 1, 1, 0)                         \
  X(128, 128, 1, 2, 0)                         \
  X(128, 128, 2, 1, 0)                         \
  X(128, 256, 1, 1, 0)                         \
  X(256, 128, 1, 1, 0)                         \
  X(192, 128, 1, 1, 0)                         \
  X(128, 256, 1, 1, 1)                         \
  X(256, 128, 1, 1, 1)

#define TORCH_FP8GEMM_SM90_DENSE_CONFIGS(X) \
  TORCH_FP8GEMM_SM90_LIBRARY_CONFIGS(X)     \
  TORCH_FP8GEMM_SM90_EXPERIMENT_CONFIGS(X)

// Configs compiled only into measurement builds (-DTORCH_FP8GEMM_EXPERIMENT_CONFIGS, e.g. the probe in
// bench/standalone/probe_reference_kernel.sh, or EXTRA_FLAGS of bench/standalone/build_and_run.sh),
// appended after the library's list so that the library's indices stay the same; the heuristic
// never picks them (only forced_config reaches them). The 64-row multicast tiles test whether sharing A inside a
// cluster relieves the L2->SM traffic that bounds the M <= 128 shapes (RESULTS.md, fifth session).
#ifdef TORCH_FP8GEMM_EXPERIMENT_CONFIGS
#define TORCH_FP8GEMM_SM90_EXPERIMENT_CONFIGS(X) \
  X(256, 128, 1, 2, 0)                           \
  X(256, 128, 1, 2, 1)                           \
  X(128, 256, 2, 1, 0)                           \
  X(128, 256, 2, 1, 1)                           \
  X(64, 16, 1, 2, 0)                             \
  X(64, 32, 1, 2, 0)                             \
  X(64, 64, 1, 2, 0)
#else
#define TORCH_FP8GEMM_SM90_EXPERIMENT_CONFIGS(X)
#endif
