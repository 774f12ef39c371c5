#!/usr/bin/env bash
# One device call that times ours beside DeepGEMM and torch's block-wise GEMM (the peer kit: a folder
# with build_deepgemm.sh, peer_bench.py and kbench.py, carried into the repo as PEER_DIR, default
# .peers, git-ignored). Builds ours and DeepGEMM side by side, then the stages whose variables are set:
#   TESTS="test/test_dense_cuda.py ..."   GPU tests (TESTS_LAST=1: after the first measurement, not before)
#   SAN="bm256_bn128_s3_mc1 ..."          compute-sanitizer racecheck + synccheck on bench/sanitize_scales.py
#   NCU_SHAPES="8192x8192x8192 4x8192x4096x7168"  ncu --set full of ours (FORCE, LAYOUTS) and DeepGEMM
#                                         (bench/ncu_peer.py: dense MxNxK, contiguous MoE GxRxNxK),
#                                         with the stall samples per SASS instruction of each
#                                         (bench/ncu_sass_stalls.py)
#   SWEEP="4096,4096,7168;..."            every dense config forced (bench/dense_config_sweep.py)
#   GSWEEP="masked"                       every grouped config forced (bench/grouped_config_sweep.py --layout;
#                                         GDENSE="4096x7168x2048,...": also dense shapes as one expert, --dense)
#   PEERS="dense moe"                     peer_bench.py (default "dense moe"; PEERS=none skips it) and the
#                                         markdown table of docs/benchmarks.md
#   AB_PATCH="bench/patches/x.patch ..."  then, for each patch alone: applies it (git apply), rebuilds,
#                                         measures again (AB_PEERS or PEERS, SWEEP, GSWEEP) into $OUT/b_x and
#                                         reverts it: an A/B of candidate changes in one call ($OUT/ab_x.md:
#                                         both sides per shape, bench/peer_table.py --ab);
#                                         AB_PEERS_<patch name> (other characters as _) sets one patch's peers
# e.g. TESTS="test/test_grouped_cuda.py" PEERS="dense moe" PEER_EXTRA=bench/peer_extra.json bash bench/peer_session.sh
# Logs go to $OUT.
set -uo pipefail
PEER_DIR=${PEER_DIR:-.peers}
OUT=${OUT:-$PWD/gpu_logs}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
bash "$PEER_DIR/build_deepgemm.sh" > "$OUT/dg_build.log" 2>&1 &
# Builds ours (editable install) into log $1, timed; stops the call on a failed build.
build() {
  local t0=$(date +%s)
  MAX_JOBS=16 python3 -m pip install --no-build-isolation --no-deps -e . > "$1" 2>&1 || { tail -40 "$1"; exit 1; }
  echo "build: $(( $(date +%s) - t0 )) s"
}
build "$OUT/build.log"
# Clusters of 2 and 4 whole-SM CTAs that fit at once (the split-K patches' rule assumes H100 figures).
nvcc -arch=sm_90a -o /tmp/cluster_capacity bench/cluster_capacity.cu && /tmp/cluster_capacity | tee "$OUT/clusters.log"
export LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libstdc++.so.6
run_tests() {
  [ -n "${TESTS:-}" ] || return 0
  t0=$(date +%s)
  # One line per test, each stamped with the second it ended: where the time goes, even when the
  # limit stops the run before pytest's --durations report.
  timeout "${TESTS_LIMIT:-240}" python3 -m pytest -v --timeout=150 --durations=25 -p no:cacheprovider $TESTS 2>&1 |
    while IFS= read -r line; do printf '%(%s)T %s\n' -1 "$line"; done > "$OUT/tests.log"
  local rc=${PIPESTATUS[0]}
  echo "tests: rc $rc, $(( $(date +%s) - t0 )) s, $(grep -c " PASSED" "$OUT/tests.log") passed"
  grep -E " FAILED| ERROR" "$OUT/tests.log" | head -5; tail -3 "$OUT/tests.log"
}
[ -n "${TESTS_LAST:-}" ] || run_tests
if [ -n "${SAN:-}" ]; then
  for tool in racecheck synccheck; do
    timeout 120 compute-sanitizer --tool $tool --print-limit 5 python3 bench/sanitize_scales.py $SAN > "$OUT/san_$tool.log" 2>&1
    echo "sanitizer $tool: rc $?"; grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$OUT/san_$tool.log" | head -2
  done
