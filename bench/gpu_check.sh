#!/usr/bin/env bash
# One device call: build the extension on the GPU machine, run the tests, run the main job and
# write its tables to $OUT/bench.md. Logs go to $OUT (or ./gpu_logs). Usage:
#   bash bench/gpu_check.sh [pytest args...]      (default: the whole test suite)
set -uo pipefail
OUT="${OUT:-$PWD/gpu_logs}"
mkdir -p "$OUT"
# The H200 image's libstdc++ mismatch makes iostream number formatting crash inside extensions
# built there; preloading the system libstdc++ fixes it.
export LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libstdc++.so.6
export PYTHONUNBUFFERED=1 MAX_JOBS="${MAX_JOBS:-16}"
start=$(date +%s)
if ! python3 -m pip install --no-build-isolation --no-deps -e . >"$OUT/build.log" 2>&1; then
  tail -60 "$OUT/build.log"; exit 1
fi
echo "build: $(( $(date +%s) - start )) s"
python3 -c "import torch, torch_fp8gemm as f; print('torch', torch.__version__, 'kernels built:', f.cuda_kernels_built())"
python3 -m pytest ${@:-test} -q --timeout=900 -p no:cacheprovider 2>&1 | tee "$OUT/tests.log" | tail -30
echo "tests: $(( $(date +%s) - start )) s"
if [ "${SKIP_BENCH:-0}" != "1" ]; then
  python3 -m torch_fp8gemm --out "$OUT/bench.md" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log" | tail -45
fi
echo "total: $(( $(date +%s) - start )) s"
