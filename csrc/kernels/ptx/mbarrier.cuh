// mbarrier wrappers (PTX ISA 8.x, "Parallel Synchronization and Communication Instructions: mbarrier").
#pragma once
#include <cstdint>

namespace torch_fp8gemm::ptx {

__device__ __forceinline__ uint32_t smem_u32(const void* ptr) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(ptr));
}

__device__ __forceinline__ void mbarrier_init(uint64_t* bar, uint32_t arrive_count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_u32(bar)), "r"(arrive_count) : "memory");
}

// Makes mbarrier.init visible to the async proxy (TMA complete-tx) and to other threads.
__device__ __forceinline__ void fence_mbarrier_init() {
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}

// Named barrier `id` over num_threads threads (a multiple of 32).
__device__ __forceinline__ void named_barrier_sync(int id, int num_threads) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(num_threads) : "memory");
}

// Orders this thread's generic-proxy shared-memory accesses before later async-proxy (TMA, wgmma) ones.
__device__ __forceinline__ void fence_proxy_async_shared() {
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}

__device__ __forceinline__ void mbarrier_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_u32(bar)) : "memory");
}

// Arrives once and adds `bytes` to the transaction count that the current phase waits for.
__device__ __forceinline__ void mbarrier_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_u32(bar)), "r"(bytes)
               : "memory");
}

// try_wait without a suspend-time hint: it returns false after a short, system-defined wait and the
// caller polls again. With a long hint the suspended thread wakes late where the phase completes by
// a peer CTA's remote arrive (B-shared pairs).
__device__ __forceinline__ bool mbarrier_try_wait_parity(uint64_t* bar, uint32_t parity) {
  uint32_t done;
  asm volatile(
      "{\n.reg .pred p;\n"
      "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
      "selp.u32 %0, 1, 0, p;\n}\n"
      : "=r"(done)
      : "r"(smem_u32(bar)), "r"(parity)
      : "memory");
  return done != 0;
}

// Arrives on the mbarrier at the same smem offset in CTA `cta_rank` of this cluster (may be self).
// Relaxed, not .release.cluster: ptxas puts MEMBAR.ALL.CTA + MEMBAR.ALL.GPU before every release
// arrive (checked in SASS), once per stage release in the main loop. What a release would order here
// are the math warps' shared loads of the stage's scales; the stage is refilled only after the
// producer sees the barrier complete and its TMA load fetches from L2/HBM, far later than a shared
// load returns, and the stage's wgmma reads are complete (waited for) before the arrive.
__device__ __forceinline__ void mbarrier_arrive_cluster(uint64_t* bar, uint32_t cta_rank) {
  asm volatile(
      "{\n.reg .b32 remote;\n"
      "mapa.shared::cluster.u32 remote, %0, %1;\n"
      "mbarrier.arrive.relaxed.cluster.shared::cluster.b64 _, [remote];\n}\n" ::"r"(smem_u32(bar)),
      "r"(cta_rank)
      : "memory");
}

__device__ __forceinline__ uint32_t cluster_cta_rank() {
  uint32_t rank;
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(rank));
  return rank;
}

// True in one lane of the (converged) warp. A TMA issued under it has provably warp-uniform
// operands: ptxas issues it directly, where under `threadIdx.x == c` it wraps each TMA in a loop
// that elects the lanes one by one.
__device__ __forceinline__ bool elect_one_sync() {
  uint32_t elected;
  asm volatile(
      "{\n.reg .pred p;\n"
      "elect.sync _|p, 0xffffffff;\n"
      "selp.u32 %0, 1, 0, p;\n}\n"
      : "=r"(elected));
  return elected != 0;
}

// Full cluster barrier (all threads of all CTAs of the cluster), release/acquire.
__device__ __forceinline__ void cluster_sync() {
  asm volatile("barrier.cluster.arrive.release;\nbarrier.cluster.wait.acquire;" ::: "memory");
}

// Blocks until the phase with the given parity has completed. A freshly initialised barrier is in
// phase 0, so waiting for parity 1 returns at once ("the previous phase").
// With TORCH_FP8GEMM_WATCHDOG defined, a wait longer than ~2^35 cycles (~15 s) traps, which turns a
// protocol hang into a launch error in tests.
__device__ __forceinline__ void mbarrier_wait_parity(uint64_t* bar, uint32_t parity) {
#ifdef TORCH_FP8GEMM_WATCHDOG
  const long long start = clock64();
  while (!mbarrier_try_wait_parity(bar, parity)) {
    if (clock64() - start > (1ll << 35)) {
      asm volatile("trap;");
    }
  }
#else
  while (!mbarrier_try_wait_parity(bar, parity)) {
  }
#endif
}

}  // namespace torch_fp8gemm::ptx
