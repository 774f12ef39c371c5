// Standalone correctness + timing harness for the dense sm_90a FP8 GEMM (no torch).
// Build: bench/standalone/build_and_run.sh (nvcc, this file + csrc/kernels/*.cu).
// Usage: dense_check [--quick] [--no-bench] [--tune] [--out DIR]
//   correctness: random e4m3 A/B and scales, GPU reference (per-128-K fp32 dot products, fp64 sum of
//   scaled block sums), output poisoned with NaN beforehand, guard region around the output checked,
//   relative Frobenius error vs the library's bars (testing.py: bf16 2.5e-3, or 2^-8 + 3e-4 under 1024
//   outputs; fp32 3e-4), bit-identical reruns.
//   bench: the 19 DeepSeek-V3 dense anchor shapes (kShapes below), L2 flushed before each launch,
//   median of per-launch event times; --tune also times every config per shape.
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdarg>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "../../csrc/kernels/sm90_fp8_gemm_api.h"
#include "cuda_check.h"


using namespace torch_fp8gemm;


static FILE* g_log = nullptr;
static void logf(const char* fmt, ...) {
  char buf[4096];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  fputs(buf, stdout);
  fflush(stdout);
  if (g_log) fputs(buf, g_log), fflush(g_log);
}

// ------------------------------------------------------------------------------------ random data
__device__ __forceinline__ uint64_t splitmix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
__device__ __forceinline__ float u01(uint64_t h) { return (h >> 40) * (1.0f / 16777216.0f); }

// fp8 [rows, ld]: columns < cols random in about [-range, range] (e4m3); padding columns get 448 garbage.
__global__ void fill_fp8(uint8_t* p, int64_t rows, int64_t cols, int64_t ld, uint64_t seed, float range) {
  const int64_t total = rows * ld;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t c = i % ld;
    float v = 448.f;
    if (c < cols) {
      const uint64_t h = splitmix(seed ^ (uint64_t)i * 0x632BE59BD9B4E019ull);
      v = (u01(h) * 2.f - 1.f) * range;
    }
    p[i] = __nv_fp8_e4m3(v).__x;
  }
}

// fp32 scales [rows, ld]: 2^e * (1 + u), e uniform integer in [emin, emax]; padding gets NaN.
__global__ void fill_scale(float* p, int64_t rows, int64_t cols, int64_t ld, uint64_t seed, int emin, int emax) {
  const int64_t total = rows * ld;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t c = i % ld;
    float v = __int_as_float(0x7fc00000);
    if (c < cols) {
      const uint64_t h = splitmix(seed ^ (uint64_t)i * 0x2545F4914F6CDD1Dull);
      const int e = emin + (int)((h & 0xffff) % (uint64_t)(emax - emin + 1));
      v = ldexpf(1.f + u01(h), e);
    }
    p[i] = v;
  }
}

template <typename T>
__global__ void fill_bias(T* p, int64_t n, uint64_t seed) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const float v = (u01(splitmix(seed ^ (uint64_t)i)) * 2.f - 1.f) * 8.f;
    if constexpr (sizeof(T) == 4) p[i] = v; else p[i] = __float2bfloat16_rn(v);
  }
}

__global__ void fill_u32(uint32_t* p, int64_t count, uint32_t v) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < count; i += (int64_t)gridDim.x * blockDim.x)
    p[i] = v;
}