fi
wait
tail -1 "$OUT/dg_build.log"
export PYTHONPATH=/tmp/deepgemm/dghead
if [ -n "${NCU_SHAPES:-}" ]; then
  timeout 240 ncu --clock-control "${NCU_CLOCK:-none}" --set full -k regex:sm90_fp8_gemm -o "$OUT/peer" \
    python3 bench/ncu_peer.py $NCU_SHAPES > "$OUT/ncu.log" 2>&1
  echo "ncu: rc $?"; grep -E "equal" "$OUT/ncu.log" | head
  ncu --import "$OUT/peer.ncu-rep" --page details > "$OUT/ncu_details.txt" 2>&1
  ncu --import "$OUT/peer.ncu-rep" --page raw --csv > "$OUT/ncu_raw.csv" 2>&1
  # Stall samples per SASS instruction, ours and DeepGEMM's (bench/ncu_sass_stalls.py reads them).
  # -k matches the bare function name unless told otherwise: the namespaces need the demangled name.
  # Retried without --print-source where an ncu build refuses the flag (its default view then).
  for who in torch_fp8gemm deep_gemm; do
    pick=(--import "$OUT/peer.ncu-rep" --kernel-name-base demangled -k "regex:$who" --page source --csv)
    ncu "${pick[@]}" --print-source sass > "$OUT/ncu_sass_$who.csv" 2>&1 || ncu "${pick[@]}" > "$OUT/ncu_sass_$who.csv" 2>&1
  done
  # Where the filter matched nothing (an empty export), every kernel of the report in one file.
  [ -s "$OUT/ncu_sass_torch_fp8gemm.csv" ] || \
    ncu --import "$OUT/peer.ncu-rep" --page source --csv --print-source sass > "$OUT/ncu_sass_all.csv" 2>&1
  for f in "$OUT"/ncu_sass_*.csv; do [ -s "$f" ] || rm "$f"; done
  python3 bench/ncu_sass_stalls.py --top 30 "$OUT"/ncu_sass_*.csv > "$OUT/ncu_sass_stalls.txt" 2>&1
  head -c 3000 "$OUT/ncu_sass_stalls.txt"
fi
# The measurements, into folder $1 (peers, config sweeps).
measure() {
  local dir=$1
  mkdir -p "$dir"
  if [ "${PEERS:-dense moe}" != "none" ]; then
    OUT="$dir" timeout "${PEERS_LIMIT:-300}" python3 "$PEER_DIR/peer_bench.py" ${PEERS:-dense moe} > "$dir/peers.log" 2>&1
    grep -E "GEOMEAN|rror" "$dir/peers.log" | head -20
    python3 bench/peer_table.py "$dir/peers.log" | tee "$dir/peer_table.md"
  fi
  if [ -n "${SWEEP:-}" ]; then
    SWEEP_SHAPES="$SWEEP" PEER_DIR="$PEER_DIR" timeout 240 python3 bench/dense_config_sweep.py > "$dir/sweep.log" 2>&1
    echo "sweep: rc $?"; grep SWEEP "$dir/sweep.log" | cut -c1-400
  fi
  if [ -n "${GSWEEP:-}" ]; then
    timeout 180 python3 bench/grouped_config_sweep.py --layout "$GSWEEP" ${GDENSE:+--dense "$GDENSE"} > "$dir/gsweep.log" 2>&1
    echo "grouped sweep: rc $?"; cut -c1-600 "$dir/gsweep.log"
  fi
}
measure "$OUT"
[ -z "${TESTS_LAST:-}" ] || run_tests
# Each patch of AB_PATCH alone on top of the tree (reverted before the next): $OUT/b_<patch name>.
for patch_file in ${AB_PATCH:-}; do
  name=$(basename "$patch_file" .patch)
  echo "== B: $patch_file applied"
  { git apply "$patch_file" || patch -p1 < "$patch_file"; } > "$OUT/ab_$name.log" 2>&1 || { echo "patch failed"; cat "$OUT/ab_$name.log"; exit 1; }
  build "$OUT/build_$name.log"
  peers_of_patch="AB_PEERS_${name//[^A-Za-z0-9_]/_}"
  PEERS="${!peers_of_patch:-${AB_PEERS:-${PEERS:-dense moe}}}" measure "$OUT/b_$name"
  if [ -f "$OUT/peers.log" ] && [ -f "$OUT/b_$name/peers.log" ]; then
    python3 bench/peer_table.py --ab "$OUT/peers.log" "$OUT/b_$name/peers.log" > "$OUT/ab_$name.md" 2>&1
    grep -E "^(19 anchors|anchors|other|contiguous|masked)" "$OUT/ab_$name.md"
  fi
  { git apply -R "$patch_file" || patch -R -p1 < "$patch_file"; } >> "$OUT/ab_$name.log" 2>&1 || { echo "could not revert $patch_file"; exit 1; }
done
# The device tool returns a limited number of files: bundle the logs and tables (not ncu reports)
# into one archive.
( cd "$OUT" && find . -type f ! -name '*.ncu-rep' ! -name logs.tgz | tar czf logs.tgz -T - \
    && find . -type f ! -name '*.ncu-rep' ! -name logs.tgz -delete )
