// TORCH_LIBRARY(fp8gemm): the op schemas (the public contract) and the CPU kernels, which run the
// ATen reference. CUDA kernels register from csrc/ops/cuda_ops.cu; fake kernels and autograd from
// torch_fp8gemm/ops.py. Arguments are positional-or-keyword so callers may name them.
#include <Python.h>
#include <torch/library.h>

#include "fp8gemm.h"

namespace torch_fp8gemm {
namespace {

at::Tensor dense_cpu(const at::Tensor& a, const at::Tensor& b, const std::optional<at::Tensor>& a_scale,
                     const std::optional<at::Tensor>& b_scale, const std::optional<at::Tensor>& bias,
                     std::optional<at::ScalarType> out_dtype) {
  return dense_op(a, b, a_scale, b_scale, bias, out_dtype, &dense_reference);
}

at::Tensor dense_1x128_cpu(const at::Tensor& a, const at::Tensor& b, const std::optional<at::Tensor>& a_scale,
                           const std::optional<at::Tensor>& b_scale, std::optional<at::ScalarType> out_dtype) {
  return dense_1x128_op(a, b, a_scale, b_scale, out_dtype, &dense_1x128_reference);
}

at::Tensor grouped_moe_cpu(const at::Tensor& a, const at::Tensor& b, const at::Tensor& group_offsets,
                           const std::optional<at::Tensor>& a_scale, const std::optional<at::Tensor>& b_scale,
                           std::optional<at::ScalarType> out_dtype) {
  return grouped_moe_op(a, b, group_offsets, a_scale, b_scale, out_dtype, &grouped_moe_reference);
}

at::Tensor grouped_moe_masked_cpu(const at::Tensor& a, const at::Tensor& b, const at::Tensor& masked_m,
                                  int64_t expected_m, const std::optional<at::Tensor>& a_scale,
                                  const std::optional<at::Tensor>& b_scale,
                                  std::optional<at::ScalarType> out_dtype) {
  return grouped_moe_masked_op(a, b, masked_m, expected_m, a_scale, b_scale, out_dtype,
                               &grouped_moe_masked_reference);
}

std::tuple<at::Tensor, at::Tensor> quantize_1x128_cpu(const at::Tensor& x) {
  return quantize_1x128_op(x, &quantize_1x128);
}

std::tuple<at::Tensor, at::Tensor> quantize_1x128_transposed_cpu(const at::Tensor& x) {
  return quantize_1x128_transposed_op(x, &quantize_1x128_transposed);
}

std::tuple<at::Tensor, at::Tensor> quantize_1x128_transposed_rows_cpu(const at::Tensor& x, const at::Tensor& rows) {
  return quantize_1x128_transposed_rows_op(x, rows, &quantize_1x128_transposed_rows);
}

std::tuple<at::Tensor, at::Tensor> quantize_128x128_cpu(const at::Tensor& w) {
  return quantize_128x128_op(w, &quantize_128x128);
}

std::tuple<at::Tensor, at::Tensor> quantize_128x128_transposed_cpu(const at::Tensor& w) {
  return quantize_128x128_transposed_op(w, &quantize_128x128_transposed);
}

bool cuda_kernels_built() {
#ifdef TORCH_FP8GEMM_WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace

TORCH_LIBRARY(fp8gemm, m) {
  // flexible_layout (dense, grouped_moe, grouped_moe_masked): Inductor passes the operands in the
  // layout it produced them instead of forcing the traced strides. Under the default constraint it
  // re-materialized the [M, K] view of the compiled activation quantization's [M, K/128, 128] fp8
  // output as a separate kernel that read x a second time (FP8Linear 18432 -> 7168 at 4096 tokens on
  // the H200: 51 + 66 us instead of one ~72 us kernel). The ops check strides and alignment at run
  // time and raise a clear error for operands they cannot take.
  const std::vector<at::Tag> flexible{at::Tag::flexible_layout};
  m.def("dense(Tensor a, Tensor b, Tensor? a_scale=None, Tensor? b_scale=None, Tensor? bias=None, "
        "ScalarType? out_dtype=None) -> Tensor", flexible);
  // a @ b.T with both operands scaled per 1x128 group along K (weight gradients: both operands are
  // quantized along the token dim).
  m.def("dense_1x128(Tensor a, Tensor b, Tensor? a_scale=None, Tensor? b_scale=None, "
        "ScalarType? out_dtype=None) -> Tensor");
  m.def("grouped_moe(Tensor a, Tensor b, Tensor group_offsets, Tensor? a_scale=None, "
        "Tensor? b_scale=None, ScalarType? out_dtype=None) -> Tensor", flexible);
  m.def("grouped_moe_masked(Tensor a, Tensor b, Tensor masked_m, int expected_m, Tensor? a_scale=None, "
        "Tensor? b_scale=None, ScalarType? out_dtype=None) -> Tensor", flexible);
  m.def("quantize_1x128(Tensor x) -> (Tensor, Tensor)");
  // x [M, K] -> quantize_1x128(x.t().contiguous()) in one pass: x^T quantized per 1x128 group along M
  // (weight-gradient operands are quantized along the token dim).
  m.def("quantize_1x128_transposed(Tensor x) -> (Tensor, Tensor)");
  // Private: quantize_1x128_transposed of x's rows gathered by `rows` (zeros where rows[j] is out of
  // [0, M)); the MoE weight gradient's expert-block layout in the same pass.
  m.def("_quantize_1x128_transposed_rows(Tensor x, Tensor rows) -> (Tensor, Tensor)");
  m.def("quantize_128x128(Tensor w) -> (Tensor, Tensor)");
  // w [..., N, K] -> the transposes of quantize_128x128(w)'s outputs in one pass: w^T [..., K, N] in
  // fp8 with scales [..., ceil(K/128), ceil(N/128)] (the dgrad operand of the training recipe).
  m.def("quantize_128x128_transposed(Tensor w) -> (Tensor, Tensor)");
  // Build introspection: whether the sm_90a kernels were compiled into this extension.
  m.def("cuda_kernels_built() -> bool", &cuda_kernels_built);
}

TORCH_LIBRARY_IMPL(fp8gemm, CPU, m) {
  m.impl("dense", &dense_cpu);
  m.impl("dense_1x128", &dense_1x128_cpu);
  m.impl("grouped_moe", &grouped_moe_cpu);
  m.impl("grouped_moe_masked", &grouped_moe_masked_cpu);
  m.impl("quantize_1x128", &quantize_1x128_cpu);
  m.impl("quantize_1x128_transposed", &quantize_1x128_transposed_cpu);
  m.impl("_quantize_1x128_transposed_rows", &quantize_1x128_transposed_rows_cpu);
  m.impl("quantize_128x128", &quantize_128x128_cpu);
  m.impl("quantize_128x128_transposed", &quantize_128x128_transposed_cpu);
}

}  // namespace torch_fp8gemm

// `import torch_fp8gemm._C` loads this library, which runs the registrations above. The module
// itself is empty; everything is reached through torch.ops.fp8gemm.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
