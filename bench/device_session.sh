#!/usr/bin/env bash
# One device call of a session: build on the GPU machine, then run the named stages, each under its
# own time limit, logging to $OUT. Usage: bash bench/device_session.sh STAGE...
#   tests      GPU tests of the quantizers, grouped ops, MoE, modules, autograd and a dense subset
#   train      bench/train_compare.py (FP8 vs bf16 loss curves, 300 steps)
#   dense      python -m torch_fp8gemm --suite dense (the 19 DeepSeek-V3 shapes, issue-3 bars)
#   moe        python -m torch_fp8gemm --suite moe
#   quant      quantization kernels vs copy bandwidth
#   forward    FP8Linear forward vs bf16 (eager and compiled)
#   training   forward + backward of a linear and an MoE layer
#   quanttests GPU tests of the quantization kernels (and the ops that use them)
#   example    examples/convert_transformers_model.py (Llama, tiny random config): logits and tokens/s
#   ncusmall   ours and cuBLASLt block-wise under ncu at one M <= 128 shape (NCU_SHAPE, default 128x32768x512)
#   tune       the standalone harness without the watchdog, every config timed on the 19 dense shapes: bench/standalone/build_and_run.sh --no-check --tune
#              (TUNE_FLAGS: extra nvcc flags;
#              TUNE_ARGS: harness arguments, e.g. --tune to run the correctness sweep first)
#   sanitize   compute-sanitizer memcheck + racecheck on the grouped staged-epilogue cases of
#              bench/diag_grouped.py (SANITIZE_CASES overrides the case list, SANITIZE_TOOLS the tools)
# Each benchmark stage writes its tables to $OUT/<stage>.md.
set -uo pipefail
OUT="${OUT:-$PWD/gpu_logs}"
mkdir -p "$OUT"
export LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libstdc++.so.6 PYTHONUNBUFFERED=1 MAX_JOBS="${MAX_JOBS:-16}"
ITERS="${ITERS:-10}"
start=$(date +%s)
# SKIP_BUILD=1: only the standalone stages (tune), which build their own binaries.
if [ -z "${SKIP_BUILD:-}" ]; then
  if ! python3 -m pip install --no-build-isolation --no-deps -e . >"$OUT/build.log" 2>&1; then
    tail -60 "$OUT/build.log"; exit 1
  fi
  echo "build: $(( $(date +%s) - start )) s"
fi
stage() {  # stage NAME LIMIT_S COMMAND...
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "== $name: rc $rc, $(( $(date +%s) - t0 )) s"
  tail -"${TAIL:-25}" "$OUT/$name.log"
}
for s in "$@"; do
  case "$s" in
    tests)
      files=()
      for f in test/test_quantize_cuda.py test/test_quantize_transposed.py test/test_dense_1x128_cuda.py test/test_grouped_cuda.py test/test_moe.py test/test_nn.py \
               test/test_bench_smoke.py test/test_ops.py test/test_autograd.py test/test_compile.py test/test_compile_pass.py; do
        [ -f "$f" ] && files+=("$f")
      done
      stage tests "${TESTS_LIMIT:-300}" python3 -m pytest -q --timeout=120 -p no:cacheprovider "${files[@]}" \
        "test/test_dense_cuda.py::test_every_configuration_is_forced" \
        "test/test_dense_cuda.py::test_side_stream_and_cuda_graph" \
        "test/test_dense_cuda.py::test_accuracy_does_not_degrade_with_k" \
        "test/test_dense_cuda.py::test_every_configuration_past_128_scale_blocks" ;;
    train) stage train "${TRAIN_LIMIT:-240}" python3 bench/train_compare.py --steps 300 --device cuda --out "$OUT/train_compare.md" ;;
    dense) stage dense "${DENSE_LIMIT:-300}" python3 -m torch_fp8gemm --suite dense --iters "${DENSE_ITERS:-20}" --out "$OUT/$s.md" ;;
    moe) stage moe "${MOE_LIMIT:-300}" python3 -m torch_fp8gemm --suite moe --iters "$ITERS" --out "$OUT/$s.md" ;;
    quant) stage quant "${QUANT_LIMIT:-120}" python3 -m torch_fp8gemm --suite quant --iters "$ITERS" --skip-verify --out "$OUT/$s.md" ;;
    forward) stage forward "${FORWARD_LIMIT:-300}" python3 -m torch_fp8gemm.bench.layers --suite forward --iters "$ITERS" \
               --layers "${FORWARD_LAYERS:-DeepSeek-V3 MLP,Llama-70B MLP gate}" --out "$OUT/$s.md" ;;
    training) stage training "${TRAINING_LIMIT:-300}" python3 -m torch_fp8gemm.bench.layers --suite training --iters "$ITERS" --out "$OUT/$s.md" ;;
    quanttests) stage quanttests 120 python3 -m pytest -q --timeout=120 -p no:cacheprovider test/test_quantize_cuda.py \
                  test/test_autograd.py "test/test_nn.py::test_matches_linear" ;;
    example) stage example "${EXAMPLE_LIMIT:-150}" python3 examples/convert_transformers_model.py --batch 8 --seq 512 ;;
    ncusmall)  # ours vs cuBLASLt block-wise at one M <= 128 shape (NCU_SHAPE), full set, details page into $OUT
      stage ncusmall "${NCU_LIMIT:-240}" ncu --set full --import-source no -k "regex:${NCU_KERNELS_REGEX:-gemm|nvjet|cutlass}" \
        --launch-skip 0 --launch-count 6 -f -o "$OUT/small" python3 bench/ncu_small_m.py "${NCU_SHAPE:-128x32768x512}"
      ncu -i "$OUT/small.ncu-rep" --page details > "$OUT/ncu_small_details.txt" 2>&1
      ncu -i "$OUT/small.ncu-rep" --page source --csv --print-source sass > "$OUT/ncu_small_source.csv" 2>&1
      python3 bench/standalone/ncu_compare.py "$OUT/ncu_small_source.csv" --top 14 > "$OUT/ncu_small_compare.txt" 2>&1
      grep -E "^  [a-zA-Z_].*\(|Duration|DRAM Throughput|Memory Throughput|Grid Size|Block Size|Registers Per|Waves Per SM|L2 Hit Rate|Elapsed Cycles|SM Frequency" \
        "$OUT/ncu_small_details.txt" | head -120 ;;
    tune) WATCHDOG_FLAG= EXTRA_FLAGS="${TUNE_FLAGS:-}" \
            stage tune "${TUNE_LIMIT:-400}" bash bench/standalone/build_and_run.sh ${TUNE_ARGS:---no-check --tune} ;;
    sanitize) stage sanitize "${SANITIZE_LIMIT:-500}" bash -c 'for tool in ${SANITIZE_TOOLS:-memcheck racecheck}; do
                python3 bench/diag_grouped.py --cases "${SANITIZE_CASES:-11,12,13,14,15}" --wrap "compute-sanitizer --tool $tool"
              done' ;;
    *) echo "unknown stage $s" ;;
  esac
done
echo "total: $(( $(date +%s) - start )) s"
