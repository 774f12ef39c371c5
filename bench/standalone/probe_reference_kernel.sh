#!/usr/bin/env bash
# Measurement probe, step 1 (on this machine): compile the reference kernel (DeepGEMM's sm90
# fp8_gemm_kernel, release 03d0be3) for the large DeepSeek-V3 shapes into cubins under
# bench/standalone/out/probe/ (git-ignored: nothing of the reference is committed). Its configs are
# what its own heuristic picks on 132 SMs (256x128 tiles, 3 stages, 2-CTA multicast of A, 128 CTAs).
#   bash bench/standalone/probe_reference_kernel.sh DEEPGEMM_INCLUDE_DIR CUTLASS_INCLUDE_DIR
# Step 2 (device call, carry bench/standalone/out/probe):
#   bash bench/standalone/probe_reference_kernel.sh --run
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
OUTD="$ROOT/bench/standalone/out/probe"
# shape: M N K BLOCK_M BLOCK_N STAGES CLUSTER NUM_CTAS SMEM (the reference heuristic's choices)
SHAPES=("4096 7168 16384 256 128 3 2 128 216624" "8192 8192 8192 256 128 3 2 128 216368"
        "4096 4096 7168 256 128 3 2 128 216336" "4096 7168 2048 256 128 3 2 128 216176"
        "4096 32768 512 256 128 3 2 128 216128")
if [[ "${1:-}" != "--run" ]]; then
  DG_INC="$1"; CUTLASS_INC="$2"
  mkdir -p "$OUTD"
  for s in "${SHAPES[@]}"; do
    read -r m n k bm bn st cl ctas smem <<< "$s"
    src="$OUTD/inst_${n}_${k}.cu"
    printf '#include <cuda.h>\n#include <string>\n#include <cuda_bf16.h>\n#include <cuda_fp8.h>\n#include <deep_gemm/fp8_gemm.cuh>\nusing namespace deep_gemm;\nvoid* instantiate() { return reinterpret_cast<void*>(&fp8_gemm_kernel<%s, %s, %s, %s, 128, 0, 128, 1, %s, 128, 128, %s, true, GemmType::Normal>); }\n' \
      "$n" "$k" "$bm" "$bn" "$st" "$cl" > "$src"
    nvcc -std=c++20 --ptxas-options=--register-usage-level=10 --diag-suppress=39,161,174,177,186,940 \
      -I"$DG_INC" -I"$CUTLASS_INC" -gencode=arch=compute_90a,code=sm_90a -cubin -O3 \
      --expt-relaxed-constexpr --expt-extended-lambda -o "$OUTD/ref_${n}_${k}.cubin" "$src" &
  done
  wait
  ls -la "$OUTD"/*.cubin
  exit 0
fi
# --run (device): build the probe with our kernels, then time reference vs ours per shape, logging
# SM clock and power alongside.
export LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libstdc++.so.6
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
B=/tmp/probe_build; mkdir -p "$B"
FLAGS=(-O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -DTORCH_FP8GEMM_EXPERIMENT_CONFIGS -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__
       -D__CUDA_NO_BFLOAT16_CONVERSIONS__ -D__CUDA_NO_HALF2_OPERATORS__)
for f in "$ROOT"/csrc/kernels/*.cu "$ROOT/bench/standalone/probe_reference_kernel.cu"; do
  nvcc "${FLAGS[@]}" -c "$f" -o "$B/$(basename "$f" .cu).o" &
done
wait
CUDA_BIN="$(dirname "$(readlink -f "$(command -v nvcc)")")"
nvcc -gencode=arch=compute_90a,code=sm_90a "$B"/*.o -L"$CUDA_BIN/../lib64/stubs" -L"$CUDA_BIN/../targets/x86_64-linux/lib/stubs" -lcuda -o "$B/probe"
(nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw --format=csv -lms 100 > "$OUT/probe_smi.csv" 2>&1 &)
for s in "${SHAPES[@]}"; do
  read -r m n k bm bn st cl ctas smem <<< "$s"
  # PROBE_ONLY="7168_16384": just that N_K; PROBE_WRAP: a command prefix (e.g. ncu with its options).
  [[ -n "${PROBE_ONLY:-}" && "${n}_${k}" != "$PROBE_ONLY" ]] && continue
  timeout "${PROBE_TIMEOUT:-60}" ${PROBE_WRAP:-} "$B/probe" "$OUTD/ref_${n}_${k}.cubin" "$m" "$n" "$k" "$bm" "$bn" "$cl" "$ctas" "$smem" 2>&1 | tee -a "$OUT/probe.txt"
done
pkill -f "nvidia-smi --query-gpu" || true
