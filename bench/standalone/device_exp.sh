#!/usr/bin/env bash
# Experiment call: builds baseline + ablation variants in parallel, tunes each, profiles with ncu.
set -uo pipefail
export LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libstdc++.so.6
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
cd "$(dirname "$0")/../.."
VARIANTS=${VARIANTS:-"base:"}
for v in $VARIANTS; do
  name=${v%%:*}; flags=${v#*:}
  ( BUILD_DIR=/tmp/b_$name EXTRA_FLAGS="$flags" bench/standalone/build_and_run.sh --no-check --no-bench > "$OUT/build_$name.txt" 2>&1 ) &
done
wait
# YIELD_VARIANTS="name:fraction ...": copies of the base build with bench/standalone/ffma_yield.py applied.
for v in ${YIELD_VARIANTS:-}; do
  name=${v%%:*}; frac=${v#*:}
  mkdir -p /tmp/b_$name && cp /tmp/b_base/dense_check /tmp/b_$name/ &&
    python3 bench/standalone/ffma_yield.py --fraction "$frac" /tmp/b_$name/dense_check > "$OUT/build_$name.txt" 2>&1
  tail -1 "$OUT/build_$name.txt"
  VARIANTS="$VARIANTS $name:"
done
for v in $VARIANTS; do
  name=${v%%:*}
  [[ -x /tmp/b_$name/dense_check ]] || { echo "build $name failed"; tail -20 "$OUT/build_$name.txt"; continue; }
  timeout 200 /tmp/b_$name/dense_check ${HARNESS_ARGS:---no-check --tune} > "$OUT/run_$name.txt" 2>&1; echo "$name rc=$?"
done
if [[ -n "${NCU:-}" ]]; then
  for spec in $NCU; do  # m,n,k,cfg
    IFS=, read m n k c <<< "$spec"
    timeout 120 ncu --clock-control none -k regex:sm90_fp8_gemm_kernel --launch-skip 2 --launch-count 1 \
      --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section SchedulerStats \
      ${NCU_SECTIONS:---section ComputeWorkloadAnalysis --section LaunchStats} \
      /tmp/b_base/dense_check --one $m $n $k $c > "$OUT/ncu_${m}_${n}_${k}_$c.txt" 2>&1; echo "ncu $spec rc=$?"
  done
fi
