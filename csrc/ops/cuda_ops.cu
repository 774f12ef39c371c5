// CUDA registrations of the fp8gemm ops. Every op runs on the current stream of its inputs' device
// under a device guard. GEMMs go to the sm_90a kernels on compute capability 9.0; on other GPUs the
// ATen reference runs on the GPU.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <mutex>
#include <set>
#include <string>

#include "fp8gemm.h"
#include "kernels/quantize_api.h"
#include "kernels/sm90_fp8_gemm_api.h"

namespace torch_fp8gemm {
namespace {

// Set only by the private ops _sm90_*(..., config) (tests force every configuration through them).
thread_local int forced_config = -1;

bool has_sm90_kernels(const at::Device& device) {
  // sm_90a code runs on compute capability 9.0 only; other GPUs take the ATen reference path.
  const auto* props = at::cuda::getDeviceProperties(device.index());
  return props->major == 9 && props->minor == 0;
}

// True where `op` has no kernel for `device` (not compute capability 9.0): the caller then runs the
// ATen reference on the GPU (same numbers, slower), after one warning per op and process.
bool reference_fallback(const at::Device& device, const char* op) {
  if (has_sm90_kernels(device)) return false;
  static std::mutex mutex;
  static std::set<std::string> warned;
  const std::lock_guard<std::mutex> lock(mutex);
  if (warned.insert(op).second) {
    TORCH_WARN(op, ": no sm_90a kernel for this GPU (compute capability 9.0 needed); running the ATen reference path");
  }
  return true;
}

// Activation scales [rows, K blocks] as the kernels load them: M-major (row fastest) with 16-byte
// aligned K-block rows, as quantize_1x128 returns them, or K-major with 16-byte aligned rows (row-major
// per-token scales whose K-block count is a multiple of 4), which only some configurations take.
bool scales_aligned(const at::Tensor& scale) { return reinterpret_cast<uintptr_t>(scale.data_ptr()) % 16 == 0; }
bool is_m_major(const at::Tensor& scale) {
  const int64_t m = scale.size(0), kb = scale.size(1);
  return (m == 1 || scale.stride(0) == 1) && (kb == 1 || (scale.stride(1) % 4 == 0 && scale.stride(1) >= m)) &&
         scales_aligned(scale);
}
bool is_k_major(const at::Tensor& scale) {
  const int64_t m = scale.size(0), kb = scale.size(1);
  return (kb == 1 || scale.stride(1) == 1) && (m == 1 || (scale.stride(0) % 4 == 0 && scale.stride(0) >= kb)) &&
         scales_aligned(scale);
}

// The scales in place if M-major, else an M-major copy.
at::Tensor m_major_scales(const at::Tensor& scale) {
  if (is_m_major(scale)) return scale;
  const int64_t m = scale.size(0), kb = scale.size(1);
  auto storage = at::empty({kb, ceil_div(m, 4) * 4}, scale.options());
  if (scale.is_cuda() && scale.scalar_type() == at::kFloat && (kb == 1 || scale.stride(1) == 1) && scale.stride(0) >= kb) {
    const c10::cuda::CUDAGuard guard(scale.device());
    scales_to_m_major(scale.data_ptr<float>(), m, kb, m == 1 ? kb : scale.stride(0), storage.data_ptr<float>(), storage.stride(0),
                      at::cuda::getCurrentCUDAStream(scale.device().index()).stream());
  } else {
    storage.narrow(1, 0, m).copy_(scale.t());
  }
  return storage.narrow(1, 0, m).t();
}

// Floats between the K-block rows of M-major scales (any multiple of 4 >= rows serves a single K block).
int64_t m_major_ld(const at::Tensor& scale) {
  return scale.size(1) == 1 ? ceil_div(scale.size(0), int64_t{4}) * 4 : scale.stride(1);
}

void set_a_scales(DenseGemmParams& p, const at::Tensor& scale, bool k_major) {
  p.a_scale = scale.data_ptr<float>();
  p.a_scale_k_major = k_major;
  if (k_major) {
    p.a_scale_ld = scale.size(0) == 1 ? ceil_div(scale.size(1), int64_t{4}) * 4 : scale.stride(0);
  } else {
    p.a_scale_ld = m_major_ld(scale);
  }
}

// Points p at the activation scales: in place when M-major or when K-major and takes_k_major() (the
// planned configuration loads them so), else at an M-major copy. Returns what p points into.
template <typename TakesKMajor>
at::Tensor bind_a_scales(DenseGemmParams& p, const at::Tensor& scale, TakesKMajor takes_k_major) {
  if (!is_m_major(scale) && is_k_major(scale)) {
    set_a_scales(p, scale, true);
    if (takes_k_major()) return scale;
  }
  auto m_major = m_major_scales(scale);
  set_a_scales(p, m_major, false);
  return m_major;
}

// Row stride for TMA: any multiple of 16 serves a dimension of size 1.
int64_t row_stride(const at::Tensor& t) {
  return t.size(0) == 1 ? t.size(1) : t.stride(0);
}

// Kernel parameters of out [m, n] = a [m, k] . b [n, k]^T; no bias, a scales still to set.
DenseGemmParams dense_params(const at::Tensor& a, const at::Tensor& b, const at::Tensor& b_scale, at::Tensor& out) {
  DenseGemmParams params{};
  params.a = a.data_ptr();
  params.b = b.data_ptr();
  params.b_scale = b_scale.data_ptr<float>();
  params.bias = nullptr;
  params.out = out.data_ptr();
  params.m = a.size(0);
  params.n = b.size(0);
  params.k = a.size(1);
  params.lda = row_stride(a);
  params.ldb = row_stride(b);
  params.ldo = params.n;
  params.out_kind = out.scalar_type() == at::kFloat ? OutKind::kFP32 : OutKind::kBF16;
  params.num_sms = at::cuda::getDeviceProperties(a.device().index())->multiProcessorCount;
  params.forced_config = forced_config;
  params.stream = at::cuda::getCurrentCUDAStream(a.device().index()).stream();
  return params;
}

at::Tensor dense_sm90(const QuantizedOperand& a, const QuantizedOperand& b, const std::optional<at::Tensor>& bias,
                      at::ScalarType out_dtype) {
  if (reference_fallback(a.data.device(), "fp8gemm::dense")) {
    return dense_reference(a, b, bias, out_dtype);
  }
  auto b_scale = b.scale.contiguous();
  auto out = at::empty({a.data.size(0), b.data.size(0)}, a.data.options().dtype(out_dtype));
  DenseGemmParams params = dense_params(a.data, b.data, b_scale, out);
  params.bias = bias.has_value() ? bias->data_ptr() : nullptr;
  auto a_scale = bind_a_scales(params, a.scale, [&] { return sm90_fp8_gemm_dense_takes_k_major_scales(params); });
  sm90_fp8_gemm_dense(params);
  return out;
}

at::Tensor dense_1x128_sm90(const QuantizedOperand& a, const QuantizedOperand& b, at::ScalarType out_dtype) {
  if (reference_fallback(a.data.device(), "fp8gemm::dense_1x128")) {
    return dense_1x128_reference(a, b, out_dtype);
  }
  auto a_scale = m_major_scales(a.scale);
  auto b_scale = m_major_scales(b.scale);  // B rows scaled like activations: M-major as well
  auto out = at::empty({a.data.size(0), b.data.size(0)}, a.data.options().dtype(out_dtype));
  DenseGemmParams params = dense_params(a.data, b.data, b_scale, out);
  set_a_scales(params, a_scale, false);
  params.b_scale_ld = m_major_ld(b_scale);
  sm90_fp8_gemm_dense_1x128(params);
  return out;
}

// The experts' weights [G, n, k] as one [G * n, k] operand: TMA needs one row stride for all rows.
at::Tensor stacked_rows(const at::Tensor& t) {
  const bool stacked = t.size(1) <= 1 || t.stride(0) == t.size(1) * t.stride(1);
  return stacked ? t : t.contiguous();
}

// Fills the shared part of the kernel parameters for a grouped GEMM over `rows` [m, k] of A (scales
// still to bind).
GroupedGemmParams grouped_params(const at::Tensor& rows, const at::Tensor& weights, const at::Tensor& weight_scales,
                                 at::Tensor& out, GroupedLayout layout, const at::Tensor& group_bounds,
                                 int64_t rows_per_group, int64_t expected_m) {
  GroupedGemmParams p{};
  // Expert 0's [n, k] view: the stacked experts share its base pointer and row stride.
  p.gemm = dense_params(rows, weights.select(0, 0), weight_scales, out);
  p.layout = layout;
  if (layout == GroupedLayout::kMasked) {
    p.group_sizes = group_bounds.data_ptr<int32_t>();
  } else {
    p.group_ends = group_bounds.data_ptr<int32_t>();
  }
  p.num_groups = static_cast<int>(weights.size(0));
  p.rows_per_group = rows_per_group;
  p.expected_m = expected_m;
  return p;
}

// Grouped kernels. They write only expert rows; grouped_zero_unowned_rows clears the others (found on
// the device) instead of a memset of the whole output.
at::Tensor grouped_moe_sm90(const QuantizedOperand& a, const QuantizedOperand& b, const at::Tensor& group_offsets,
                            at::ScalarType out_dtype) {
  if (reference_fallback(a.data.device(), "fp8gemm::grouped_moe")) {
    return grouped_moe_reference(a, b, group_offsets, out_dtype);
  }
  auto weights = stacked_rows(b.data);
  auto weight_scales = b.scale.contiguous();
  auto offsets = group_offsets.contiguous();
  auto out = at::empty({a.data.size(0), b.data.size(1)}, a.data.options().dtype(out_dtype));
  const int64_t groups = b.data.size(0);
  GroupedGemmParams params = grouped_params(a.data, weights, weight_scales, out, GroupedLayout::kContiguous, offsets,
                                            0, ceil_div(a.data.size(0), groups));
  auto row_scales =
      bind_a_scales(params.gemm, a.scale, [&] { return sm90_fp8_gemm_grouped_takes_k_major_scales(params); });
  grouped_zero_unowned_rows(params);
  sm90_fp8_gemm_grouped(params);
  return out;
}

// Rows at or past masked_m[g] are not written: the work follows the rows that exist, not max_m. The
// result goes to `out_buffer` [G, max_m, N] when given (the private _into op), else to a new tensor.
at::Tensor grouped_moe_masked_sm90_into(const QuantizedOperand& a, const QuantizedOperand& b,
                                        const at::Tensor& masked_m, int64_t expected_m, at::ScalarType out_dtype,
                                        const at::Tensor* out_buffer) {
  if (reference_fallback(a.data.device(), "fp8gemm::grouped_moe_masked")) {
    return grouped_moe_masked_reference(a, b, masked_m, expected_m, out_dtype);
  }
  const int64_t groups = a.data.size(0), max_m = a.data.size(1), k = a.data.size(2), n = b.data.size(1);
  // [G, max_m, k] -> [G * max_m, k]: a view when the experts' blocks are stacked, else a copy.
  auto rows = stacked_rows(a.data).view({groups * max_m, k});
  auto weights = stacked_rows(b.data);
  auto weight_scales = b.scale.contiguous();
  auto counts = masked_m.contiguous();
  auto out = out_buffer != nullptr ? out_buffer->view({groups * max_m, n})
                                    : at::empty({groups * max_m, n}, a.data.options().dtype(out_dtype));
  GroupedGemmParams params =
      grouped_params(rows, weights, weight_scales, out, GroupedLayout::kMasked, counts, max_m, expected_m);
  auto row_scales = bind_a_scales(params.gemm, a.scale.reshape({groups * max_m, a.scale.size(2)}),
                                  [&] { return sm90_fp8_gemm_grouped_takes_k_major_scales(params); });
  sm90_fp8_gemm_grouped(params);
  return out.view({groups, max_m, n});
}

at::Tensor grouped_moe_masked_sm90(const QuantizedOperand& a, const QuantizedOperand& b, const at::Tensor& masked_m,
                                   int64_t expected_m, at::ScalarType out_dtype) {
  return grouped_moe_masked_sm90_into(a, b, masked_m, expected_m, out_dtype, nullptr);
}

at::Tensor dense_cuda(const at::Tensor& a, const at::Tensor& b, const std::optional<at::Tensor>& a_scale,
                      const std::optional<at::Tensor>& b_scale, const std::optional<at::Tensor>& bias,
                      std::optional<at::ScalarType> out_dtype) {
  const c10::cuda::CUDAGuard guard(a.device());
  return dense_op(a, b, a_scale, b_scale, bias, out_dtype, &dense_sm90);
}

at::Tensor dense_1x128_cuda(const at::Tensor& a, const at::Tensor& b, const std::optional<at::Tensor>& a_scale,
                            const std::optional<at::Tensor>& b_scale, std::optional<at::ScalarType> out_dtype) {
  const c10::cuda::CUDAGuard guard(a.device());
  return dense_1x128_op(a, b, a_scale, b_scale, out_dtype, &dense_1x128_sm90);
}

at::Tensor grouped_moe_cuda(const at::Tensor& a, const at::Tensor& b, const at::Tensor& group_offsets,
                            const std::optional<at::Tensor>& a_scale, const std::optional<at::Tensor>& b_scale,
                            std::optional<at::ScalarType> out_dtype) {
  const c10::cuda::CUDAGuard guard(a.device());
  return grouped_moe_op(a, b, group_offsets, a_scale, b_scale, out_dtype, &grouped_moe_sm90);
}

at::Tensor grouped_moe_masked_cuda(const at::Tensor& a, const at::Tensor& b, const at::Tensor& masked_m,
                                   int64_t expected_m, const std::optional<at::Tensor>& a_scale,
                                   const std::optional<at::Tensor>& b_scale,
                                   std::optional<at::ScalarType> out_dtype) {
  const c10::cuda::CUDAGuard guard(a.device());
  return grouped_moe_masked_op(a, b, masked_m, expected_m, a_scale, b_scale, out_dtype, &grouped_moe_masked_sm90);
}

// ---------------------------------------------------------------------------------------------
// Quantizers on the CUDA kernels of csrc/kernels/quantize.cu. They return exactly what the ATen
// reference returns (shapes, dtypes, strides, bits); the kernels are compiled into the sm_90a build
// only, so other GPUs run the reference on the device.

QuantInputType quant_input_type(const at::Tensor& x) {
  switch (x.scalar_type()) {
    case at::kBFloat16: return QuantInputType::kBF16;
    case at::kHalf: return QuantInputType::kFP16;
    default: return QuantInputType::kFP32;  // the front ends admit bf16/fp16/fp32 only
  }
}

// x viewed as [m, k] with unit stride along k (a copy only when no such view exists), and the row
// stride to pass to the kernels (any value serves a single row).
std::pair<at::Tensor, int64_t> as_rows(const at::Tensor& x, int64_t m, int64_t k) {
  auto rows = x.reshape({m, k});
  if (k > 1 && rows.stride(1) != 1) rows = rows.contiguous();
  return {rows, m > 1 ? rows.stride(0) : k};
}

// Runs a 1x128 quantizer (rows or transposed) on the rows of x [m, k] into fp8 `out` and M-major
// scale `storage` (every entry of both, padding included, is written by the kernel). With `rows`
// (transposed only), the m rows quantized are x's rows gathered by it, x keeping its own row count.
void launch_1x128(void (*quantize)(const Quantize1x128Params&), const at::Tensor& x, int64_t m, int64_t k,
                  at::Tensor& out, at::Tensor& storage, const at::Tensor* rows = nullptr) {
  if (m == 0 || k == 0) return;
  const int64_t x_rows = rows != nullptr ? x.size(0) : m;
  const auto [source, ldx] = as_rows(x, x_rows, k);
  Quantize1x128Params p{};
  p.x = x_rows > 0 ? source.data_ptr() : nullptr;
  p.type = quant_input_type(x);
  p.m = m;
  p.k = k;
  p.ldx = ldx;
  p.out = out.data_ptr();
  p.scale = storage.data_ptr<float>();
  p.scale_ld = storage.size(1);
  p.stream = at::cuda::getCurrentCUDAStream(x.device().index()).stream();
  if (rows != nullptr) {
    p.rows = rows->data_ptr<int64_t>();
    p.x_rows = x_rows;
  }
  quantize(p);
}

std::tuple<at::Tensor, at::Tensor> quantize_1x128_kernels(const at::Tensor& x) {
  if (reference_fallback(x.device(), "fp8gemm::quantize_1x128")) {
    return quantize_1x128(x);
  }
  const int64_t k = x.size(-1);
  const auto lead = x.sizes().slice(0, x.dim() - 1);
  const int64_t m = c10::multiply_integers(lead);
  auto x_fp8 = at::empty(x.sizes(), x.options().dtype(at::kFloat8_e4m3fn));
  auto storage = at::empty({ceil_div(k, kScaleBlock), ceil_div(m, 4) * 4}, x.options().dtype(at::kFloat));
  launch_1x128(&fp8_quantize_1x128, x, m, k, x_fp8, storage);
  return {x_fp8, m_major_scale_view(storage, lead)};
}

std::tuple<at::Tensor, at::Tensor> quantize_1x128_transposed_kernels(const at::Tensor& x) {
  const int64_t m = x.size(0), k = x.size(1);
  // x^T is already a row-major matrix in memory (x is a transposed view): quantize its rows.
  if (m > 1 && x.stride(0) == 1 && !(k > 1 && x.stride(1) == 1)) return quantize_1x128_kernels(x.t());
  if (reference_fallback(x.device(), "fp8gemm::quantize_1x128_transposed")) {
    return quantize_1x128_transposed(x);
  }
  auto xt_fp8 = at::empty({k, m}, x.options().dtype(at::kFloat8_e4m3fn));
  auto storage = at::empty({ceil_div(m, kScaleBlock), ceil_div(k, 4) * 4}, x.options().dtype(at::kFloat));
  launch_1x128(&fp8_quantize_1x128_transposed, x, m, k, xt_fp8, storage);
  return {xt_fp8, m_major_scale_view(storage, {k})};
}

std::tuple<at::Tensor, at::Tensor> quantize_1x128_transposed_rows_kernels(const at::Tensor& x, const at::Tensor& rows) {
  if (reference_fallback(x.device(), "fp8gemm::_quantize_1x128_transposed_rows")) {
    return quantize_1x128_transposed_rows(x, rows);
  }
  const int64_t k = x.size(1), m = rows.size(0);
  auto xt_fp8 = at::empty({k, m}, x.options().dtype(at::kFloat8_e4m3fn));
  auto storage = at::empty({ceil_div(m, kScaleBlock), ceil_div(k, 4) * 4}, x.options().dtype(at::kFloat));
  launch_1x128(&fp8_quantize_1x128_transposed, x, m, k, xt_fp8, storage, &rows);
  return {xt_fp8, m_major_scale_view(storage, {k})};
}

// transpose_out: the outputs are w^T [..., K, N] and scales [..., ceil(K/128), ceil(N/128)].
std::tuple<at::Tensor, at::Tensor> launch_128x128(const at::Tensor& w, bool transpose_out) {
  const int64_t n = w.size(-2), k = w.size(-1);
  const auto lead = w.sizes().slice(0, w.dim() - 2);
  std::vector<int64_t> out_sizes(lead.begin(), lead.end());
  out_sizes.push_back(transpose_out ? k : n);
  out_sizes.push_back(transpose_out ? n : k);
  std::vector<int64_t> scale_sizes(lead.begin(), lead.end());
  scale_sizes.push_back(ceil_div(transpose_out ? k : n, kScaleBlock));
  scale_sizes.push_back(ceil_div(transpose_out ? n : k, kScaleBlock));
  auto w_fp8 = at::empty(out_sizes, w.options().dtype(at::kFloat8_e4m3fn));
  auto scale = at::empty(scale_sizes, w.options().dtype(at::kFloat));
  if (w.numel() > 0) {
    const auto dense = w.contiguous();
    Quantize128x128Params p{};
    p.w = dense.data_ptr();
    p.type = quant_input_type(w);
    p.batch = c10::multiply_integers(lead);
    p.n = n;
    p.k = k;
    p.out = w_fp8.data_ptr();
    p.scale = scale.data_ptr<float>();
    p.stream = at::cuda::getCurrentCUDAStream(w.device().index()).stream();
    p.transpose_out = transpose_out;
    fp8_quantize_128x128(p);
  }
  return {w_fp8, scale};
}

std::tuple<at::Tensor, at::Tensor> quantize_128x128_kernels(const at::Tensor& w) {
  if (reference_fallback(w.device(), "fp8gemm::quantize_128x128")) {
    return quantize_128x128(w);
  }
  return launch_128x128(w, false);
}

std::tuple<at::Tensor, at::Tensor> quantize_128x128_transposed_kernels(const at::Tensor& w) {
  if (reference_fallback(w.device(), "fp8gemm::quantize_128x128_transposed")) {
    return quantize_128x128_transposed(w);
  }
  return launch_128x128(w, true);
}

std::tuple<at::Tensor, at::Tensor> quantize_1x128_cuda(const at::Tensor& x) {
  const c10::cuda::CUDAGuard guard(x.device());
  return quantize_1x128_op(x, &quantize_1x128_kernels);
}

std::tuple<at::Tensor, at::Tensor> quantize_1x128_transposed_cuda(const at::Tensor& x) {
  const c10::cuda::CUDAGuard guard(x.device());
  return quantize_1x128_transposed_op(x, &quantize_1x128_transposed_kernels);
}

std::tuple<at::Tensor, at::Tensor> quantize_1x128_transposed_rows_cuda(const at::Tensor& x, const at::Tensor& rows) {
  const c10::cuda::CUDAGuard guard(x.device());
  return quantize_1x128_transposed_rows_op(x, rows, &quantize_1x128_transposed_rows_kernels);
}

std::tuple<at::Tensor, at::Tensor> quantize_128x128_cuda(const at::Tensor& w) {
  const c10::cuda::CUDAGuard guard(w.device());
  return quantize_128x128_op(w, &quantize_128x128_kernels);
}

std::tuple<at::Tensor, at::Tensor> quantize_128x128_transposed_cuda(const at::Tensor& w) {
  const c10::cuda::CUDAGuard guard(w.device());
  return quantize_128x128_transposed_op(w, &quantize_128x128_transposed_kernels);
}

// Forces configuration `config` (-1: the heuristic) on this thread for the scope of one private op.
struct ForcedConfig {
  ForcedConfig(const char* op, int64_t config, int num_configs) {
    TORCH_CHECK_VALUE(config >= -1 && config < num_configs, op, ": expected `config` in [-1, ", num_configs,
                      "), got ", config);
    forced_config = static_cast<int>(config);
  }
  ~ForcedConfig() { forced_config = -1; }
};

// Private, for tests and tuning: fp8gemm::dense with configuration `config` forced.
at::Tensor dense_forced_cuda(const at::Tensor& a, const at::Tensor& b, const at::Tensor& a_scale,
                             const at::Tensor& b_scale, const std::optional<at::Tensor>& bias,
                             std::optional<at::ScalarType> out_dtype, int64_t config) {
  const ForcedConfig forced("fp8gemm::_sm90_dense_forced", config, sm90_fp8_gemm_num_configs());
  return dense_cuda(a, b, a_scale, b_scale, bias, out_dtype);
}

// Private, for tests and tuning: fp8gemm::dense_1x128 with dense_1x128 configuration `config` forced.
at::Tensor dense_1x128_forced_cuda(const at::Tensor& a, const at::Tensor& b, const at::Tensor& a_scale,
                                   const at::Tensor& b_scale, std::optional<at::ScalarType> out_dtype,
                                   int64_t config) {
  const ForcedConfig forced("fp8gemm::_sm90_dense_1x128_forced", config, sm90_fp8_gemm_num_dense_1x128_configs());
  return dense_1x128_cuda(a, b, a_scale, b_scale, out_dtype);
}

// Private, for tests and tuning: the grouped ops with grouped configuration `config` forced.
at::Tensor grouped_moe_kernel_cuda(const at::Tensor& a, const at::Tensor& b, const at::Tensor& group_offsets,
                                   const std::optional<at::Tensor>& a_scale, const std::optional<at::Tensor>& b_scale,
                                   std::optional<at::ScalarType> out_dtype, int64_t config) {
  const ForcedConfig forced("fp8gemm::_sm90_grouped_moe_forced", config, sm90_fp8_gemm_num_grouped_configs());
  const c10::cuda::CUDAGuard guard(a.device());
  return grouped_moe_op(a, b, group_offsets, a_scale, b_scale, out_dtype, &grouped_moe_sm90);
}

at::Tensor grouped_moe_masked_kernel_cuda(const at::Tensor& a, const at::Tensor& b, const at::Tensor& masked_m,
                                          int64_t expected_m, const std::optional<at::Tensor>& a_scale,
                                          const std::optional<at::Tensor>& b_scale,
                                          std::optional<at::ScalarType> out_dtype, int64_t config) {
  const ForcedConfig forced("fp8gemm::_sm90_grouped_moe_masked_forced", config, sm90_fp8_gemm_num_grouped_configs());
  const c10::cuda::CUDAGuard guard(a.device());
  return grouped_moe_masked_op(a, b, masked_m, expected_m, a_scale, b_scale, out_dtype, &grouped_moe_masked_sm90);
}

// Private, for tests: grouped_moe_masked with configuration `config` forced, written into `out` (a
// caller's buffer: rows at or past masked_m[g] keep what they held).
void grouped_moe_masked_into_cuda(const at::Tensor& a, const at::Tensor& b, const at::Tensor& masked_m,
                                  int64_t expected_m, const at::Tensor& a_scale, const at::Tensor& b_scale,
                                  const at::Tensor& out, int64_t config) {
  constexpr const char* op = "fp8gemm::_sm90_grouped_moe_masked_into_forced";
  TORCH_CHECK_VALUE(a.dim() == 3 && b.dim() == 3 && out.dim() == 3 && out.is_contiguous() &&
                        out.device() == a.device() && out.size(0) == a.size(0) && out.size(1) == a.size(1) &&
                        out.size(2) == b.size(1) && (out.scalar_type() == at::kBFloat16 || out.scalar_type() == at::kFloat),
                    op, ": expected a contiguous bfloat16 or float32 `out` [G, max_m, N] on ", a.device(), ", got ",
                    out.scalar_type(), " ", out.sizes(), " on ", out.device());
  const ForcedConfig forced(op, config, sm90_fp8_gemm_num_grouped_configs());
  const c10::cuda::CUDAGuard guard(a.device());
  grouped_moe_masked_op(a, b, masked_m, expected_m, a_scale, b_scale, out.scalar_type(),
                        [&](const QuantizedOperand& qa, const QuantizedOperand& qb, const at::Tensor& counts,
                            int64_t expected, at::ScalarType dtype) {
                          return grouped_moe_masked_sm90_into(qa, qb, counts, expected, dtype, &out);
                        });
}

// Private, used by fp8gemm::grouped_moe_wgrad on Hopper: the K-grouped weight gradient
// out[g] = dyt[:, kb_g] . xt[:, kb_g]^T over group g's K blocks kb_g = [bounds[g], bounds[g + 1]),
// both operands quantized per 1x128 along K (the tokens, each expert's padded to whole blocks).
//   dyt fp8 [N, T], dyt_scale [N, T/128] (M-major), xt fp8 [K, T], xt_scale [K, T/128],
//   k_block_bounds int32 [G + 1] on the device -> out [G, N, K] in out_dtype (float32 or bfloat16).
at::Tensor k_grouped_wgrad_cuda(const at::Tensor& dyt, const at::Tensor& dyt_scale, const at::Tensor& xt,
                                const at::Tensor& xt_scale, const at::Tensor& k_block_bounds, int64_t num_groups,
                                at::ScalarType out_dtype) {
  constexpr const char* op = "fp8gemm::_k_grouped_wgrad";
  const c10::cuda::CUDAGuard guard(dyt.device());
  TORCH_CHECK_VALUE(dyt.scalar_type() == at::kFloat8_e4m3fn && xt.scalar_type() == at::kFloat8_e4m3fn, op,
                    ": expected float8_e4m3fn `dyt` and `xt`, got ", dyt.scalar_type(), " and ", xt.scalar_type());
  TORCH_CHECK_VALUE(dyt.dim() == 2 && xt.dim() == 2 && dyt.size(1) == xt.size(1), op,
                    ": expected dyt [N, T] and xt [K, T] with the same T, got ", dyt.sizes(), " and ", xt.sizes());
  const int64_t n = dyt.size(0), k = xt.size(0), t = dyt.size(1);
  TORCH_CHECK_VALUE(t % 128 == 0 && n % 8 == 0 && k % 8 == 0, op,
                    ": expected T % 128 == 0 and N, K multiples of 8, got T=", t, " N=", n, " K=", k);
  TORCH_CHECK_VALUE(dyt_scale.scalar_type() == at::kFloat && xt_scale.scalar_type() == at::kFloat &&
                        dyt_scale.sizes() == at::IntArrayRef({n, t / 128}) &&
                        xt_scale.sizes() == at::IntArrayRef({k, t / 128}),
                    op, ": expected float32 scales [N, T/128] and [K, T/128], got ", dyt_scale.sizes(), " and ",
                    xt_scale.sizes());
  TORCH_CHECK_VALUE(num_groups >= 1 && k_block_bounds.scalar_type() == at::kInt && k_block_bounds.dim() == 1 &&
                        k_block_bounds.size(0) == num_groups + 1 && k_block_bounds.is_contiguous(),
                    op, ": expected contiguous int32 `k_block_bounds` of G + 1 = ", num_groups + 1,
                    " entries, got ", k_block_bounds.scalar_type(), " ", k_block_bounds.sizes());
  TORCH_CHECK_VALUE(out_dtype == at::kFloat || out_dtype == at::kBFloat16, op,
                    ": expected out_dtype float32 or bfloat16, got ", out_dtype);
  for (const at::Tensor* tensor : {&dyt, &dyt_scale, &xt, &xt_scale, &k_block_bounds}) {
    TORCH_CHECK_VALUE(tensor->device() == dyt.device(), op, ": expected every tensor on ", dyt.device(),
                      ", got one on ", tensor->device());
  }
  TORCH_CHECK(has_sm90_kernels(dyt.device()), op, ": needs the sm_90a kernels (compute capability 9.0)");
  auto out = at::empty({num_groups, n, k}, dyt.options().dtype(out_dtype));
  if (n == 0 || k == 0) return out;
  auto dyt_c = dyt.stride(1) == 1 ? dyt : dyt.contiguous();
  auto xt_c = xt.stride(1) == 1 ? xt : xt.contiguous();
  auto a_scale = m_major_scales(dyt_scale);
  auto b_scale = m_major_scales(xt_scale);
  auto out_rows = out.view({num_groups * n, k});
  DenseGemmParams params = dense_params(dyt_c, xt_c, b_scale, out_rows);
  set_a_scales(params, a_scale, false);
  params.b_scale_ld = m_major_ld(b_scale);
  params.k_block_bounds = k_block_bounds.data_ptr<int32_t>();
  params.num_k_groups = static_cast<int>(num_groups);
  if (t == 0) return out.zero_();
  sm90_fp8_gemm_dense_1x128(params);
  return out;
}

std::vector<std::string> sm90_dense_configs() {
  std::vector<std::string> names;
  for (int i = 0; i < sm90_fp8_gemm_num_configs(); ++i) names.emplace_back(sm90_fp8_gemm_config_name(i));
  return names;
}

// Parameters that carry only a shape (bf16 out, nothing forced): what the heuristic looks at.
DenseGemmParams shape_params(int64_t m, int64_t n, int64_t k, int64_t num_sms) {
  DenseGemmParams params{};
  params.m = m;
  params.n = n;
  params.k = k;
  params.num_sms = static_cast<int>(num_sms);
  params.forced_config = -1;
  return params;
}

std::vector<std::string> sm90_grouped_configs() {
  std::vector<std::string> names;
  for (int i = 0; i < sm90_fp8_gemm_num_grouped_configs(); ++i) names.emplace_back(sm90_fp8_gemm_grouped_config_name(i));
  return names;
}

int64_t sm90_dense_pick_config(int64_t m, int64_t n, int64_t k, int64_t num_sms) {
  return sm90_fp8_gemm_pick_config(shape_params(m, n, k, num_sms));
}

// The grouped heuristic's choice for G experts of expected_m rows each, m rows in all.
int64_t sm90_grouped_pick_config(int64_t m, int64_t n, int64_t k, int64_t num_groups, int64_t expected_m,
                                 int64_t num_sms) {
  GroupedGemmParams params{};
  params.gemm = shape_params(m, n, k, num_sms);
  params.layout = GroupedLayout::kContiguous;
  params.num_groups = static_cast<int>(num_groups);
  params.expected_m = expected_m;
  return sm90_fp8_gemm_pick_grouped_config(params);
}

}  // namespace

// Introspection of the sm_90a kernels (CUDA builds only): their configurations and the heuristics.
TORCH_LIBRARY_FRAGMENT(fp8gemm, m) {
  m.def("_sm90_dense_forced(Tensor a, Tensor b, Tensor a_scale, Tensor b_scale, Tensor? bias=None, "
        "ScalarType? out_dtype=None, int config=-1) -> Tensor");
  m.def("_sm90_dense_configs() -> str[]", &sm90_dense_configs);
  m.def("_sm90_grouped_configs() -> str[]", &sm90_grouped_configs);
  m.def("_k_grouped_wgrad(Tensor dyt, Tensor dyt_scale, Tensor xt, Tensor xt_scale, Tensor k_block_bounds, "
        "int num_groups, ScalarType out_dtype) -> Tensor");
  m.def("_sm90_dense_1x128_forced(Tensor a, Tensor b, Tensor a_scale, Tensor b_scale, ScalarType? out_dtype=None, "
        "int config=-1) -> Tensor");
  m.def("_sm90_dense_pick_config(int m, int n, int k, int num_sms) -> int", &sm90_dense_pick_config);
  m.def("_sm90_grouped_pick_config(int m, int n, int k, int num_groups, int expected_m, int num_sms) -> int",
        &sm90_grouped_pick_config);
  m.def("_sm90_grouped_moe_forced(Tensor a, Tensor b, Tensor group_offsets, Tensor? a_scale=None, Tensor? b_scale=None, "
        "ScalarType? out_dtype=None, int config=-1) -> Tensor");
  m.def("_sm90_grouped_moe_masked_forced(Tensor a, Tensor b, Tensor masked_m, int expected_m, Tensor? a_scale=None, "
        "Tensor? b_scale=None, ScalarType? out_dtype=None, int config=-1) -> Tensor");
  m.def("_sm90_grouped_moe_masked_into_forced(Tensor a, Tensor b, Tensor masked_m, int expected_m, Tensor a_scale, "
        "Tensor b_scale, Tensor(a!) out, int config=-1) -> ()");
}

TORCH_LIBRARY_IMPL(fp8gemm, CUDA, m) {
  m.impl("_sm90_dense_forced", &dense_forced_cuda);
  m.impl("_sm90_dense_1x128_forced", &dense_1x128_forced_cuda);
  m.impl("_sm90_grouped_moe_forced", &grouped_moe_kernel_cuda);
  m.impl("_sm90_grouped_moe_masked_forced", &grouped_moe_masked_kernel_cuda);
  m.impl("_sm90_grouped_moe_masked_into_forced", &grouped_moe_masked_into_cuda);
  m.impl("dense", &dense_cuda);
  m.impl("dense_1x128", &dense_1x128_cuda);
  m.impl("_k_grouped_wgrad", &k_grouped_wgrad_cuda);
  m.impl("grouped_moe", &grouped_moe_cuda);
  m.impl("grouped_moe_masked", &grouped_moe_masked_cuda);
  m.impl("quantize_1x128", &quantize_1x128_cuda);
  m.impl("quantize_1x128_transposed", &quantize_1x128_transposed_cuda);
  m.impl("_quantize_1x128_transposed_rows", &quantize_1x128_transposed_rows_cuda);
  m.impl("quantize_128x128", &quantize_128x128_cuda);
  m.impl("quantize_128x128_transposed", &quantize_128x128_transposed_cuda);
}

}  // namespace torch_fp8gemm
