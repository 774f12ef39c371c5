// Op front ends shared by the CPU and CUDA registrations. Checks run in a fixed order (device,
// dtype, rank, shapes, scale shapes, layout) so that the first broken rule is the one reported.
#include "fp8gemm.h"

#include <ATen/core/dispatch/Dispatcher.h>

#include <limits>
#include <string>

namespace torch_fp8gemm {
namespace {

bool is_fp8(const at::Tensor& t) { return t.scalar_type() == at::kFloat8_e4m3fn; }

bool is_high_precision(const at::Tensor& t) {
  const auto dtype = t.scalar_type();
  return dtype == at::kBFloat16 || dtype == at::kHalf || dtype == at::kFloat;
}

void check_same_device(const char* op, const char* ref_name, const at::Tensor& ref, const char* name,
                       const at::Tensor& t) {
  FP8GEMM_CHECK_ARG(t.device() == ref.device(), op, "`", name, "` on the same device as `", ref_name,
                    "` (", ref.device(), "), got ", t.device());
}

// An operand is float8_e4m3fn with float32 scales, or bf16/fp16/fp32 without scales (the op
// quantizes it).
void check_operand(const char* op, const char* name, const at::Tensor& t, int64_t dim,
                   const char* scale_name, const std::optional<at::Tensor>& scale) {
  FP8GEMM_CHECK_ARG(is_fp8(t) || is_high_precision(t), op, "`", name,
                    "` to be float8_e4m3fn (with `", scale_name, "`) or bfloat16/float16/float32, got ",
                    t.scalar_type());
  FP8GEMM_CHECK_ARG(t.dim() == dim, op, "`", name, "` to have ", dim, " dims, got ", t.dim(),
                    " (shape ", t.sizes(), ")");
  if (is_fp8(t)) {
    FP8GEMM_CHECK_ARG(scale.has_value(), op, "`", scale_name, "` when `", name,
                      "` is float8_e4m3fn (dequantized value = fp8 value * scale), got None");
  } else {
    FP8GEMM_CHECK_ARG(!scale.has_value(), op, "`", scale_name, "` to be None when `", name, "` is ",
                      t.scalar_type(), " (the op quantizes it itself), got a tensor");
  }
}

// FP8 operands are read by TMA: K-major rows, 16-byte aligned base and row strides.
void check_fp8_layout(const char* op, const char* name, const at::Tensor& t) {
  if (!is_fp8(t) || t.numel() == 0) return;
  FP8GEMM_CHECK_ARG(t.stride(-1) == 1, op, "`", name,
                    "` to be contiguous along K (stride(-1) == 1), got strides ", t.strides());
  for (int64_t d = 0; d + 1 < t.dim(); ++d) {
    FP8GEMM_CHECK_ARG(t.size(d) == 1 || t.stride(d) % 16 == 0, op, "`", name, "` stride(", d,
                      ") to be a multiple of 16 elements (16-byte aligned rows for TMA), got strides ",
                      t.strides());
  }
  FP8GEMM_CHECK_ARG(reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0, op, "`", name,
                    "` data pointer to be 16-byte aligned (TMA), got an offset view at address ",
                    t.data_ptr());
}

void check_scale(const char* op, const char* name, const at::Tensor& scale, at::IntArrayRef sizes,
                 const char* rule) {
  FP8GEMM_CHECK_ARG(scale.scalar_type() == at::kFloat || scale.scalar_type() == at::kFloat8_e8m0fnu, op, "`", name,
                    "` to be float32 or float8_e8m0fnu (UE8M0), got ", scale.scalar_type());
  FP8GEMM_CHECK_ARG(scale.sizes() == sizes, op, "`", name, "` of shape ", sizes, " (", rule, "), got ",
                    scale.sizes());
}

void check_gemm_dims(const char* op, int64_t n, int64_t k) {
  FP8GEMM_CHECK_ARG(k % 16 == 0, op, "K (the last dim of `a` and `b`) to be a multiple of 16 "
                    "(16-byte aligned fp8 rows), got K = ", k);
  FP8GEMM_CHECK_ARG(n % 8 == 0, op, "N (`b`.size(-2)) to be a multiple of 8 (16-byte aligned bf16 "
                    "output rows), got N = ", n);
}

at::ScalarType resolve_out_dtype(const char* op, std::optional<at::ScalarType> out_dtype) {
  const auto dtype = out_dtype.value_or(at::kBFloat16);
  FP8GEMM_CHECK_ARG(dtype == at::kBFloat16 || dtype == at::kFloat, op,
                    "`out_dtype` to be torch.bfloat16 or torch.float32, got ", dtype);
  return dtype;
}

void check_group_index(const char* op, const char* name, const at::Tensor& t, int64_t groups) {
  FP8GEMM_CHECK_ARG(t.scalar_type() == at::kInt, op, "`", name, "` to be int32, got ", t.scalar_type());
  FP8GEMM_CHECK_ARG(t.dim() == 1 && t.size(0) == groups, op, "`", name, "` of shape [", groups,
                    "] (one entry per expert of `b`), got ", t.sizes());
}

// What the grouped and masked front ends share: one device for every tensor, fp8 operands with
// their scales (a: [M, K] or [G, max_m, K], b: [G, N, K]), the expert index tensor on a's device.
void check_grouped_operands(const char* op, const at::Tensor& a, int64_t a_dim, const at::Tensor& b, const char* index_name,
                            const at::Tensor& index, const std::optional<at::Tensor>& a_scale,
                            const std::optional<at::Tensor>& b_scale) {
  check_same_device(op, "a", a, "b", b);
  check_same_device(op, "a", a, index_name, index);
  if (a_scale) check_same_device(op, "a", a, "a_scale", *a_scale);
  if (b_scale) check_same_device(op, "a", a, "b_scale", *b_scale);
  check_operand(op, "a", a, a_dim, "a_scale", a_scale);
  check_operand(op, "b", b, 3, "b_scale", b_scale);
}

// The experts' weight scales (one per 128x128 block) and both operands' TMA layout.
void check_expert_scales_and_layouts(const char* op, const at::Tensor& a, const at::Tensor& b,
                                     const std::optional<at::Tensor>& b_scale, int64_t groups, int64_t n, int64_t kb) {
  if (b_scale) {
    check_scale(op, "b_scale", *b_scale, {groups, ceil_div(n, kScaleBlock), kb},
                "[G, ceil(N/128), ceil(K/128)]: one scale per 128x128 block of each expert");
  }
  check_fp8_layout(op, "a", a);
  check_fp8_layout(op, "b", b);
}

// High-precision operands are quantized through the dispatcher, so each device runs its own
// quantize kernel (the CUDA kernels on the GPU, the ATen reference on the CPU); both give the same bits.
using QuantizeSignature = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&);

std::tuple<at::Tensor, at::Tensor> dispatch_quantize_1x128(const at::Tensor& x) {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("fp8gemm::quantize_1x128", "").typed<QuantizeSignature>();
  return op.call(x);
}

std::tuple<at::Tensor, at::Tensor> dispatch_quantize_128x128(const at::Tensor& w) {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("fp8gemm::quantize_128x128", "").typed<QuantizeSignature>();
  return op.call(w);
}

struct DenseOperands {
  at::ScalarType out_dtype;
  int64_t m, n, k;
};

// The checks dense and dense_1x128 share, in the fixed order: devices, operand dtypes/ranks and
// scale presence, out_dtype, then K agreement and the alignment of N and K.
DenseOperands check_dense_operands(const char* op, const at::Tensor& a, const at::Tensor& b,
                                   const std::optional<at::Tensor>& a_scale, const std::optional<at::Tensor>& b_scale,
                                   const std::optional<at::Tensor>& bias, std::optional<at::ScalarType> out_dtype) {
  check_same_device(op, "a", a, "b", b);
  if (a_scale) check_same_device(op, "a", a, "a_scale", *a_scale);
  if (b_scale) check_same_device(op, "a", a, "b_scale", *b_scale);
  if (bias) check_same_device(op, "a", a, "bias", *bias);
  check_operand(op, "a", a, 2, "a_scale", a_scale);
  check_operand(op, "b", b, 2, "b_scale", b_scale);
  const auto dtype = resolve_out_dtype(op, out_dtype);
  const int64_t m = a.size(0), n = b.size(0), k = a.size(1);
  FP8GEMM_CHECK_ARG(b.size(1) == k, op, "`b` of shape [N, K] with K = ", k,
                    " (`a` is [M, K] and out = a @ b.T), got `b` of shape ", b.sizes());
  check_gemm_dims(op, n, k);
  return {dtype, m, n, k};
}

// UE8M0 scales (powers of two stored as float8_e8m0fnu) become the float32 values they encode: the
// kernels read float32 scales. One elementwise pass over the scales (K/128 of the operand's size).
at::Tensor float32_scale(const at::Tensor& scale) {
  return scale.scalar_type() == at::kFloat8_e8m0fnu ? scale.to(at::kFloat) : scale;
}

QuantizedOperand activation_operand(const at::Tensor& a, const std::optional<at::Tensor>& a_scale) {
  if (is_fp8(a)) return {a, float32_scale(*a_scale)};
  auto [data, scale] = dispatch_quantize_1x128(a);
  return {data, scale};
}

QuantizedOperand weight_operand(const at::Tensor& b, const std::optional<at::Tensor>& b_scale) {
  if (is_fp8(b)) return {b, float32_scale(*b_scale)};
  auto [data, scale] = dispatch_quantize_128x128(b);
  return {data, scale};
}

}  // namespace

