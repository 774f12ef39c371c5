// Constants and small helpers shared by the sm_90a kernels (device code only; no torch).
#pragma once
#include <cstdint>

namespace torch_fp8gemm::sm90 {

// K extent of one pipeline stage; equals the scale group (1x128 for A, 128x128 for B), so every
// stage's wgmma partial sums are promoted with exactly one pair of scales.
constexpr int kBlockK = 128;

// What the one kernel template computes; the scheduler, the operand addressing and the B scales differ.
//   kDense:             out[m, n] = A[m, k] . B[n, k]^T
//   kGroupedContiguous: MoE, expert g owns rows [ends[g-1], ends[g]) of A/out and B rows [g*n, g*n + n)
//   kGroupedMasked:     MoE, expert g owns rows [g*max_m, g*max_m + masked_m[g]) of A/out
//   kDense1x128:        kDense with B scaled per 1x128 group along K too (one scale per B row and
//                       K block instead of per 128x128 block): weight-gradient GEMMs, whose operands
//                       are both token-major activations quantized along the token dim
enum class GemmKind : int { kDense = 0, kGroupedContiguous = 1, kGroupedMasked = 2, kDense1x128 = 3 };

__host__ __device__ constexpr bool is_grouped(GemmKind kind) {
  return kind == GemmKind::kGroupedContiguous || kind == GemmKind::kGroupedMasked;
}

// Opt-in shared memory per block on sm_90 (227 KB).
constexpr int kMaxSmemBytes = 232448;

template <typename T>
__host__ __device__ constexpr T ceil_div(T a, T b) {
  return (a + b - 1) / b;
}

template <typename T>
__host__ __device__ constexpr T align_up(T a, T b) {
  return ceil_div(a, b) * b;
}

// Division by a divisor d >= 1 fixed before the launch, for dividends 0 <= x < 2^31: x / d is
// umulhi(x, mul) >> shift with mul = ceil(2^(31 + L) / d), L = ceil(log2 d) (the round-up
// reciprocal; exact because x * (mul * d - 2^(31 + L)) < x * d <= 2^(31 + L)). Two instructions
// on the device instead of the ~20 of an integer division. d = 1 (L = 0) is passed through.
struct FastDiv {
  int32_t d;
  uint32_t mul, shift;
  static FastDiv make(int32_t divisor) {
    FastDiv f{divisor, 0, 0};
    int log2_ceil = 0;
    while ((int64_t(1) << log2_ceil) < divisor) ++log2_ceil;
    if (divisor > 1) {
      const uint64_t p = uint64_t(1) << (31 + log2_ceil);
      f.mul = static_cast<uint32_t>((p + divisor - 1) / divisor);
      f.shift = log2_ceil - 1;
    }
    return f;
  }
#ifdef __CUDACC__
  __device__ __forceinline__ int div(int x) const {
    return d == 1 ? x : static_cast<int>(__umulhi(static_cast<uint32_t>(x), mul) >> shift);
  }
#endif
};

}  // namespace torch_fp8gemm::sm90
