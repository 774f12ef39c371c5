#!/usr/bin/env bash
# Builds the standalone harness (nvcc only, no torch) and runs it.
#   bench/standalone/build_and_run.sh [harness args...]     e.g. --quick, --no-bench, --tune, --out DIR
# Env: NVCC (default nvcc), BUILD_DIR (default bench/standalone/build), SKIP_BUILD=1 to reuse a build,
#      RUN_PREFIX (e.g. "compute-sanitizer --tool memcheck"), WATCHDOG_FLAG= (empty) to build without the
#      hang watchdog for timing runs (--tune): with it the staged configs spill (~400 B) and --tune runs
#      them at ~40% of their library speed (every config ~10% below the library).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/bench/standalone/build}"
NVCC="${NVCC:-nvcc}"
FLAGS=(-O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -lineinfo -Xptxas=--warn-on-spills
       -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__
       -D__CUDA_NO_HALF2_OPERATORS__ ${WATCHDOG_FLAG--DTORCH_FP8GEMM_WATCHDOG} ${EXTRA_FLAGS:-})
mkdir -p "$BUILD_DIR"
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  rm -f "$BUILD_DIR"/*.o "$BUILD_DIR"/*.ptxas.txt "$BUILD_DIR"/dense_check
  pids=()
  for f in "$ROOT"/csrc/kernels/*.cu; do
    "$NVCC" "${FLAGS[@]}" -Xptxas -v -c "$f" -o "$BUILD_DIR/$(basename "$f" .cu).o" 2> "$BUILD_DIR/$(basename "$f" .cu).ptxas.txt" &
    pids+=($!)
  done
  "$NVCC" "${FLAGS[@]}" -c "$ROOT/bench/standalone/dense_check.cu" -o "$BUILD_DIR/dense_check.o" &
  pids+=($!)
  for p in "${pids[@]}"; do wait "$p"; done
  "$NVCC" -gencode=arch=compute_90a,code=sm_90a "$BUILD_DIR"/*.o -o "$BUILD_DIR/dense_check"
  grep -hE "error|warning|spill|registers" "$BUILD_DIR"/*.ptxas.txt | grep -vE "0 bytes spill stores, 0 bytes spill loads" | sort | uniq -c || true
fi
${RUN_PREFIX:-} "$BUILD_DIR/dense_check" "$@"
