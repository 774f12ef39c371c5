"""Our dense kernel and torch's block-wise scaled_mm (cuBLASLt) on the same operands, a few calls each,
for ncu to profile side by side (the M <= 128 shapes where cuBLASLt is faster):

    ncu --set full -k regex:gemm --launch-skip 2 --launch-count 4 -o rep python bench/ncu_small_m.py 128x32768x512

Each shape runs ours three times, then cuBLASLt three times (ncu's --launch-skip drops the first call
of each when shapes are given one per process)."""
import argparse

import torch

import torch_fp8gemm as fg
from torch_fp8gemm import testing as T
from torch_fp8gemm.bench.gemm import torch_blockwise_scaled_mm


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("shapes", nargs="+", help="MxNxK")
    args = parser.parse_args()
    for shape in args.shapes:
        m, n, k = (int(v) for v in shape.split("x"))
        a, sa, b, sb = T.random_fp8_operands(m, n, k, device="cuda")
        blockwise = torch_blockwise_scaled_mm(a, sa, b, sb)
        torch.cuda.synchronize()
        for _ in range(3):
            fg.dense(a, b, sa, sb)
        torch.cuda.synchronize()
        if blockwise is not None:
            for _ in range(3):
                blockwise()
        torch.cuda.synchronize()
        print(f"{shape}: ours x3, cuBLASLt block-wise x{3 if blockwise else 0}", flush=True)


if __name__ == "__main__":
    main()
