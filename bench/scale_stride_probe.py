"""Probe: kernel time of the dense GEMM with K-major activation scales at several row strides
(floats between rows) against M-major ones, same values: what the in-place K-major load costs per
shape, with the heuristic's configuration or with forced ones (FORCE="bm256_bn128_s3_mc1,...").
    FORCE=... python3 bench/scale_stride_probe.py m,n,k ..."""
import json
import os
import sys

import torch

import torch_fp8gemm as fg
from torch_fp8gemm import testing as T
from torch_fp8gemm.bench.gemm import KernelTimer, m_major, random_fp8, random_scales


def strided(scale, stride):
    m, kb = scale.shape
    storage = torch.full((m, stride), float("nan"), device=scale.device)
    storage[:, :kb].copy_(scale)
    return storage[:, :kb]


def main(argv):
    timer = KernelTimer("cuda")
    names = torch.ops.fp8gemm._sm90_dense_configs()
    forced = [f for f in os.environ.get("FORCE", "").split(",") if f]
    for spec in argv:
        m, n, k = (int(x) for x in spec.split(","))
        kb = T.ceil_div(k, 128)
        a, b = random_fp8((m, k), "cuda"), random_fp8((n, k), "cuda")
        sa = random_scales((m, kb), "cuda")
        sb = random_scales((T.ceil_div(n, 128), kb), "cuda")
        named = {"m_major": m_major(sa)}
        for s in sorted({T.ceil_div(kb, 4) * 4, 64}):
            if s >= kb:
                named[f"k_major_s{s}"] = strided(sa, s)
        for config in [-1] + [names.index(f) for f in forced]:
            def call(s, config=config):
                return torch.ops.fp8gemm._sm90_dense_forced(a, b, s, sb, None, None, config)
            first = call(named["m_major"])
            for s in named.values():
                assert torch.equal(call(s), first), spec
            times = timer.median_us_interleaved([(lambda s=s: call(s)) for s in named.values()], iters=20)
            label = names[config] if config >= 0 else "pick"
            print("STRIDE", json.dumps({"shape": [m, n, k], "config": label, **{x: round(t, 2) for x, t in zip(named, times)}}),
                  flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