// ------------------------------------------------------------------------------------ reference
// ref[r, c] = sum_kb sa[kb, r] * sb[c/128, kb] * (fp32 dot of the 128-wide block) (+ bias), in fp64.
constexpr int RT = 16;
__global__ void reference_kernel(const uint8_t* A, const uint8_t* B, const float* sa, const float* sb, const void* bias,
                                 int bias_fp32, int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb,
                                 int64_t sa_ld, double* ref) {
  __shared__ float as[RT][129];
  __shared__ float bs[RT][129];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t r = blockIdx.y * (int64_t)RT + ty, c = blockIdx.x * (int64_t)RT + tx;
  const int64_t nkb = (k + 127) / 128;
  double acc = 0.0;
  for (int64_t kb = 0; kb < nkb; ++kb) {
    for (int i = ty * RT + tx; i < RT * 128; i += RT * RT) {
      const int rr = i / 128, kk = i % 128;
      const int64_t kg = kb * 128 + kk;
      const int64_t ar = blockIdx.y * (int64_t)RT + rr, bc = blockIdx.x * (int64_t)RT + rr;
      __nv_fp8_e4m3 va, vb;
      va.__x = (ar < m && kg < k) ? A[ar * lda + kg] : 0;
      vb.__x = (bc < n && kg < k) ? B[bc * ldb + kg] : 0;
      as[rr][kk] = float(va);
      bs[rr][kk] = float(vb);
    }
    __syncthreads();
    float dot = 0.f;
#pragma unroll 8
    for (int kk = 0; kk < 128; ++kk) dot = fmaf(as[ty][kk], bs[tx][kk], dot);
    if (r < m && c < n) acc += (double)dot * (double)sa[kb * sa_ld + r] * (double)sb[(c / 128) * nkb + kb];
    __syncthreads();
  }
  if (r < m && c < n) {
    if (bias) acc += bias_fp32 ? (double)((const float*)bias)[c] : (double)__bfloat162float(((const __nv_bfloat16*)bias)[c]);
    ref[r * n + c] = acc;
  }
}

struct ErrStats {
  double diff2, ref2;
  unsigned long long nonfinite, guard_bad, mismatch;
};

__device__ __forceinline__ uint32_t bits_of(float v) { return __float_as_uint(v); }
__device__ __forceinline__ uint32_t bits_of(__nv_bfloat16 v) { return __bfloat16_as_ushort(v); }

// out: [rows_alloc, ldo]; valid region [m, n]; everything else must keep the poison pattern.
template <typename T>
__global__ void error_kernel(const T* out, const T* out2, const double* ref, int64_t m, int64_t n, int64_t ldo,
                             int64_t rows_alloc, ErrStats* st) {
  double d2 = 0, r2 = 0;
  unsigned long long nf = 0, gb = 0, mm = 0;
  const int64_t total = rows_alloc * ldo;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = i / ldo, c = i % ldo;
    if (r < m && c < n) {
      float v;
      if constexpr (sizeof(T) == 4) v = out[i]; else v = __bfloat162float(out[i]);
      const double x = ref[r * n + c];
      if (!isfinite(v)) { ++nf; continue; }
      d2 += (v - x) * (v - x);
      r2 += x * x;
      if (out2 && bits_of(out[i]) != bits_of(out2[i])) ++mm;
    } else {
      const uint32_t bits = bits_of(out[i]);
      if (bits != (sizeof(T) == 4 ? 0xFFFFFFFFu : 0xFFFFu)) ++gb;
    }
  }
  for (int o = 16; o > 0; o /= 2) {
    d2 += __shfl_xor_sync(0xffffffff, d2, o);
    r2 += __shfl_xor_sync(0xffffffff, r2, o);
    nf += __shfl_xor_sync(0xffffffff, nf, o);
    gb += __shfl_xor_sync(0xffffffff, gb, o);
    mm += __shfl_xor_sync(0xffffffff, mm, o);
  }
  if (threadIdx.x % 32 == 0) {
    atomicAdd(&st->diff2, d2);
    atomicAdd(&st->ref2, r2);
    atomicAdd(&st->nonfinite, nf);
    atomicAdd(&st->guard_bad, gb);
    atomicAdd(&st->mismatch, mm);
  }
}

// ------------------------------------------------------------------------------------ buffers
struct Buffers {
  uint8_t *a = nullptr, *b = nullptr;
  float *sa = nullptr, *sb = nullptr;
  void *bias = nullptr, *out = nullptr, *out2 = nullptr;
  double* ref = nullptr;
  ErrStats* st = nullptr;
  size_t a_bytes = 0, b_bytes = 0, sa_bytes = 0, sb_bytes = 0, out_bytes = 0, ref_bytes = 0;
};

static void ensure(void** p, size_t* cur, size_t need) {
  if (need <= *cur) return;
  if (*p) CK(cudaFree(*p));
  CK(cudaMalloc(p, need));
  *cur = need;
}

static int g_num_sms = 132;
static int g_fail = 0, g_cases = 0;

struct Case {
  int64_t m, n, k;
  OutKind out_kind;
  bool bias;
  int config;       // -1 heuristic
  int emin, emax;   // scale exponent range
  int64_t pad_a, pad_o, pad_sa;  // extra row-stride padding (elements)
};

