"""Small forced-configuration calls for compute-sanitizer (memcheck / racecheck) with row-major
(K-major in place: K = 1024 in boxes, K = 512 packed rows), M-major and copied activation scales:
dense and grouped kinds.
    compute-sanitizer --tool memcheck python3 bench/sanitize_scales.py [config-name-prefix ...]"""
import sys

import torch

import torch_fp8gemm as fg  # noqa: F401
from torch_fp8gemm import testing as T

ops = torch.ops.fp8gemm
prefixes = sys.argv[1:] or ["bm16_bn32_", "bm64_bn16_", "bm64_bn128_", "bm128_bn128_s5_mc1", "bm256_bn112_"]
for k in (1024, 512):
    a, sa, b, sb = T.random_fp8_operands(200, 392, k, device="cuda")
    for index, name in enumerate(ops._sm90_dense_configs()):
        if any(name.startswith(p) for p in prefixes):
            for scale in T.scale_layouts(sa).values():
                ops._sm90_dense_forced(a, b, scale, sb, None, torch.bfloat16, index)
            print("dense", name, k, flush=True)
    sizes = [0, 70, 1, 150, 33]
    ga = a[: sum(sizes)].contiguous()
    gb = torch.stack([b] * len(sizes))
    gsb = torch.stack([sb] * len(sizes))
    offs = torch.tensor(sizes, dtype=torch.int32).cumsum(0, dtype=torch.int32).cuda()
    for index in range(len(ops._sm90_grouped_configs())):
        for scale in T.scale_layouts(sa[: sum(sizes)]).values():
            ops._sm90_grouped_moe_forced(ga, gb, offs, scale, gsb, torch.bfloat16, index)
        print("grouped", index, k, flush=True)
torch.cuda.synchronize()
print("done")
