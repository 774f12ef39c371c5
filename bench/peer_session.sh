#!/usr/bin/env bash
# One device call that times ours beside DeepGEMM and torch's block-wise GEMM (the peer kit: a folder
# with build_deepgemm.sh, peer_bench.py and kbench.py, carried into the repo as PEER_DIR, default
# .peers, git-ignored). Builds ours and DeepGEMM side by side, runs the GPU tests named in TESTS
# (optional), then peer_bench.py on the sections in PEERS (default "dense moe"), and prints the
# markdown table of docs/benchmarks.md. Logs go to $OUT.
#   TESTS="test/test_grouped_cuda.py ..." PEERS="dense moe" PEER_EXTRA=shapes.json bash bench/peer_session.sh
set -uo pipefail
PEER_DIR=${PEER_DIR:-.peers}
OUT=${OUT:-$PWD/gpu_logs}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
bash "$PEER_DIR/build_deepgemm.sh" > "$OUT/dg_build.log" 2>&1 &
t0=$(date +%s)
MAX_JOBS=16 python3 -m pip install --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
export LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libstdc++.so.6
if [ -n "${TESTS:-}" ]; then
  t0=$(date +%s)
  timeout "${TESTS_LIMIT:-240}" python3 -m pytest -q --timeout=150 -p no:cacheprovider $TESTS > "$OUT/tests.log" 2>&1
  echo "tests: rc $?, $(( $(date +%s) - t0 )) s"; tail -15 "$OUT/tests.log"
fi
wait
tail -1 "$OUT/dg_build.log"
PYTHONPATH=/tmp/deepgemm/dghead timeout "${PEERS_LIMIT:-300}" python3 "$PEER_DIR/peer_bench.py" ${PEERS:-dense moe} > "$OUT/peers.log" 2>&1
grep -E "GEOMEAN|rror" "$OUT/peers.log" | head -20
python3 bench/peer_table.py "$OUT/peers.log"