static void run_case(Buffers& bf, const Case& cs, uint64_t seed) {
  const int64_t m = cs.m, n = cs.n, k = cs.k;
  const int64_t lda = k + cs.pad_a, ldb = k + cs.pad_a;
  const int64_t nkb = (k + 127) / 128, nnb = (n + 127) / 128;
  const int64_t sa_ld = ((m + 3) / 4) * 4 + cs.pad_sa;
  const bool fp32 = cs.out_kind == OutKind::kFP32;
  const int64_t ldo = n + cs.pad_o;
  const int64_t rows_alloc = m + 2;  // two guard rows
  const size_t esz = fp32 ? 4 : 2;
  ensure((void**)&bf.a, &bf.a_bytes, m * lda);
  ensure((void**)&bf.b, &bf.b_bytes, n * ldb);
  ensure((void**)&bf.sa, &bf.sa_bytes, nkb * sa_ld * 4);
  ensure((void**)&bf.sb, &bf.sb_bytes, nnb * nkb * 4);
  size_t ob = bf.out_bytes;
  ensure(&bf.out, &ob, rows_alloc * ldo * esz);
  ensure(&bf.out2, &bf.out_bytes, rows_alloc * ldo * esz);
  ensure((void**)&bf.ref, &bf.ref_bytes, m * n * 8);
  if (!bf.bias) CK(cudaMalloc(&bf.bias, 1 << 20));
  if (!bf.st) CK(cudaMalloc(&bf.st, sizeof(ErrStats)));

  fill_fp8<<<1024, 256>>>(bf.a, m, k, lda, seed * 7 + 1, 4.f);
  fill_fp8<<<1024, 256>>>(bf.b, n, k, ldb, seed * 7 + 2, 4.f);
  fill_scale<<<1024, 256>>>(bf.sa, nkb, m, sa_ld, seed * 7 + 3, cs.emin, cs.emax);
  fill_scale<<<1024, 256>>>(bf.sb, nnb, nkb, nkb, seed * 7 + 4, cs.emin, cs.emax);
  if (cs.bias) {
    if (fp32) fill_bias<float><<<64, 256>>>((float*)bf.bias, n, seed * 7 + 5);
    else fill_bias<__nv_bfloat16><<<64, 256>>>((__nv_bfloat16*)bf.bias, n, seed * 7 + 5);
  }
  CK(cudaGetLastError());
  const int64_t out_words = rows_alloc * ldo * esz / 4;
  fill_u32<<<1024, 256>>>((uint32_t*)bf.out, out_words, 0xFFFFFFFFu);
  fill_u32<<<1024, 256>>>((uint32_t*)bf.out2, out_words, 0xFFFFFFFFu);
  dim3 rg((unsigned)((n + RT - 1) / RT), (unsigned)((m + RT - 1) / RT));
  reference_kernel<<<rg, dim3(RT, RT)>>>(bf.a, bf.b, bf.sa, bf.sb, cs.bias ? bf.bias : nullptr, fp32, m, n, k, lda,
                                         ldb, sa_ld, bf.ref);
  CK(cudaGetLastError());

  DenseGemmParams p{};
  p.a = bf.a, p.b = bf.b, p.a_scale = bf.sa, p.b_scale = bf.sb;
  p.bias = cs.bias ? bf.bias : nullptr;
  p.out = bf.out;
  p.m = m, p.n = n, p.k = k, p.lda = lda, p.ldb = ldb, p.a_scale_ld = sa_ld, p.ldo = ldo;
  p.out_kind = cs.out_kind;
  p.num_sms = g_num_sms;
  p.forced_config = cs.config;
  p.stream = 0;
  const int cfg = cs.config >= 0 ? cs.config : sm90_fp8_gemm_pick_config(p);
  std::string err;
  try {
    sm90_fp8_gemm_dense(p);
    p.out = bf.out2;
    sm90_fp8_gemm_dense(p);
  } catch (const std::exception& e) {
    err = e.what();
  }
  cudaError_t ce = cudaDeviceSynchronize();
  if (ce != cudaSuccess) {
    logf("FATAL: CUDA error %s after m=%ld n=%ld k=%ld cfg=%s\n", cudaGetErrorString(ce), (long)m, (long)n, (long)k,
         sm90_fp8_gemm_config_name(cfg));
    exit(3);
  }
  ++g_cases;
  if (!err.empty()) {
    ++g_fail;
    logf("FAIL (exception) m=%ld n=%ld k=%ld: %s\n", (long)m, (long)n, (long)k, err.c_str());
    return;
  }
  CK(cudaMemset(bf.st, 0, sizeof(ErrStats)));
  if (fp32)
    error_kernel<float><<<1024, 256>>>((const float*)bf.out, (const float*)bf.out2, bf.ref, m, n, ldo, rows_alloc, bf.st);
  else
    error_kernel<__nv_bfloat16><<<1024, 256>>>((const __nv_bfloat16*)bf.out, (const __nv_bfloat16*)bf.out2, bf.ref, m,
                                               n, ldo, rows_alloc, bf.st);
  CK(cudaGetLastError());
  ErrStats st;
  CK(cudaMemcpy(&st, bf.st, sizeof st, cudaMemcpyDeviceToHost));
  const double rel = st.ref2 > 0 ? std::sqrt(st.diff2 / st.ref2) : std::sqrt(st.diff2);
  // The library's bars (torch_fp8gemm/testing.py): FP32 out from the tensor cores 3e-4; BF16 out 2.5e-3,
  // or one BF16 rounding (2^-8) plus the FP32 bar for outputs under 1024 elements.
  const double bar = fp32 ? 3e-4 : (m * n < 1024 ? 0.00390625 + 3e-4 : 2.5e-3);
  const bool ok = rel <= bar && st.nonfinite == 0 && st.guard_bad == 0 && st.mismatch == 0;
  if (!ok) ++g_fail;
  logf("%s m=%5ld n=%5ld k=%5ld %s bias=%d scales=2^[%d,%d] pads=(%ld,%ld,%ld) cfg=%-20s rel=%.3e "
       "nonfinite=%llu guard=%llu rerun_mismatch=%llu\n",
       ok ? "ok  " : "FAIL", (long)m, (long)n, (long)k, fp32 ? "fp32" : "bf16", (int)cs.bias, cs.emin, cs.emax,
       (long)cs.pad_a, (long)cs.pad_o, (long)cs.pad_sa, sm90_fp8_gemm_config_name(cfg), rel, st.nonfinite,
       st.guard_bad, st.mismatch);
}

