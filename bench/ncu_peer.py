"""Our dense kernel beside DeepGEMM's on the same operands, one call each, for ncu to profile side by
side: ours with each forced configuration (FORCE: names as _sm90_dense_configs() prints them, the
stage count may be left out) on
M-major scales and on row-major (K-major) ones loaded in place, then DeepGEMM (PYTHONPATH must
reach its build, e.g. the peer kit's).

    ncu --set full -k regex:sm90_fp8_gemm -o rep python3 bench/ncu_peer.py 4096x4096x7168
    FORCE=bm256_bn128_mc1,bm128_bn128_mc1 LAYOUTS=m_major python3 bench/ncu_peer.py ...
"""
import argparse
import os
import re

import torch

from torch_fp8gemm import testing as T
from torch_fp8gemm.bench.gemm import m_major, random_fp8, random_scales


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("shapes", nargs="+", help="MxNxK")
    args = parser.parse_args()
    import deep_gemm
    from deep_gemm.utils.layout import get_mn_major_tma_aligned_tensor

    names = torch.ops.fp8gemm._sm90_dense_configs()
    stageless = [re.sub(r"_s[0-9]+_", "_", name) for name in names]
    forced = [stageless.index(re.sub(r"_s[0-9]+_", "_", f)) for f in os.environ.get("FORCE", "").split(",") if f]
    for shape in args.shapes:
        m, n, k = (int(v) for v in shape.split("x"))
        kb = T.ceil_div(k, 128)
        a, b = random_fp8((m, k), "cuda"), random_fp8((n, k), "cuda")
        sa, sb = random_scales((m, kb), "cuda"), random_scales((T.ceil_div(n, 128), kb), "cuda")
        layouts = {"m_major": m_major(sa), "k_major": sa}
        layouts = {name: layouts[name] for name in os.environ.get("LAYOUTS", "m_major,k_major").split(",")}
        ref = torch.ops.fp8gemm._sm90_dense_forced(a, b, m_major(sa), sb, None, None, -1)
        for config in forced or [-1]:
            for layout, scale in layouts.items():
                out = torch.ops.fp8gemm._sm90_dense_forced(a, b, scale, sb, None, None, config)
                torch.cuda.synchronize()
                print(f"{shape} ours {names[config] if config >= 0 else 'heuristic'} {layout}: "
                      f"equal {torch.equal(out, ref)}", flush=True)
        d = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
        deep_gemm.fp8_gemm_nt((a, get_mn_major_tma_aligned_tensor(sa)), (b, sb), d)
        torch.cuda.synchronize()
        print(f"{shape} DeepGEMM: equal {torch.equal(d, ref)}", flush=True)


if __name__ == "__main__":
    main()
