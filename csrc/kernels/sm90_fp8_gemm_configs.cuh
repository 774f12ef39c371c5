// The compiled config list (BLOCK_M, BLOCK_N) of the dense sm_90a FP8 GEMM. Stage counts follow from
// the shared-memory budget (max_stages in sm90_fp8_gemm.cuh). Index order here is the index used by
// DenseGemmParams::forced_config and sm90_fp8_gemm_config_name. Each entry is instantiated in one
// of the sm90_fp8_gemm_inst_*.cu files (so they compile in parallel).
#pragma once

// X(BLOCK_M, BLOCK_N)
#define TORCH_FP8GEMM_SM90_DENSE_CONFIGS(X) \
  X(64, 16)                                 \
  X(64, 32)                                 \
  X(64, 56)                                 \
  X(64, 64)                                 \
  X(64, 112)                                \
  X(64, 128)                                \
  X(128, 32)                                \
  X(128, 64)                                \
  X(128, 112)                               \
  X(128, 128)                               \
  X(128, 144)                               \
  X(128, 160)