// ------------------------------------------------------------------------------------ bench
struct Shape {
  int64_t m, n, k;
  double cublas_block, deepgemm;  // TFLOP/s of cuBLASLt block-wise and DeepGEMM (H200 anchor measurements)
};
static const Shape kShapes[] = {
    {64, 2112, 7168, 87, 180},      {64, 24576, 1536, 261, 297},    {64, 32768, 512, 209, 247},
    {64, 7168, 16384, 293, 393},    {64, 4096, 7168, 163, 258},     {64, 7168, 2048, 190, 240},
    {128, 2112, 7168, 172, 336},    {128, 24576, 1536, 534, 539},   {128, 32768, 512, 399, 437},
    {128, 7168, 16384, 585, 632},   {128, 4096, 7168, 323, 456},    {128, 7168, 2048, 368, 417},
    {4096, 2112, 7168, 1109, 1160}, {4096, 24576, 1536, 1184, 1337}, {4096, 32768, 512, 845, 1010},
    {4096, 7168, 16384, 1332, 1494}, {4096, 4096, 7168, 1321, 1438}, {4096, 7168, 2048, 1167, 1258},
    {8192, 8192, 8192, 1340, 1447},
};

static void* g_flush = nullptr;
static const size_t kFlushBytes = 512ull << 20;

// Median device time (us) of `iters` launches, each preceded by an L2 flush (memset of 512 MB).
static double time_config(DenseGemmParams p, int cfg, int iters) {
  p.forced_config = cfg;
  std::vector<cudaEvent_t> ev(2 * iters);
  for (auto& e : ev) CK(cudaEventCreate(&e));
  // Warm-up: ~20 launches with flushes, so clocks and caches settle before timing.
  for (int w = 0; w < 20; ++w) {
    CK(cudaMemsetAsync(g_flush, w & 0xff, kFlushBytes, p.stream));
    sm90_fp8_gemm_dense(p);
  }
  for (int i = 0; i < iters; ++i) {
    CK(cudaMemsetAsync(g_flush, i & 0xff, kFlushBytes, p.stream));
    CK(cudaEventRecord(ev[2 * i], p.stream));
    sm90_fp8_gemm_dense(p);
    CK(cudaEventRecord(ev[2 * i + 1], p.stream));
  }
  CK(cudaStreamSynchronize(p.stream));
  std::vector<double> t(iters);
  for (int i = 0; i < iters; ++i) {
    float ms;
    CK(cudaEventElapsedTime(&ms, ev[2 * i], ev[2 * i + 1]));
    t[i] = ms * 1e3;
  }
  for (auto& e : ev) CK(cudaEventDestroy(e));
  std::sort(t.begin(), t.end());
  return t[iters / 2];
}

