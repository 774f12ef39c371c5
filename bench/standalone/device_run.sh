#!/usr/bin/env bash
# One device call: build, correctness sweep + bench (+ optional sanitizer), logs into $OUT.
#   MODE=full|check|bench|tune|sanitize bench/standalone/device_run.sh
set -uo pipefail
export LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libstdc++.so.6
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
export BUILD_DIR=/tmp/fp8build
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv > "$OUT/smi.txt" 2>&1
( cd "$ROOT" && time bench/standalone/build_and_run.sh --no-check --no-bench ) > "$OUT/build.txt" 2>&1 || { cat "$OUT/build.txt"; exit 1; }
tail -5 "$OUT/build.txt"
cat "$BUILD_DIR"/*.ptxas.txt > "$OUT/ptxas.txt"
B="$BUILD_DIR/dense_check"
case "${MODE:-full}" in
  full)     timeout 420 "$B" --tune --out "$OUT" > "$OUT/stdout.txt" 2>&1; echo "rc=$?" ;;
  check)    timeout 420 "$B" --no-bench --out "$OUT" > "$OUT/stdout.txt" 2>&1; echo "rc=$?" ;;
  bench)    timeout 420 "$B" --no-check --out "$OUT" > "$OUT/stdout.txt" 2>&1; echo "rc=$?" ;;
  tune)     timeout 420 "$B" --no-check --tune --out "$OUT" > "$OUT/stdout.txt" 2>&1; echo "rc=$?" ;;
esac
if [[ "${SANITIZE:-0}" == 1 ]]; then
  for tool in ${SAN_TOOLS:-memcheck racecheck}; do
    timeout ${SAN_TIMEOUT:-90} compute-sanitizer --tool $tool "$B" --sanitize > "$OUT/sanitize_$tool.txt" 2>&1; echo "$tool rc=$?"
    tail -3 "$OUT/sanitize_$tool.txt"
  done
fi
if [[ -n "${NCU:-}" ]]; then
  IFS=, read m n k c <<< "$NCU"
  timeout 120 ncu --clock-control none -k regex:sm90_fp8_gemm_kernel --launch-skip 2 --launch-count 1 \
    --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active.ratio$,sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_active,lts__t_bytes.sum.per_second,l1tex__data_pipe_lsu_wavefronts_mem_shared.sum,sm__cycles_active.avg,gpu__time_duration.sum,l1tex__data_bank_conflicts_pipe_lsu_mem_shared.sum,smsp__inst_executed.sum" \
    "$B" --one $m $n $k $c > "$OUT/ncu.txt" 2>&1; echo "ncu rc=$?"
  grep -E "^\s+(smsp|sm__|lts|l1tex|gpu)" "$OUT/ncu.txt" | awk '$NF+0 > 0.05 || /sm__|gpu|lts|l1tex/ {print $1, $NF}'
fi
grep -E "FAIL|FATAL|correctness:|geomean|copy bandwidth|watchdog" "$OUT/stdout.txt" | grep -v "fp32 bias" | head -40
grep -E "^\|" "$OUT/stdout.txt" | tail -21
