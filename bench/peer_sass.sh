#!/usr/bin/env bash
# DeepGEMM's sm_90 FP8 kernel (the peer kit's release) compiled here for one configuration, to read
# its SASS beside ours without a GPU. The argument: its 18 numeric template arguments as the ncu
# report prints them (major SFB, M, N, K, groups, BLOCK_M, BLOCK_N, BLOCK_K, swizzle A, B, D, stages,
# TMA threads, math threads, multicast, multicast on A, SMs, GemmType), e.g. its 128x192 B-shared
# pairs of a contiguous MoE GEMM with N and K at run time:
#   bash bench/peer_sass.sh "0, 0, 0, 0, 4, 128, 192, 128, 128, 128, 128, 4, 128, 256, 2, 0, 132, 5" out
# Writes out/deepgemm.{cu,cubin,sass,ptxas} (bench/sass.sh). PEER_DIR: the peer kit (default .peers).
set -euo pipefail
read -r -a a <<< "$(echo "$1" | tr ',' ' ')"
out=${2:-peer_sass}
[ "${#a[@]}" -eq 18 ] || { echo "expected 18 template arguments, got ${#a[@]}" >&2; exit 1; }
PEER_DIR=${PEER_DIR:-.peers}
mkdir -p "$out" /tmp/deepgemm_src
[ -d /tmp/deepgemm_src/dghead ] || tar xzf "$PEER_DIR/deepgemm-54e2261.tgz" -C /tmp/deepgemm_src
root=/tmp/deepgemm_src/dghead
major=$([ "${a[0]}" = 0 ] && echo K || echo MN)
on_a=$([ "${a[15]}" = 0 ] && echo false || echo true)
cat > "$out/deepgemm.cu" <<CU
#include <deep_gemm/impls/sm90_fp8_gemm_1d2d.cuh>
using namespace deep_gemm;
static void instantiate() {
  auto kernel = reinterpret_cast<void*>(&sm90_fp8_gemm_1d2d_impl<cute::UMMA::Major::$major,
      ${a[1]}, ${a[2]}, ${a[3]}, ${a[4]}, ${a[5]}, ${a[6]}, ${a[7]}, ${a[8]}, ${a[9]}, ${a[10]}, ${a[11]},
      ${a[12]}, ${a[13]}, ${a[14]}, $on_a, ${a[16]}, static_cast<GemmType>(${a[17]}), cutlass::bfloat16_t,
      epilogue::transform::EpilogueIdentity>);
  (void)kernel;
}
CU
SASS_FLAGS="-std=c++20 -I$root/deep_gemm/include -I$root/third-party/cutlass/include" \
  bash "$(dirname "$0")/sass.sh" "$out" "$out/deepgemm.cu"
