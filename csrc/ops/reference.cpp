// ATen reference implementation of the recipe. Readable and vectorized, device generic: it is the
// CPU kernel of every op, the fallback on GPUs without the sm_90a kernels, and the oracle of the
// GPU tests. Everything accumulates in float32.
#include "fp8gemm.h"

namespace torch_fp8gemm {
namespace {

// Contiguous strides of `sizes` (the leading, token dims of a 1x128-quantized tensor).
std::vector<int64_t> token_strides(at::IntArrayRef sizes) {
  std::vector<int64_t> strides(sizes.size());
  int64_t running = 1;
  for (int64_t i = static_cast<int64_t>(sizes.size()) - 1; i >= 0; --i) {
    strides[i] = running;
    running *= std::max<int64_t>(sizes[i], 1);
  }
  return strides;
}

// Zero-pads the last `dims.size()` dims of x up to the next multiple of 128.
at::Tensor pad_to_scale_blocks(const at::Tensor& x, std::initializer_list<int64_t> dims) {
  std::vector<int64_t> pad;  // constant_pad_nd takes (last_lo, last_hi, prev_lo, prev_hi, ...)
  for (auto it = std::rbegin(dims); it != std::rend(dims); ++it) {
    const int64_t size = x.size(*it);
    pad.push_back(0);
    pad.push_back(ceil_div(size, kScaleBlock) * kScaleBlock - size);
  }
  return at::constant_pad_nd(x, pad, 0);
}

// scale[..., nb] -> per-element [..., n]: repeats every block scale 128 times along `dim`.
at::Tensor expand_block_scale(const at::Tensor& scale, int64_t dim, int64_t size) {
  return scale.repeat_interleave(kScaleBlock, dim).narrow(dim, 0, size);
}

// 448 as a 0-dim tensor on x's device. Dividing by it is a true IEEE division everywhere; dividing
// by a host scalar is a multiply by its (inexact) reciprocal on CUDA, which moves scales by an ulp
// and flips fp8 roundings at ties, so GPU and CPU quantization would disagree.
at::Tensor fp8_max_like(const at::Tensor& x) { return at::scalar_tensor(kFp8Max, x.options()); }

}  // namespace

std::tuple<at::Tensor, at::Tensor> quantize_1x128(const at::Tensor& x) {
  const int64_t k = x.size(-1);
  const int64_t kb = ceil_div(k, kScaleBlock);
  const auto lead = x.sizes().slice(0, x.dim() - 1);
  const int64_t m = c10::multiply_integers(lead);

  auto groups = pad_to_scale_blocks(x.to(at::kFloat).reshape({m, k}), {1}).view({m, kb, kScaleBlock});
  auto scale = groups.abs().amax(-1).clamp_min(kAmaxFloor).div(fp8_max_like(groups));  // [m, kb]
  auto values = groups.div(scale.unsqueeze(-1)).clamp(-kFp8Max, kFp8Max).view({m, kb * kScaleBlock});
  // Contiguous, with canonical strides even when empty, whatever x's strides.
  auto x_fp8 = at::empty(x.sizes(), x.options().dtype(at::kFloat8_e4m3fn));
  x_fp8.view({m, k}).copy_(values.narrow(1, 0, k));

  // M-major storage [kb, round_up(m, 4)]: TMA needs 16-byte aligned rows of float32.
  const int64_t m_padded = ceil_div(m, 4) * 4;
  auto storage = at::zeros({kb, m_padded}, x.options().dtype(at::kFloat));
  storage.narrow(1, 0, m).copy_(scale.t());
  return {x_fp8, m_major_scale_view(storage, lead)};
}

at::Tensor m_major_scale_view(const at::Tensor& storage, at::IntArrayRef lead) {
  std::vector<int64_t> sizes(lead.begin(), lead.end());
  sizes.push_back(storage.size(0));
  auto strides = token_strides(lead);
  strides.push_back(storage.size(1));
  return storage.as_strided(sizes, strides);
}

std::tuple<at::Tensor, at::Tensor> quantize_1x128_transposed(const at::Tensor& x) {
  return quantize_1x128(x.t().contiguous());
}

std::tuple<at::Tensor, at::Tensor> quantize_1x128_transposed_rows(const at::Tensor& x, const at::Tensor& rows) {
  const int64_t m = x.size(0);
  auto valid = rows.ge(0).logical_and(rows.lt(m));
  auto gathered = at::zeros({rows.size(0), x.size(1)}, x.options());
  if (m > 0) {
    // where, not a multiply by the mask: a dropped row holding inf or NaN must still read as zeros.
    gathered = at::where(valid.unsqueeze(1), x.index_select(0, rows.clamp(0, m - 1)), at::zeros({}, x.options()));
  }
  return quantize_1x128_transposed(gathered);
}

std::tuple<at::Tensor, at::Tensor> quantize_128x128(const at::Tensor& w) {
  const int64_t n = w.size(-2), k = w.size(-1);
  const int64_t nb = ceil_div(n, kScaleBlock), kb = ceil_div(k, kScaleBlock);
  const auto lead = w.sizes().slice(0, w.dim() - 2);
  const int64_t batch = c10::multiply_integers(lead);

  auto blocks = pad_to_scale_blocks(w.to(at::kFloat).reshape({batch, n, k}), {1, 2})
                    .view({batch, nb, kScaleBlock, kb, kScaleBlock});
  auto scale = blocks.abs().amax({2, 4}).clamp_min(kAmaxFloor).div(fp8_max_like(blocks));  // [batch, nb, kb]
  auto values = blocks.div(scale.view({batch, nb, 1, kb, 1}))
                    .clamp(-kFp8Max, kFp8Max)
                    .view({batch, nb * kScaleBlock, kb * kScaleBlock});
  auto w_fp8 = at::empty(w.sizes(), w.options().dtype(at::kFloat8_e4m3fn));
  w_fp8.view({batch, n, k}).copy_(values.narrow(1, 0, n).narrow(2, 0, k));

  std::vector<int64_t> scale_sizes(lead.begin(), lead.end());
  scale_sizes.push_back(nb);
  scale_sizes.push_back(kb);
  return {w_fp8, scale.reshape(scale_sizes).clone(at::MemoryFormat::Contiguous)};
}

std::tuple<at::Tensor, at::Tensor> quantize_128x128_transposed(const at::Tensor& w) {
  auto [w_fp8, scale] = quantize_128x128(w);
  // clone, not contiguous(): a transpose with a size-1 dim already counts as contiguous but keeps
  // its strides; the kernels' outputs have the standard ones.
  return {w_fp8.transpose(-2, -1).clone(at::MemoryFormat::Contiguous),
          scale.transpose(-2, -1).clone(at::MemoryFormat::Contiguous)};
}

at::Tensor dequantize_1x128(const at::Tensor& x_fp8, const at::Tensor& scale) {
  return x_fp8.to(at::kFloat) * expand_block_scale(scale, -1, x_fp8.size(-1));
}

at::Tensor dequantize_128x128(const at::Tensor& w_fp8, const at::Tensor& scale) {
  auto per_row = expand_block_scale(scale, -2, w_fp8.size(-2));
  return w_fp8.to(at::kFloat) * expand_block_scale(per_row, -1, w_fp8.size(-1));
}

at::Tensor dense_1x128_reference(const QuantizedOperand& a, const QuantizedOperand& b, at::ScalarType out_dtype) {
  return at::matmul(dequantize_1x128(a.data, a.scale), dequantize_1x128(b.data, b.scale).t()).to(out_dtype);
}

at::Tensor dense_reference(const QuantizedOperand& a, const QuantizedOperand& b,
                           const std::optional<at::Tensor>& bias, at::ScalarType out_dtype) {
  auto out = at::matmul(dequantize_1x128(a.data, a.scale), dequantize_128x128(b.data, b.scale).t());
  if (bias.has_value()) out.add_(bias->to(at::kFloat));
  return out.to(out_dtype);
}

at::Tensor grouped_moe_reference(const QuantizedOperand& a, const QuantizedOperand& b,
                                 const at::Tensor& group_offsets, at::ScalarType out_dtype) {
  const int64_t m = a.data.size(0), n = b.data.size(1);
  auto out = at::zeros({m, n}, a.data.options().dtype(out_dtype));
  // The reference reads the offsets on the host (a device sync on GPUs); offsets are clamped to
  // [previous end, M], so rows past the last end stay zero.
  auto ends = group_offsets.to(at::kCPU, at::kLong);
  const int64_t* ends_ptr = ends.data_ptr<int64_t>();
  int64_t start = 0;
  for (int64_t g = 0; g < b.data.size(0); ++g) {
    const int64_t end = std::min(std::max(ends_ptr[g], start), m);
    if (end > start) {
      QuantizedOperand rows{a.data.narrow(0, start, end - start), a.scale.narrow(0, start, end - start)};
      QuantizedOperand expert{b.data[g], b.scale[g]};
      out.narrow(0, start, end - start).copy_(dense_reference(rows, expert, std::nullopt, out_dtype));
    }
    start = end;
  }
  return out;
}

at::Tensor grouped_moe_masked_reference(const QuantizedOperand& a, const QuantizedOperand& b,
                                        const at::Tensor& masked_m, int64_t /*expected_m*/,
                                        at::ScalarType out_dtype) {
  const int64_t max_m = a.data.size(1);
  auto out = at::bmm(dequantize_1x128(a.data, a.scale), dequantize_128x128(b.data, b.scale).transpose(1, 2));
  // Rows at or past masked_m[g] are zero. Stays on the device: no host read of masked_m.
  auto row = at::arange(max_m, masked_m.options().dtype(at::kLong));
  auto valid = row.unsqueeze(0) < masked_m.to(at::kLong).unsqueeze(1);  // [G, max_m]
  // masked_fill, not a multiply: rows past masked_m may hold garbage (NaN * 0 is NaN).
  return out.masked_fill_(valid.logical_not().unsqueeze(-1), 0).to(out_dtype);
}

}  // namespace torch_fp8gemm
