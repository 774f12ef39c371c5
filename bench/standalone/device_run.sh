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
  for tool in memcheck racecheck synccheck; do
    timeout 150 compute-sanitizer --tool $tool "$B" --sanitize > "$OUT/sanitize_$tool.txt" 2>&1; echo "$tool rc=$?"
    tail -3 "$OUT/sanitize_$tool.txt"
  done
fi
grep -E "FAIL|FATAL|correctness:|geomean|copy bandwidth|watchdog" "$OUT/stdout.txt" | head -40
grep -E "^\|" "$OUT/stdout.txt" | tail -21