at::Tensor dense_op(const at::Tensor& a, const at::Tensor& b, const std::optional<at::Tensor>& a_scale,
                    const std::optional<at::Tensor>& b_scale, const std::optional<at::Tensor>& bias,
                    std::optional<at::ScalarType> out_dtype, DenseBackend backend) {
  constexpr const char* op = "fp8gemm::dense";
  const auto [dtype, m, n, k] = check_dense_operands(op, a, b, a_scale, b_scale, bias, out_dtype);
  const int64_t kb = ceil_div(k, kScaleBlock);
  if (a_scale) check_scale(op, "a_scale", *a_scale, {m, kb}, "[M, ceil(K/128)]: one scale per 1x128 group of `a`");
  if (b_scale) {
    check_scale(op, "b_scale", *b_scale, {ceil_div(n, kScaleBlock), kb},
                "[ceil(N/128), ceil(K/128)]: one scale per 128x128 block of `b`");
  }
  if (bias) {
    FP8GEMM_CHECK_ARG(is_high_precision(*bias), op, "`bias` to be bfloat16/float16/float32, got ",
                      bias->scalar_type());
    FP8GEMM_CHECK_ARG(bias->dim() == 1 && bias->size(0) == n, op, "`bias` of shape [", n, "] (N), got ",
                      bias->sizes());
  }
  check_fp8_layout(op, "a", a);
  check_fp8_layout(op, "b", b);

  std::optional<at::Tensor> bias_out;
  if (bias) bias_out = bias->to(dtype).contiguous();
  if (m == 0 || n == 0 || k == 0) {
    auto out = at::zeros({m, n}, a.options().dtype(dtype));
    return bias_out ? out.add_(*bias_out) : out;
  }
  return backend(activation_operand(a, a_scale), weight_operand(b, b_scale), bias_out, dtype);
}

