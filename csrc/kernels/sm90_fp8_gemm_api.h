#pragma once
#include <cstdint>
#include <cuda_runtime.h>
namespace torch_fp8gemm {
enum class OutKind : int { kBF16 = 0, kFP32 = 1 };
struct DenseGemmParams {
  const void* a;         // [m, k] float8_e4m3fn, K-major, row stride lda (elements); 16-byte aligned base, lda % 16 == 0
  const void* b;         // [n, k] float8_e4m3fn, K-major, row stride ldb; 16-byte aligned, ldb % 16 == 0
  const float* a_scale;  // M-major: scale of (row r, k-block kb) at a_scale[kb * a_scale_ld + r]; a_scale_ld >= m, a_scale_ld % 4 == 0, base 16B aligned
                         // (K-major with a_scale_k_major: at a_scale[r * a_scale_ld + kb]; a_scale_ld >= ceil(k/128), a_scale_ld % 4 == 0)
  const float* b_scale;  // [ceil(n/128), ceil(k/128)] row-major contiguous
  const void* bias;      // [n], same dtype as out (bf16 or fp32), or nullptr
  void* out;             // [m, n] row-major, row stride ldo elements (ldo % 8 == 0 for bf16, %4 for fp32), 16B aligned
  int64_t m, n, k;       // m >= 1, n % 8 == 0 (n >= 8), k % 16 == 0 (k >= 16); k need NOT be a multiple of 128 (TMA OOB reads are zero)
  int64_t lda, ldb, a_scale_ld, ldo;
  OutKind out_kind;
  int num_sms;           // SMs to use for the persistent grid (device multiProcessorCount normally)
  int forced_config;     // -1: heuristic picks; otherwise index into the kind's config list (for tests)
  cudaStream_t stream;
  int64_t b_scale_ld;    // sm90_fp8_gemm_dense_1x128 only (see there); ignored elsewhere
  // K-grouped dense_1x128 GEMM (sm90_fp8_gemm_dense_1x128 only; nullptr elsewhere): num_k_groups
  // groups, group g reducing over the K blocks [k_block_bounds[g], k_block_bounds[g + 1]) (int32
  // [num_k_groups + 1] on the device) into out rows [g * m, (g + 1) * m): the MoE weight gradient
  // dW_g = dy_g^T x_g over expert g's tokens, each expert's tokens padded to whole 128-blocks of K.
  // out then has num_k_groups * m rows; a group with an empty range gets zeros.
  const int32_t* k_block_bounds;
  int num_k_groups;
  // A scales K-major (see a_scale): the layout of row-major per-token scales with 16-byte rows, taken
  // in place only by the configurations for which sm90_fp8_gemm_*_takes_k_major_scales says so (not
  // the dense_1x128 GEMM); callers copy them M-major for the others.
  bool a_scale_k_major;
};
int sm90_fp8_gemm_num_configs();                 // size of the compiled config list
const char* sm90_fp8_gemm_config_name(int idx);  // e.g. "bm128_bn128_s5_mc1"
int sm90_fp8_gemm_pick_config(const DenseGemmParams& p);  // the heuristic's choice
// Launches on p.stream. No host sync, no allocation (CUDA-graph capturable).
// Reports failures by throwing std::runtime_error with a clear message (never exit/abort).
void sm90_fp8_gemm_dense(const DenseGemmParams& p);
bool sm90_fp8_gemm_dense_takes_k_major_scales(const DenseGemmParams& p);  // the planned configuration's

// The dense GEMM with B scaled per 1x128 group along K as well (weight gradients: both operands are
// quantized along the token dim). b_scale is then M-major like a_scale: the scale of (row r of b,
// k-block kb) at b_scale[kb * b_scale_ld + r], b_scale_ld >= n, b_scale_ld % 4 == 0, base 16B
// aligned. bias must be nullptr. forced_config indexes the dense_1x128 config list.
int sm90_fp8_gemm_num_dense_1x128_configs();
const char* sm90_fp8_gemm_dense_1x128_config_name(int idx);
int sm90_fp8_gemm_pick_dense_1x128_config(const DenseGemmParams& p);
void sm90_fp8_gemm_dense_1x128(const DenseGemmParams& p);

// Mixture-of-Experts GEMMs on the same kernel; experts share n and k.
enum class GroupedLayout : int { kContiguous = 1, kMasked = 2 };
struct GroupedGemmParams {
  // gemm.a [m, k]: the rows of all experts (contiguous: back to back; masked: G blocks of max_m rows),
  // gemm.b [G * n, k] (the experts' [n, k] weights stacked, ldb its row stride), gemm.b_scale
  // [G, ceil(n/128), ceil(k/128)] contiguous, gemm.out [m, n]. The kernel writes only the rows that
  // belong to an expert (contiguous: grouped_zero_unowned_rows clears the rest). gemm.bias must be nullptr.
  DenseGemmParams gemm;
  GroupedLayout layout;
  union {                       // [G] on the device, by layout:
    const int32_t* group_ends;  //   contiguous: the cumulative end of each expert's rows
    const int32_t* group_sizes; //   masked: each expert's rows (its block starts at row g * max_m)
  };
  int num_groups;             // G >= 1
  int64_t rows_per_group;     // masked: max_m (gemm.m == G * max_m); contiguous: unused
  int64_t expected_m;         // typical rows per expert: guides the configuration only
};
int sm90_fp8_gemm_pick_grouped_config(const GroupedGemmParams& p);  // index into the grouped list
const char* sm90_fp8_gemm_grouped_config_name(int idx);
int sm90_fp8_gemm_num_grouped_configs();
void sm90_fp8_gemm_grouped(const GroupedGemmParams& p);
bool sm90_fp8_gemm_grouped_takes_k_major_scales(const GroupedGemmParams& p);
// Contiguous layout: zeroes the rows of p.gemm.out past the last expert's end (what
// sm90_fp8_gemm_grouped leaves unwritten), reading the bound on the device; launch it on the same
// stream before or after the GEMM.
void grouped_zero_unowned_rows(const GroupedGemmParams& p);

}  // namespace torch_fp8gemm
