#!/usr/bin/env bash
# Our kernels' SASS without a GPU: compiles instantiation files csrc/kernels/sm90_fp8_gemm_inst_<TU>.cu
# to cubins as setup.py does (sm_90a, -O3) and dumps their SASS and ptxas reports into OUT; prints
# the spill lines. Then bench/sass_loops.py reads the loops.
#   bash bench/sass.sh out dense_bm256 grouped_bm128 ...
set -euo pipefail
out=$1
shift
mkdir -p "$out"
nvcc=${CUDA_HOME:-/usr/local/cuda}/bin/nvcc
cuobjdump=$(command -v cuobjdump || python3 -c \
  "import os, triton; print(os.path.join(os.path.dirname(triton.__file__), 'backends/nvidia/bin/cuobjdump'))")
for tu in "$@"; do
  "$nvcc" -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -Xptxas=-v \
    -Xptxas=--warn-on-spills -Icsrc -Icsrc/kernels -cubin "csrc/kernels/sm90_fp8_gemm_inst_$tu.cu" \
    -o "$out/$tu.cubin" 2> "$out/$tu.ptxas"
  "$cuobjdump" -sass "$out/$tu.cubin" > "$out/$tu.sass"
  echo "$tu: $(grep -c 'Function :' "$out/$tu.sass") kernels, $(grep -cE '/\*[0-9a-f]{4,}\*/ ' "$out/$tu.sass") instructions"
done
grep -h "spill" "$out"/*.ptxas | sort | uniq -c
