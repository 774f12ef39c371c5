// wgmma helpers: PTX ISA "Asynchronous Warpgroup Level Matrix Multiply-Accumulate Instructions".
#pragma once
#include <cstdint>

#include "wgmma_fp8_gen.cuh"

namespace torch_fp8gemm::ptx {

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }

__device__ __forceinline__ void wgmma_commit_group() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }

template <int kNumPending>
__device__ __forceinline__ void wgmma_wait_group() {
  static_assert(kNumPending >= 0 && kNumPending <= 7, "wgmma.wait_group takes 0..7");
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(kNumPending) : "memory");
}

// Keeps the compiler from moving accesses of an accumulator register across wgmma fences/waits.
__device__ __forceinline__ void fence_operand(float& reg) { asm volatile("" : "+f"(reg)::"memory"); }

// stmatrix .x4 .m8n8 b16: four 8x8 bf16 matrices to shared memory. Register j of lane l holds
// row l / 4, columns 2 * (l % 4) + {0, 1} of matrix j (a wgmma accumulator 8-column group, packed);
// lanes 8j .. 8j + 7 give the addresses of matrix j's 8 rows (16 contiguous bytes each).
__device__ __forceinline__ void stmatrix_x4(uint32_t smem_addr, uint32_t r0, uint32_t r1, uint32_t r2, uint32_t r3) {
  asm volatile("stmatrix.sync.aligned.x4.m8n8.shared.b16 [%0], {%1, %2, %3, %4};" ::"r"(smem_addr), "r"(r0), "r"(r1),
               "r"(r2), "r"(r3)
               : "memory");
}
// .x2: matrices 0 and 1 only (lanes 0 .. 15 give the addresses).
__device__ __forceinline__ void stmatrix_x2(uint32_t smem_addr, uint32_t r0, uint32_t r1) {
  asm volatile("stmatrix.sync.aligned.x2.m8n8.shared.b16 [%0], {%1, %2};" ::"r"(smem_addr), "r"(r0), "r"(r1) : "memory");
}

// Shared-memory matrix descriptor (PTX ISA "Matrix Descriptor Format") for a K-major operand whose
// rows are 128 bytes, stored with the 128B swizzle in 8-row (1024 B) atoms, as a TMA load with
// CU_TENSOR_MAP_SWIZZLE_128B writes it. Start address >> 4 in bits 0-13, leading byte offset unused
// for swizzled K-major (set to 1), stride byte offset = 1024 B between 8-row atoms (bits 32-45),
// base offset 0 (atoms are 1024-B aligned), layout type 1 = 128B swizzle (bits 62-63).
// Advancing along K inside the 128-B row is done by adding bytes to the start address.
// The high word is the same for every such operand, so kernels carry only the low word: the
// descriptor of base + bytes is the base's low word + bytes / 16 (no carry out of the 14-bit field,
// since shared-memory addresses stay below 256 KB). The main loops then build each descriptor with
// one integer add instead of a mask-shift-or chain per wgmma.
constexpr uint32_t kSmemDescSw128Hi = (1024u >> 4) | (1u << 30);
__device__ __forceinline__ uint32_t smem_desc_sw128_lo(uint32_t smem_addr) {
  return ((smem_addr & 0x3FFFFu) >> 4) | (1u << 16);
}
__device__ __forceinline__ uint64_t smem_desc_sw128(uint32_t desc_lo) {
  return (static_cast<uint64_t>(kSmemDescSw128Hi) << 32) | desc_lo;
}
// A value the compiler must keep in a register rather than recompute: without it ptxas
// rematerializes shared-memory addresses (S2UR of the CTA id, shifts, masks) inside main loops,
// on the path between a barrier wait and the wgmma issue.
__device__ __forceinline__ uint32_t opaque(uint32_t v) {
  asm volatile("mov.b32 %0, %0;" : "+r"(v));
  return v;
}
__device__ __forceinline__ uint64_t make_smem_desc_sw128(uint32_t smem_addr) {
  return smem_desc_sw128(smem_desc_sw128_lo(smem_addr));
}

// Register reallocation between warpgroups (sm_90a). Must be executed by all warps of a warpgroup.
template <int kRegs>
__device__ __forceinline__ void setmaxnreg_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(kRegs));
}
template <int kRegs>
__device__ __forceinline__ void setmaxnreg_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(kRegs));
}

}  // namespace torch_fp8gemm::ptx
