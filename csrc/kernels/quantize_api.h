// Host API of the FP8 e4m3 quantization kernels (csrc/kernels/quantize.cu). Plain CUDA C++, no torch.
//
// Numerics (bit-identical to the ATen reference in csrc/ops/reference.cpp): per group or block,
// amax = max |x| in float32, scale = max(amax, 1e-12f) / 448.0f and q = x / scale, both correctly
// rounded IEEE divisions, q clamped to +-448 and rounded to nearest even e4m3. Elements past the
// tensor edge (K tails, N tails, M tails of the transposed form) count as zeros. Non-finite inputs
// behave as in the reference: a group holding a NaN gets a NaN scale and NaN values, a group holding
// +-inf an infinite scale, +-0 for its finite values and NaN for the infinite ones; only the sign
// bit of a NaN (e4m3 byte 0x7f or 0xff) may differ from the CPU reference's.
//
// Every launcher runs on `stream` without host synchronization or allocation (CUDA-graph
// capturable) and reports bad arguments or launch failures by throwing std::runtime_error. Empty
// problems launch nothing. Inputs are read with 16-byte vector loads when the base pointer is 16-byte
// aligned, the row stride is a multiple of 16 bytes and k of 8 (16-bit inputs) or 4 (fp32); otherwise
// element by element (any pointer, stride and k). Dims (m, k, n, scale_ld) must stay below
// 2^31 - 2^16. The kernels are built for sm_90a only, like the rest of the extension.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace torch_fp8gemm {

enum class QuantInputType : int { kBF16 = 0, kFP16 = 1, kFP32 = 2 };

// Activation scales are stored M-major: the scale of (row r, k-block kb) at scale[kb * scale_ld + r],
// the layout the GEMM's TMA loads. The padding entries past the last row (up to scale_ld, normally
// round_up(rows, 4), which keeps the K-block rows 16-byte aligned) are written as 0.
struct Quantize1x128Params {
  const void* x;          // [m, k] of `type`, row-major with row stride ldx elements (unit stride along k)
  QuantInputType type;
  int64_t m, k;           // >= 0
  int64_t ldx;            // row stride of x in elements (any value >= 0; ignored when m == 1)
  void* out;              // float8_e4m3fn. rows: [m, k] contiguous; transposed: [k, m] contiguous
                          // (any address; vector stores when it is aligned, as at::empty's are)
  float* scale;           // rows: [ceil(k/128), scale_ld] with scale_ld >= m;
                          // transposed: [ceil(m/128), scale_ld] with scale_ld >= k (see above)
  int64_t scale_ld;
  cudaStream_t stream;
  // Transposed only, optional: quantize the rows gathered by `rows` [m] (on the device) instead of
  // x's own: row j is x[rows[j]], or zeros where rows[j] < 0 or >= x_rows (x then has x_rows rows).
  const int64_t* rows = nullptr;
  int64_t x_rows = 0;
};

// 1x128 groups along k of every row of x: out[r, c] and scale[c / 128 * scale_ld + r].
void fp8_quantize_1x128(const Quantize1x128Params& p);

// 1x128 groups along m of every column of x, i.e. the rows of x^T: out = fp8 x^T [k, m] with
// out[c, r] and scale[r / 128 * scale_ld + c] (x^T's own M-major layout; scale_ld = round_up(k, 4)
// reproduces quantize_1x128(x.t().contiguous())). With `rows`, the same of the gathered matrix.
void fp8_quantize_1x128_transposed(const Quantize1x128Params& p);

struct Quantize128x128Params {
  const void* w;          // [batch, n, k] of `type`, contiguous
  QuantInputType type;
  int64_t batch, n, k;    // >= 0
  void* out;              // float8_e4m3fn [batch, n, k] contiguous; transpose_out: [batch, k, n]
  float* scale;           // [batch, ceil(n/128), ceil(k/128)] contiguous; transpose_out: [batch, ceil(k/128), ceil(n/128)]
  cudaStream_t stream;
  // Write w^T and its scales (the quantization of each block is the same; only the layout of both
  // outputs is transposed): the dgrad operand of the training recipe without a separate transpose.
  bool transpose_out;
};

void fp8_quantize_128x128(const Quantize128x128Params& p);

// K-major activation scales src [rows, k_blocks] (row stride src_ld >= k_blocks) copied M-major:
// dst[kb * dst_ld + r] = src[r * src_ld + kb], dst_ld >= rows; padding entries are not written.
void scales_to_m_major(const float* src, int64_t rows, int64_t k_blocks, int64_t src_ld, float* dst, int64_t dst_ld,
                       cudaStream_t stream);

}  // namespace torch_fp8gemm