static void bench(bool tune) {
  // Copy-bandwidth ceiling: 1 GB device-to-device copy, bytes read + written.
  {
    void *x, *y;
    const size_t bytes = 1ull << 30;
    CK(cudaMalloc(&x, bytes));
    CK(cudaMalloc(&y, bytes));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    CK(cudaMemcpy(y, x, bytes, cudaMemcpyDeviceToDevice));
    CK(cudaEventRecord(e0));
    for (int i = 0; i < 10; ++i) CK(cudaMemcpyAsync(y, x, bytes, cudaMemcpyDeviceToDevice));
    CK(cudaEventRecord(e1));
    CK(cudaEventSynchronize(e1));
    float ms;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    logf("copy bandwidth: %.0f GB/s (read + write)\n", 2.0 * bytes * 10 / (ms * 1e-3) / 1e9);
    CK(cudaFree(x));
    CK(cudaFree(y));
  }
  int64_t max_a = 0, max_b = 0, max_o = 0, max_sa = 0, max_sb = 0;
  for (const Shape& s : kShapes) {
    max_a = std::max(max_a, s.m * s.k);
    max_b = std::max(max_b, s.n * s.k);
    max_o = std::max(max_o, s.m * s.n * 2);
    max_sa = std::max(max_sa, ((s.k + 127) / 128) * s.m * 4);
    max_sb = std::max(max_sb, ((s.k + 127) / 128) * ((s.n + 127) / 128) * 4);
  }
  uint8_t *a, *b;
  float *sa, *sb;
  void* out;
  CK(cudaMalloc(&a, max_a));
  CK(cudaMalloc(&b, max_b));
  CK(cudaMalloc(&sa, max_sa));
  CK(cudaMalloc(&sb, max_sb));
  CK(cudaMalloc(&out, max_o));
  CK(cudaMalloc(&g_flush, kFlushBytes));
  fill_fp8<<<2048, 256>>>(a, 1, max_a, max_a, 11, 4.f);
  fill_fp8<<<2048, 256>>>(b, 1, max_b, max_b, 12, 4.f);
  fill_scale<<<256, 256>>>(sa, 1, max_sa / 4, max_sa / 4, 13, -8, -4);
  fill_scale<<<256, 256>>>(sb, 1, max_sb / 4, max_sb / 4, 14, -8, -4);
  CK(cudaDeviceSynchronize());
  cudaStream_t stream;
  CK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));

  const int nc = sm90_fp8_gemm_num_configs();
  std::vector<double> ratio_cublas, ratio_dg;
  std::string table =
      "\n|    M |     N |     K | heuristic config     |    us | TFLOP/s |  GB/s | best config          | best TFLOP/s | "
      "cuBLASLt blk | DeepGEMM | x cuBLASLt |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const Shape& s : kShapes) {
    DenseGemmParams p{};
    p.a = a, p.b = b, p.a_scale = sa, p.b_scale = sb, p.bias = nullptr, p.out = out;
    p.m = s.m, p.n = s.n, p.k = s.k, p.lda = s.k, p.ldb = s.k, p.a_scale_ld = ((s.m + 3) / 4) * 4, p.ldo = s.n;
    p.out_kind = OutKind::kBF16;
    p.num_sms = g_num_sms;
    p.forced_config = -1;
    p.stream = stream;
    const double flops = 2.0 * s.m * s.n * s.k;
    const double bytes = (double)s.m * s.k + (double)s.n * s.k + 2.0 * s.m * s.n;
    const int hc = sm90_fp8_gemm_pick_config(p);
    const double t_h = time_config(p, hc, 30);
    int best = hc;
    double t_best = t_h;
    if (tune) {
      std::string line = "  tune m=" + std::to_string(s.m) + " n=" + std::to_string(s.n) + " k=" + std::to_string(s.k) + ":";
      for (int c = 0; c < nc; ++c) {
        const double t = time_config(p, c, 15);
        char buf[96];
        snprintf(buf, sizeof buf, " %s=%.0f", sm90_fp8_gemm_config_name(c), flops / t / 1e6);
        line += buf;
        if (t < t_best) t_best = t, best = c;
      }
      logf("%s\n", line.c_str());
    }
    const double tf = flops / t_h / 1e6;
    ratio_cublas.push_back(tf / s.cublas_block);
    ratio_dg.push_back(tf / s.deepgemm);
    char row[512];
    char hname[64];
    snprintf(hname, sizeof hname, "%s", sm90_fp8_gemm_config_name(hc));
    snprintf(row, sizeof row, "| %4ld | %5ld | %5ld | %-20s | %5.1f | %7.0f | %5.0f | %-20s | %12.0f | %12.0f | %8.0f | %10.2f |\n",
             (long)s.m, (long)s.n, (long)s.k, hname, t_h, tf, bytes / t_h / 1e3,
             sm90_fp8_gemm_config_name(best), flops / t_best / 1e6, s.cublas_block, s.deepgemm, tf / s.cublas_block);
    table += row;
    logf("%s", row);
  }
  double g1 = 0, g2 = 0;
  for (size_t i = 0; i < ratio_cublas.size(); ++i) g1 += std::log(ratio_cublas[i]), g2 += std::log(ratio_dg[i]);
  g1 = std::exp(g1 / ratio_cublas.size());
  g2 = std::exp(g2 / ratio_dg.size());
  logf("%s\ngeomean speedup vs cuBLASLt blockwise (ANCHORS): %.3fx, vs DeepGEMM (ANCHORS): %.3fx\n", table.c_str(), g1, g2);
}

