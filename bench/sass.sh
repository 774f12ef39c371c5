#!/usr/bin/env bash
# SASS without a GPU: compiles each source to a cubin as setup.py does (sm_90a, -O3) and dumps its
# SASS and ptxas report into OUT, then prints the spill lines; bench/sass_loops.py reads the loops.
# A source is an instantiation file's name (TU: csrc/kernels/sm90_fp8_gemm_inst_<TU>.cu) or a .cu
# path; SASS_FLAGS replaces the language standard and include paths (bench/peer_sass.sh sets them).
#   bash bench/sass.sh out dense_bm256 grouped_bm128 ...
set -euo pipefail
out=$1
shift
mkdir -p "$out"
nvcc=${CUDA_HOME:-/usr/local/cuda}/bin/nvcc
cuobjdump=$(command -v cuobjdump || python3 -c \
  "import os, triton; print(os.path.join(os.path.dirname(triton.__file__), 'backends/nvidia/bin/cuobjdump'))")
read -r -a flags <<< "${SASS_FLAGS:--std=c++17 -Icsrc -Icsrc/kernels}"
for source in "$@"; do
  name=$(basename "$source" .cu)
  [[ $source == *.cu ]] || source=csrc/kernels/sm90_fp8_gemm_inst_$name.cu
  "$nvcc" -O3 "${flags[@]}" -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -Xptxas=-v \
    -Xptxas=--warn-on-spills -cubin "$source" -o "$out/$name.cubin" 2> "$out/$name.ptxas"
  "$cuobjdump" -sass "$out/$name.cubin" > "$out/$name.sass"
  echo "$name: $(grep -c 'Function :' "$out/$name.sass") kernels, $(grep -cE '/\*[0-9a-f]{4,}\*/ ' "$out/$name.sass") instructions"
done
grep -h "spill" "$out"/*.ptxas | sort | uniq -c