at::Tensor dense_1x128_op(const at::Tensor& a, const at::Tensor& b, const std::optional<at::Tensor>& a_scale,
                          const std::optional<at::Tensor>& b_scale, std::optional<at::ScalarType> out_dtype,
                          Dense1x128Backend backend) {
  constexpr const char* op = "fp8gemm::dense_1x128";
  const auto [dtype, m, n, k] = check_dense_operands(op, a, b, a_scale, b_scale, std::nullopt, out_dtype);
  const int64_t kb = ceil_div(k, kScaleBlock);
  if (a_scale) check_scale(op, "a_scale", *a_scale, {m, kb}, "[M, ceil(K/128)]: one scale per 1x128 group of `a`");
  if (b_scale) check_scale(op, "b_scale", *b_scale, {n, kb}, "[N, ceil(K/128)]: one scale per 1x128 group of `b`");
  check_fp8_layout(op, "a", a);
  check_fp8_layout(op, "b", b);
  if (m == 0 || n == 0 || k == 0) return at::zeros({m, n}, a.options().dtype(dtype));
  return backend(activation_operand(a, a_scale), activation_operand(b, b_scale), dtype);
}

at::Tensor grouped_moe_op(const at::Tensor& a, const at::Tensor& b, const at::Tensor& group_offsets,
                          const std::optional<at::Tensor>& a_scale,
                          const std::optional<at::Tensor>& b_scale,
                          std::optional<at::ScalarType> out_dtype, GroupedBackend backend) {
  constexpr const char* op = "fp8gemm::grouped_moe";
  check_grouped_operands(op, a, 2, b, "group_offsets", group_offsets, a_scale, b_scale);
  const auto dtype = resolve_out_dtype(op, out_dtype);
  const int64_t m = a.size(0), k = a.size(1), groups = b.size(0), n = b.size(1);
  FP8GEMM_CHECK_ARG(b.size(2) == k, op, "`b` of shape [G, N, K] with K = ", k,
                    " (`a` is [M, K]), got `b` of shape ", b.sizes());
  check_gemm_dims(op, n, k);
  check_group_index(op, "group_offsets", group_offsets, groups);
  const int64_t kb = ceil_div(k, kScaleBlock);
  if (a_scale) check_scale(op, "a_scale", *a_scale, {m, kb}, "[M, ceil(K/128)]: one scale per 1x128 group of `a`");
  check_expert_scales_and_layouts(op, a, b, b_scale, groups, n, kb);
  if (group_offsets.is_cpu() && groups > 0) {
    // Cheap only when the offsets live on the host; on a GPU the kernels clamp them instead of
    // synchronizing to check. The error names the first entry that breaks a rule, not the tensor.
    const auto ends = group_offsets.to(at::kLong).contiguous();
    const int64_t* end = ends.data_ptr<int64_t>();
    for (int64_t g = 0; g < groups; ++g) {
      FP8GEMM_CHECK_ARG(end[g] >= 0, op, "`group_offsets` to be >= 0 (cumulative row ends), got group_offsets[", g,
                        "] = ", end[g]);
      FP8GEMM_CHECK_ARG(g == 0 || end[g] >= end[g - 1], op,
                        "`group_offsets` to be non-decreasing (cumulative row ends), got group_offsets[", g, "] = ",
                        end[g], " < group_offsets[", g - 1, "] = ", g > 0 ? end[g - 1] : 0);
      FP8GEMM_CHECK_ARG(end[g] <= m, op, "`group_offsets` to end at or before M = ", m, ", got group_offsets[", g,
                        "] = ", end[g]);
    }
  }
  if (m == 0 || n == 0 || groups == 0 || k == 0) return at::zeros({m, n}, a.options().dtype(dtype));
  return backend(activation_operand(a, a_scale), weight_operand(b, b_scale), group_offsets, dtype);
}

