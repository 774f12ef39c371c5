// Host-side contract of the fp8gemm ops: argument validation, the ATen reference implementation
// (the CPU kernel, the oracle of the GPU tests and the fallback on GPUs without sm_90a kernels)
// and the shared op front ends that both the CPU and the CUDA registrations call.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/FunctionRef.h>

#include <optional>
#include <tuple>

namespace torch_fp8gemm {

// DeepSeek-V3 recipe: activations carry one scale per 1x128 group along K, weights one per
// 128x128 block. dequantized = fp8 * scale.
constexpr int64_t kScaleBlock = 128;
constexpr double kFp8Max = 448.0;  // largest finite float8_e4m3fn
// amax floor of the quantizers: an all-zero group gets scale kAmaxFloor / 448 (never 0, NaN or a
// denormal that the GPU would flush to zero).
constexpr double kAmaxFloor = 1e-12;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Argument-rule violations raise ValueError in Python; the message names the op, the argument and
// the rule: "fp8gemm::dense: expected `a_scale` to be float32, got Float".
#define FP8GEMM_CHECK_ARG(cond, op, ...) TORCH_CHECK_VALUE(cond, op, ": expected ", __VA_ARGS__)

// ---------------------------------------------------------------------------------------------
// Quantization (ATen, device generic).
// quantize_1x128: x [..., K] -> (fp8 [..., K] contiguous, float32 scales [..., ceil(K/128)]).
// The scales are a view of M-major storage [ceil(K/128), round_up(M, 4)] (M = tokens), the layout
// the GEMM's TMA loads, so they feed fp8gemm::dense without a copy.
std::tuple<at::Tensor, at::Tensor> quantize_1x128(const at::Tensor& x);
// quantize_1x128_transposed: x [M, K] -> quantize_1x128(x.t().contiguous()), i.e. x^T [K, M] in fp8
// with one scale per 1x128 group along M (weight-gradient operands) and [K, ceil(M/128)] M-major scales.
std::tuple<at::Tensor, at::Tensor> quantize_1x128_transposed(const at::Tensor& x);
// _quantize_1x128_transposed_rows: quantize_1x128_transposed of the gathered matrix g [R, K] with
// g[j] = x[rows[j]], or zeros where rows[j] < 0 or >= M (rows: int64 [R]). The MoE weight gradient
// lays each expert's tokens out in whole 128-row blocks this way without materializing g.
std::tuple<at::Tensor, at::Tensor> quantize_1x128_transposed_rows(const at::Tensor& x, const at::Tensor& rows);
// quantize_128x128: w [..., N, K] -> (fp8 [..., N, K], float32 scales [..., ceil(N/128), ceil(K/128)]).
std::tuple<at::Tensor, at::Tensor> quantize_128x128(const at::Tensor& w);
// quantize_128x128_transposed: w [..., N, K] -> the transposes of quantize_128x128(w)'s outputs, i.e.
// (fp8 w^T [..., K, N], float32 scales [..., ceil(K/128), ceil(N/128)]), contiguous.
std::tuple<at::Tensor, at::Tensor> quantize_128x128_transposed(const at::Tensor& w);
// The [..., ceil(K/128)] view that quantize_1x128 returns of its M-major scale storage
// [ceil(K/128), round_up(M, 4)], where `lead` = the token dims [...] (M = their product).
at::Tensor m_major_scale_view(const at::Tensor& storage, at::IntArrayRef lead);

at::Tensor dequantize_1x128(const at::Tensor& x_fp8, const at::Tensor& scale);
at::Tensor dequantize_128x128(const at::Tensor& w_fp8, const at::Tensor& scale);

// ---------------------------------------------------------------------------------------------
// Validated operands: fp8 data with its scales, after quantizing high-precision inputs.
struct QuantizedOperand {
  at::Tensor data;   // float8_e4m3fn
  at::Tensor scale;  // float32
};

// GEMM backends on validated, quantized, non-empty operands.
// dense: a [M, K] (scales [M, Kb]), b [N, K] (scales [Nb, Kb]); bias [N] in out_dtype or undefined.
using DenseBackend = at::Tensor (*)(const QuantizedOperand& a, const QuantizedOperand& b,
                                    const std::optional<at::Tensor>& bias, at::ScalarType out_dtype);
using GroupedBackend = at::Tensor (*)(const QuantizedOperand& a, const QuantizedOperand& b,
                                      const at::Tensor& group_offsets, at::ScalarType out_dtype);
// masked: a callable reference rather than a function pointer, so that a caller can bind an output buffer.
using MaskedBackend = c10::function_ref<at::Tensor(const QuantizedOperand& a, const QuantizedOperand& b,
                                                   const at::Tensor& masked_m, int64_t expected_m,
                                                   at::ScalarType out_dtype)>;

at::Tensor dense_reference(const QuantizedOperand& a, const QuantizedOperand& b,
                           const std::optional<at::Tensor>& bias, at::ScalarType out_dtype);
// dense_1x128: like dense, but b's scales are per 1x128 group along K too ([N, Kb], any layout).
using Dense1x128Backend = at::Tensor (*)(const QuantizedOperand& a, const QuantizedOperand& b,
                                         at::ScalarType out_dtype);
at::Tensor dense_1x128_reference(const QuantizedOperand& a, const QuantizedOperand& b, at::ScalarType out_dtype);
at::Tensor grouped_moe_reference(const QuantizedOperand& a, const QuantizedOperand& b,
                                 const at::Tensor& group_offsets, at::ScalarType out_dtype);
at::Tensor grouped_moe_masked_reference(const QuantizedOperand& a, const QuantizedOperand& b,
                                        const at::Tensor& masked_m, int64_t expected_m,
                                        at::ScalarType out_dtype);

// Op front ends: validate every argument, quantize high-precision operands, handle empty
// problems, then call the backend.
at::Tensor dense_op(const at::Tensor& a, const at::Tensor& b, const std::optional<at::Tensor>& a_scale,
                    const std::optional<at::Tensor>& b_scale, const std::optional<at::Tensor>& bias,
                    std::optional<at::ScalarType> out_dtype, DenseBackend backend);
at::Tensor grouped_moe_op(const at::Tensor& a, const at::Tensor& b, const at::Tensor& group_offsets,
                          const std::optional<at::Tensor>& a_scale,
                          const std::optional<at::Tensor>& b_scale,
                          std::optional<at::ScalarType> out_dtype, GroupedBackend backend);
at::Tensor grouped_moe_masked_op(const at::Tensor& a, const at::Tensor& b, const at::Tensor& masked_m,
                                 int64_t expected_m, const std::optional<at::Tensor>& a_scale,
                                 const std::optional<at::Tensor>& b_scale,
                                 std::optional<at::ScalarType> out_dtype, MaskedBackend backend);
at::Tensor dense_1x128_op(const at::Tensor& a, const at::Tensor& b, const std::optional<at::Tensor>& a_scale,
                          const std::optional<at::Tensor>& b_scale, std::optional<at::ScalarType> out_dtype,
                          Dense1x128Backend backend);
// Quantizers: validate, then run `backend` (the ATen reference on CPU, the CUDA kernels on GPUs).
using QuantizeBackend = std::tuple<at::Tensor, at::Tensor> (*)(const at::Tensor& x);
std::tuple<at::Tensor, at::Tensor> quantize_1x128_op(const at::Tensor& x, QuantizeBackend backend);
std::tuple<at::Tensor, at::Tensor> quantize_1x128_transposed_op(const at::Tensor& x, QuantizeBackend backend);
using GatherQuantizeBackend = std::tuple<at::Tensor, at::Tensor> (*)(const at::Tensor& x, const at::Tensor& rows);
std::tuple<at::Tensor, at::Tensor> quantize_1x128_transposed_rows_op(const at::Tensor& x, const at::Tensor& rows,
                                                                     GatherQuantizeBackend backend);
std::tuple<at::Tensor, at::Tensor> quantize_128x128_op(const at::Tensor& w, QuantizeBackend backend);
std::tuple<at::Tensor, at::Tensor> quantize_128x128_transposed_op(const at::Tensor& w, QuantizeBackend backend);

}  // namespace torch_fp8gemm
