// Measurement probe (not part of the library): times a reference FP8 GEMM kernel compiled elsewhere
// into a cubin -- DeepGEMM's sm90 `fp8_gemm_kernel` (July 2025 release, 1x128 / 128x128 scaling, bf16
// out), built by bench/standalone/probe_reference_kernel.sh from a local checkout that is never
// committed -- side by side with our kernel on the same operands, in one process, under the same
// timing (events around each launch, 512 MB L2 flush before each), and checks that both agree.
// Purpose: learn under which conditions (clock, power, config) the reference reaches its published
// 1494 TFLOP/s at 4096 x 7168 x 16384 on this H200, to guide our kernel's design (RESULTS.md).
//
// Usage: probe_reference_kernel CUBIN M N K BLOCK_M BLOCK_N CLUSTER NUM_CTAS SMEM_BYTES
// The cubin must be compiled for exactly this N, K, BLOCK_M, BLOCK_N and cluster size (template
// arguments of the reference kernel); its kernel parameters are
//   (float* b_scale, int* grouped_layout, uint32_t m, CUtensorMap a, CUtensorMap b, CUtensorMap a_scale,
//    CUtensorMap d)
// with a [m, k] fp8 box {128, BLOCK_M}, b [n, k] fp8 box {128, BLOCK_N} (128B swizzle), a_scale [kb, m4]
// fp32 box {BLOCK_M, 1}, d [m, n] bf16 box {64, BLOCK_M} (128B swizzle).
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "../../csrc/kernels/sm90_fp8_gemm_api.h"
#include "cuda_check.h"

using namespace torch_fp8gemm;

#define CU(x)                                                                      \
  do {                                                                             \
    CUresult r_ = (x);                                                             \
    if (r_ != CUDA_SUCCESS) {                                                      \
      const char* s_ = nullptr;                                                    \
      cuGetErrorString(r_, &s_);                                                   \
      fprintf(stderr, "CU error %s at %s:%d: %s\n", s_ ? s_ : "?", __FILE__, __LINE__, #x); \
      exit(2);                                                                     \
    }                                                                              \
  } while (0)

__global__ void fill_fp8(uint8_t* p, int64_t count, uint32_t seed) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < count; i += (int64_t)gridDim.x * blockDim.x) {
    uint32_t h = (uint32_t)i * 2654435761u ^ seed * 40503u;
    h ^= h >> 13, h *= 0x5bd1e995u, h ^= h >> 15;
    // e4m3 bit patterns with exponent field 4..10: finite, magnitudes ~2^-3..2^3, random sign
    p[i] = (uint8_t)((h & 0x80) | ((4 + (h >> 8) % 7) << 3) | ((h >> 16) & 7));
  }
}

__global__ void fill_scale(float* p, int64_t count, uint32_t seed) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < count; i += (int64_t)gridDim.x * blockDim.x) {
    uint32_t h = (uint32_t)i * 2246822519u ^ seed * 3266489917u;
    h ^= h >> 15;
    p[i] = exp2f(-6.f + (float)(h % 1024) / 1024.f * 2.f);
  }
}

// Relative Frobenius difference of two bf16 [m, n] outputs.
__global__ void diff_kernel(const __nv_bfloat16* x, const __nv_bfloat16* y, int64_t count, double* acc) {
  double d2 = 0, r2 = 0;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < count; i += (int64_t)gridDim.x * blockDim.x) {
    const double a = __bfloat162float(x[i]), b = __bfloat162float(y[i]);
    d2 += (a - b) * (a - b), r2 += b * b;
  }
  atomicAdd(acc, d2), atomicAdd(acc + 1, r2);
}

static CUtensorMap tensor_map(CUtensorMapDataType type, void* base, uint64_t cols, uint64_t rows, uint64_t row_bytes,
                              uint32_t box_cols, uint32_t box_rows, CUtensorMapSwizzle swizzle) {
  CUtensorMap map;
  const cuuint64_t dims[2] = {cols, rows};
  const cuuint64_t strides[1] = {row_bytes};
  const cuuint32_t box[2] = {box_cols, box_rows};
  const cuuint32_t elem[2] = {1, 1};
  CU(cuTensorMapEncodeTiled(&map, type, 2, base, dims, strides, box, elem, CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle,
                            CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE));
  return map;
}