int main(int argc, char** argv) {
  bool quick = false, do_bench = true, tune = false, do_check = true, sanitize = false;
  int64_t one_m = 0, one_n = 0, one_k = 0;
  int one_cfg = -1;
  std::string out_dir;
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--quick")) quick = true;
    else if (!strcmp(argv[i], "--no-bench")) do_bench = false;
    else if (!strcmp(argv[i], "--no-check")) do_check = false;
    else if (!strcmp(argv[i], "--tune")) tune = true;
    else if (!strcmp(argv[i], "--sanitize")) sanitize = true;
    else if (!strcmp(argv[i], "--one") && i + 4 < argc) {
      one_m = atol(argv[i + 1]), one_n = atol(argv[i + 2]), one_k = atol(argv[i + 3]), one_cfg = atoi(argv[i + 4]);
      i += 4;
    }
    else if (!strcmp(argv[i], "--out") && i + 1 < argc) out_dir = argv[++i];
  }
  if (!out_dir.empty()) g_log = fopen((out_dir + "/dense_check.log").c_str(), "w");
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  g_num_sms = prop.multiProcessorCount;
  if (const char* env = getenv("NUM_SMS")) g_num_sms = atoi(env);  // experiment: fewer persistent CTAs
  logf("device: %s, %d SMs, cc %d.%d\n", prop.name, prop.multiProcessorCount, prop.major, prop.minor);
  const int nc = sm90_fp8_gemm_num_configs();
  for (int c = 0; c < nc; ++c) logf("config %d: %s\n", c, sm90_fp8_gemm_config_name(c));

  if (one_m > 0) {
    // Profiling mode: a few launches of one shape and config (ncu --launch-skip 2 --launch-count 1).
    int64_t m = one_m, n = one_n, k = one_k;
    void *a, *b, *sa, *sb, *out;
    CK(cudaMalloc(&a, m * k));
    CK(cudaMalloc(&b, n * k));
    CK(cudaMalloc(&sa, ((k + 127) / 128) * ((m + 3) / 4 * 4) * 4));
    CK(cudaMalloc(&sb, ((k + 127) / 128) * ((n + 127) / 128) * 4));
    CK(cudaMalloc(&out, m * n * 2));
    fill_fp8<<<1024, 256>>>((uint8_t*)a, 1, m * k, m * k, 1, 4.f);
    fill_fp8<<<1024, 256>>>((uint8_t*)b, 1, n * k, n * k, 2, 4.f);
    fill_scale<<<64, 256>>>((float*)sa, 1, ((k + 127) / 128) * ((m + 3) / 4 * 4), ((k + 127) / 128) * ((m + 3) / 4 * 4), 3, -8, -4);
    fill_scale<<<64, 256>>>((float*)sb, 1, ((k + 127) / 128) * ((n + 127) / 128), ((k + 127) / 128) * ((n + 127) / 128), 4, -8, -4);
    DenseGemmParams p{};
    p.a = a, p.b = b, p.a_scale = (float*)sa, p.b_scale = (float*)sb, p.out = out;
    p.m = m, p.n = n, p.k = k, p.lda = k, p.ldb = k, p.a_scale_ld = (m + 3) / 4 * 4, p.ldo = n;
    p.out_kind = OutKind::kBF16, p.num_sms = g_num_sms, p.forced_config = one_cfg, p.stream = 0;
    for (int i = 0; i < 4; ++i) sm90_fp8_gemm_dense(p);
    CK(cudaDeviceSynchronize());

    logf("one: m=%ld n=%ld k=%ld cfg=%s done\n", (long)m, (long)n, (long)k,
         sm90_fp8_gemm_config_name(one_cfg >= 0 ? one_cfg : sm90_fp8_gemm_pick_config(p)));
    return 0;
  }
  if (sanitize) {
    // Small cases for compute-sanitizer: every config twice, tails in m, n, k, K past one B-scale chunk.
    Buffers bf;
    for (int c = 0; c < nc; ++c) {
      Case cs{65 + 64 * (c % 2), 136, 272, (c % 2) ? OutKind::kFP32 : OutKind::kBF16, c % 3 == 0, c, -6, 2, 0, 8, 0};
      run_case(bf, cs, 100 + c);
      Case ks{65, 136, 32896, OutKind::kBF16, true, c, -6, 2, 0, 8, 0};
      run_case(bf, ks, 200 + c);
    }
    logf("\nsanitize cases: %d, %d failures\n", g_cases, g_fail);
    return g_fail ? 1 : 0;
  }
  if (do_check) {
    Buffers bf;
    uint64_t seed = 1;
    // 1. Every config on a set of tail shapes, alternating out kind and bias, including padded strides.
    const int64_t cshapes[][3] = {{1, 8, 16},      {2, 112, 128},     {63, 576, 144},   {65, 2112, 7168},
                                  {129, 7176, 512}, {1000, 576, 7168}, {300, 2112, 144}};
    for (int c = 0; c < nc; ++c) {
      int j = 0;
      for (auto& s : cshapes) {
        if (quick && j > 3) break;
        Case cs{s[0], s[1], s[2], (j % 2) ? OutKind::kFP32 : OutKind::kBF16, (j % 3) == 1, c, -6, 2,
                (j % 3 == 2) ? 32 : 0, (j % 2) ? 4 : 8, (j % 4 == 3) ? 4 : 0};
        run_case(bf, cs, seed++);
        ++j;
      }
    }
    // 2. Sweep with the heuristic config.
    const int64_t Ms[] = {1, 2, 63, 64, 65, 128, 129, 1000, 4096};
    const int64_t Ns[] = {8, 112, 576, 2112, 7176, 24576};
    const int64_t Ks[] = {16, 128, 144, 512, 7168};
    int j = 0;
    for (int64_t m : Ms)
      for (int64_t n : Ns)
        for (int64_t k : Ks) {
          if (quick && (m * n * k > (int64_t)1000 * 2112 * 7168)) continue;
          Case cs{m, n, k, (j % 3 == 2) ? OutKind::kFP32 : OutKind::kBF16, (j % 4) == 1, -1, -6, 2, 0, 0, 0};
          run_case(bf, cs, seed++);
          ++j;
        }
    // 3. Extreme scale ranges (1e-6 .. 1e6).
    for (int c = 0; c < nc; c += 1) {
      Case cs{257, 2112, 1536, (c % 2) ? OutKind::kFP32 : OutKind::kBF16, c % 3 == 0, c, -20, 20, 0, 0, 0};
      run_case(bf, cs, seed++);
    }
    logf("\ncorrectness: %d cases, %d failures\n", g_cases, g_fail);
  }
  if (do_bench) bench(tune);
  if (g_log) fclose(g_log);
  return g_fail ? 1 : 0;
}