at::Tensor grouped_moe_masked_op(const at::Tensor& a, const at::Tensor& b, const at::Tensor& masked_m,
                                 int64_t expected_m, const std::optional<at::Tensor>& a_scale,
                                 const std::optional<at::Tensor>& b_scale,
                                 std::optional<at::ScalarType> out_dtype, MaskedBackend backend) {
  constexpr const char* op = "fp8gemm::grouped_moe_masked";
  check_grouped_operands(op, a, 3, b, "masked_m", masked_m, a_scale, b_scale);
  const auto dtype = resolve_out_dtype(op, out_dtype);
  const int64_t groups = a.size(0), max_m = a.size(1), k = a.size(2), n = b.size(1);
  FP8GEMM_CHECK_ARG(b.size(0) == groups && b.size(2) == k, op, "`b` of shape [G, N, K] with G = ", groups,
                    " and K = ", k, " (`a` is [G, max_m, K]), got `b` of shape ", b.sizes());
  check_gemm_dims(op, n, k);
  check_group_index(op, "masked_m", masked_m, groups);
  FP8GEMM_CHECK_ARG(expected_m >= 0, op, "`expected_m` to be >= 0, got ", expected_m);
  const int64_t kb = ceil_div(k, kScaleBlock);
  if (a_scale) {
    check_scale(op, "a_scale", *a_scale, {groups, max_m, kb},
                "[G, max_m, ceil(K/128)]: one scale per 1x128 group of `a`");
  }
  check_expert_scales_and_layouts(op, a, b, b_scale, groups, n, kb);
  if (masked_m.is_cpu() && groups > 0) {
    const auto rows = masked_m.to(at::kLong).contiguous();
    const int64_t* count = rows.data_ptr<int64_t>();
    for (int64_t g = 0; g < groups; ++g) {
      FP8GEMM_CHECK_ARG(count[g] >= 0 && count[g] <= max_m, op, "`masked_m` values in [0, max_m = ", max_m,
                        "], got masked_m[", g, "] = ", count[g]);
    }
  }
  if (groups == 0 || max_m == 0 || n == 0 || k == 0) {
    return at::zeros({groups, max_m, n}, a.options().dtype(dtype));
  }
  return backend(activation_operand(a, a_scale), weight_operand(b, b_scale), masked_m, expected_m, dtype);
}