int main(int argc, char** argv) {
  if (argc != 10) {
    fprintf(stderr, "usage: %s CUBIN M N K BLOCK_M BLOCK_N CLUSTER NUM_CTAS SMEM_BYTES\n", argv[0]);
    return 1;
  }
  const char* cubin = argv[1];
  const int64_t m = atol(argv[2]), n = atol(argv[3]), k = atol(argv[4]);
  const int block_m = atoi(argv[5]), block_n = atoi(argv[6]);
  const int cluster = atoi(argv[7]), num_ctas = atoi(argv[8]), smem = atoi(argv[9]);
  const int64_t kb = (k + 127) / 128, nb = (n + 127) / 128, m4 = (m + 3) / 4 * 4;

  CK(cudaFree(nullptr));  // creates the primary context the driver API calls below use
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));

  uint8_t *a, *b;
  float *sa, *sb;
  __nv_bfloat16 *out_ref, *out_ours;
  void* flush;
  double* acc;
  CK(cudaMalloc(&a, m * k));
  CK(cudaMalloc(&b, n * k));
  CK(cudaMalloc(&sa, kb * m4 * 4));
  CK(cudaMalloc(&sb, nb * kb * 4));
  CK(cudaMalloc(&out_ref, m * n * 2));
  CK(cudaMalloc(&out_ours, m * n * 2));
  CK(cudaMalloc(&flush, 512ull << 20));
  CK(cudaMalloc(&acc, 16));
  int* grouped_layout;
  CK(cudaMalloc(&grouped_layout, 16));
  fill_fp8<<<2048, 256>>>(a, m * k, 1);
  fill_fp8<<<2048, 256>>>(b, n * k, 2);
  fill_scale<<<256, 256>>>(sa, kb * m4, 3);
  fill_scale<<<256, 256>>>(sb, nb * kb, 4);
  CK(cudaDeviceSynchronize());

  // Reference kernel from the cubin.
  CUmodule module;
  CU(cuModuleLoad(&module, cubin));
  CUfunction fn = nullptr;
  {  // the cubin holds one kernel: find it by enumerating
    unsigned count = 0;
    CU(cuModuleGetFunctionCount(&count, module));
    std::vector<CUfunction> fns(count);
    CU(cuModuleEnumerateFunctions(fns.data(), count, module));
    if (count != 1) {
      fprintf(stderr, "expected one kernel in %s, found %u\n", cubin, count);
      return 1;
    }
    fn = fns[0];
  }
  CU(cuFuncSetAttribute(fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, smem));
  CUtensorMap ta = tensor_map(CU_TENSOR_MAP_DATA_TYPE_UINT8, a, k, m, k, 128, block_m, CU_TENSOR_MAP_SWIZZLE_128B);
  CUtensorMap tb = tensor_map(CU_TENSOR_MAP_DATA_TYPE_UINT8, b, k, n, k, 128, block_n, CU_TENSOR_MAP_SWIZZLE_128B);
  CUtensorMap tsa = tensor_map(CU_TENSOR_MAP_DATA_TYPE_FLOAT32, sa, m4, kb, m4 * 4, block_m, 1, CU_TENSOR_MAP_SWIZZLE_NONE);
  CUtensorMap td = tensor_map(CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, out_ref, n, m, n * 2, 64, block_m, CU_TENSOR_MAP_SWIZZLE_128B);
  uint32_t shape_m = static_cast<uint32_t>(m);
  void* params[] = {&sb, &grouped_layout, &shape_m, &ta, &tb, &tsa, &td};
  CUlaunchAttribute attr;
  attr.id = CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION;
  attr.value.clusterDim.x = cluster;
  attr.value.clusterDim.y = attr.value.clusterDim.z = 1;
  CUlaunchConfig cfg = {};
  cfg.gridDimX = num_ctas, cfg.gridDimY = cfg.gridDimZ = 1;
  cfg.blockDimX = (block_m == 64 ? 1 : 2) * 128 + 128, cfg.blockDimY = cfg.blockDimZ = 1;
  cfg.sharedMemBytes = smem;
  cfg.hStream = nullptr;
  cfg.attrs = &attr;
  cfg.numAttrs = 1;
  auto launch_ref = [&] { CU(cuLaunchKernelEx(&cfg, fn, params, nullptr)); };

  // Ours on the same operands: the heuristic's plan, or every (config, SM count) pair of
  // OURS_CONFIGS="13,17" x OURS_SMS="132,128" x OURS_RASTER="0,-16" (config indices into our list,
  // SM counts, DenseGemmParams::raster_band values; a measurement build with
  // -DTORCH_FP8GEMM_EXPERIMENT_CONFIGS appends the multicast variants after the library's list).
  DenseGemmParams base{};
  base.a = a, base.b = b, base.a_scale = sa, base.b_scale = sb, base.bias = nullptr, base.out = out_ours;
  base.m = m, base.n = n, base.k = k, base.lda = k, base.ldb = k, base.a_scale_ld = m4, base.ldo = n;
  base.out_kind = OutKind::kBF16, base.num_sms = prop.multiProcessorCount, base.forced_config = -1;
  base.stream = nullptr;
  auto parse_list = [](const char* env, int fallback) {
    std::vector<int> v;
    if (env == nullptr || *env == 0) return std::vector<int>{fallback};
    for (const char* c = env; *c;) {
      v.push_back(atoi(c));
      while (*c && *c != ',') ++c;
      if (*c == ',') ++c;
    }
    return v;
  };
  std::vector<DenseGemmParams> ours;
  std::vector<std::string> labels;
  for (int config : parse_list(getenv("OURS_CONFIGS"), -1)) {
    for (int sms : parse_list(getenv("OURS_SMS"), prop.multiProcessorCount)) {
      for (int band : parse_list(getenv("OURS_RASTER"), 0)) {
        DenseGemmParams p = base;
        p.forced_config = config, p.num_sms = sms, p.raster_band = band;
        const DensePlan plan = sm90_fp8_gemm_plan(p);
        ours.push_back(p);
        labels.push_back(std::string(sm90_fp8_gemm_config_name(plan.config)) + " sms=" + std::to_string(sms) +
                         " band=" + std::to_string(band));
      }
    }
  }

  launch_ref();
  CK(cudaDeviceSynchronize());
  for (size_t j = 0; j < ours.size(); ++j) {
    CK(cudaMemset(out_ours, 0xff, m * n * 2));  // NaN poison: every output must be written
    sm90_fp8_gemm_dense(ours[j]);
    CK(cudaDeviceSynchronize());
    CK(cudaMemset(acc, 0, 16));
    diff_kernel<<<1024, 256>>>(out_ref, out_ours, m * n, acc);
    double h[2];
    CK(cudaMemcpy(h, acc, 16, cudaMemcpyDeviceToHost));
    printf("m=%ld n=%ld k=%ld %s: relative difference reference vs ours %.3e\n", (long)m, (long)n, (long)k,
           labels[j].c_str(), std::sqrt(h[0] / std::max(h[1], 1e-300)));
  }

  // Alternate the kernels so all see the same thermal / power state.
  const int iters = getenv("ITERS") ? atoi(getenv("ITERS")) : 30;
  const double flops = 2.0 * m * n * k;
  std::vector<std::vector<double>> times(ours.size() + 1);
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  for (int i = 0; i < iters + 5; ++i) {
    for (size_t which = 0; which <= ours.size(); ++which) {
      CK(cudaMemsetAsync(flush, i & 0xff, 512ull << 20));
      CK(cudaEventRecord(e0));
      if (which == 0) {
        launch_ref();
      } else {
        sm90_fp8_gemm_dense(ours[which - 1]);
      }
      CK(cudaEventRecord(e1));
      CK(cudaEventSynchronize(e1));
      float ms;
      CK(cudaEventElapsedTime(&ms, e0, e1));
      if (i >= 5) times[which].push_back(ms * 1e3);
    }
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  const double r = median(times[0]);
  printf("  reference: %.1f us  %.0f TFLOP/s\n", r, flops / r / 1e6);
  for (size_t j = 0; j < ours.size(); ++j) {
    const double o = median(times[j + 1]);
    printf("  ours %-40s %.1f us  %.0f TFLOP/s  ours / reference %.3f\n", labels[j].c_str(), o, flops / o / 1e6,
           r / o);
  }
  return 0;
}