std::tuple<at::Tensor, at::Tensor> quantize_1x128_op(const at::Tensor& x, QuantizeBackend backend) {
  constexpr const char* op = "fp8gemm::quantize_1x128";
  FP8GEMM_CHECK_ARG(is_high_precision(x), op, "`x` to be bfloat16/float16/float32, got ", x.scalar_type());
  FP8GEMM_CHECK_ARG(x.dim() >= 1, op, "`x` to have at least 1 dim ([..., K]), got a scalar");
  return backend(x);
}

std::tuple<at::Tensor, at::Tensor> quantize_1x128_transposed_op(const at::Tensor& x, QuantizeBackend backend) {
  constexpr const char* op = "fp8gemm::quantize_1x128_transposed";
  FP8GEMM_CHECK_ARG(is_high_precision(x), op, "`x` to be bfloat16/float16/float32, got ", x.scalar_type());
  FP8GEMM_CHECK_ARG(x.dim() == 2, op, "`x` to have 2 dims ([M, K]; the op returns x^T [K, M]), got ", x.dim(),
                    " (shape ", x.sizes(), ")");
  return backend(x);
}

std::tuple<at::Tensor, at::Tensor> quantize_1x128_transposed_rows_op(const at::Tensor& x, const at::Tensor& rows,
                                                                     GatherQuantizeBackend backend) {
  constexpr const char* op = "fp8gemm::_quantize_1x128_transposed_rows";
  FP8GEMM_CHECK_ARG(is_high_precision(x), op, "`x` to be bfloat16/float16/float32, got ", x.scalar_type());
  FP8GEMM_CHECK_ARG(x.dim() == 2, op, "`x` to have 2 dims ([M, K]), got ", x.dim(), " (shape ", x.sizes(), ")");
  FP8GEMM_CHECK_ARG(rows.scalar_type() == at::kLong && rows.dim() == 1, op,
                    "`rows` to be a 1-D int64 tensor of source rows, got ", rows.scalar_type(), " of shape ",
                    rows.sizes());
  FP8GEMM_CHECK_ARG(rows.device() == x.device(), op, "`rows` on `x`'s device (", x.device(), "), got ",
                    rows.device());
  // rows.size(0) is the quantized matrix's M: the kernels index it with 32-bit ints.
  FP8GEMM_CHECK_ARG(rows.size(0) <= std::numeric_limits<int32_t>::max(), op,
                    "`rows` to have at most 2^31 - 1 entries, got ", rows.size(0));
  return backend(x, rows.contiguous());
}

std::tuple<at::Tensor, at::Tensor> quantize_128x128_op(const at::Tensor& w, QuantizeBackend backend) {
  constexpr const char* op = "fp8gemm::quantize_128x128";
  FP8GEMM_CHECK_ARG(is_high_precision(w), op, "`w` to be bfloat16/float16/float32, got ", w.scalar_type());
  FP8GEMM_CHECK_ARG(w.dim() >= 2, op, "`w` to have at least 2 dims ([..., N, K]), got ", w.dim());
  return backend(w);
}

std::tuple<at::Tensor, at::Tensor> quantize_128x128_transposed_op(const at::Tensor& w, QuantizeBackend backend) {
  constexpr const char* op = "fp8gemm::quantize_128x128_transposed";
  FP8GEMM_CHECK_ARG(is_high_precision(w), op, "`w` to be bfloat16/float16/float32, got ", w.scalar_type());
  FP8GEMM_CHECK_ARG(w.dim() >= 2, op, "`w` to have at least 2 dims ([..., N, K]; the op returns w^T [..., K, N]), got ",
                    w.dim());
  return backend(w);
}

}  // namespace torch_fp8gemm
