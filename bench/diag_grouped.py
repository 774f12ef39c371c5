"""Device diagnostic for the grouped kernels: runs one case per process (CUDA errors are sticky) and
prints PASS/FAIL/ERROR per case, optionally each under compute-sanitizer.

    python bench/diag_grouped.py                       every case
    python bench/diag_grouped.py --cases 11,12 --wrap "compute-sanitizer --tool racecheck"
    python bench/diag_grouped.py 3                     case 3 in this process
"""
import argparse
import shlex
import subprocess
import sys

import torch

CASES = [
    # (layout, sizes or masks, max_m, n, k, config)
    ("contiguous", [64, 64], 0, 576, 512, 0),
    ("contiguous", [55, 38], 0, 576, 512, 0),
    ("contiguous", [60, 36], 0, 576, 512, 0),
    ("contiguous", [0, 93], 0, 576, 512, 0),
    ("contiguous", [93, 0], 0, 576, 512, 0),
    ("contiguous", [55, 38], 0, 576, 512, 1),
    ("contiguous", [64, 64], 0, 576, 512, 1),
    ("contiguous", [55, 38], 0, 576, 128, 0),
    ("masked", [55, 38], 64, 576, 512, 0),
    ("masked", [64, 64], 64, 576, 512, 0),
    ("masked", [55, 38], 128, 576, 512, 1),
    # Staged (TMA-store) epilogue configs 3 and 4: warpgroups wholly inside an expert store through
    # shared memory + TMA, the straddling ones from registers; an empty expert in between.
    ("contiguous", [200, 100, 0, 77], 0, 576, 512, 3),
    ("contiguous", [200, 100, 0, 77], 0, 576, 512, 4),
    ("contiguous", [128, 64, 129], 0, 264, 640, 3),
    ("masked", [200, 0, 128], 256, 576, 512, 3),
    ("masked", [200, 0, 128], 256, 576, 512, 4),
]


def run_case(i):
    import torch_fp8gemm  # noqa: F401
    from torch_fp8gemm import testing as T
    layout, sizes, max_m, n, k, config = CASES[i]
    g = len(sizes)
    torch.manual_seed(i)
    kb, nb = T.ceil_div(k, 128), T.ceil_div(n, 128)
    fp8 = lambda *s: (torch.randn(*s, device="cuda") * 100).clamp(-448, 448).to(T.FP8)
    b, sb = fp8(g, n, k), torch.rand(g, nb, kb, device="cuda") + 0.5
    if layout == "contiguous":
        m = sum(sizes) + 5
        a, sa = fp8(m, k), torch.rand(m, kb, device="cuda") + 0.5
        offs = torch.tensor(sizes, dtype=torch.int32).cumsum(0, dtype=torch.int32).cuda()
        out = torch.ops.fp8gemm._sm90_grouped_moe_forced(a, b, offs, sa, sb, torch.bfloat16, config)
        ref = T.reference_grouped_moe(a, sa, b, sb, offs)
    else:
        a, sa = fp8(g, max_m, k), torch.rand(g, max_m, kb, device="cuda") + 0.5
        masked = torch.tensor(sizes, dtype=torch.int32).cuda()
        out = torch.ops.fp8gemm._sm90_grouped_moe_masked_forced(a, b, masked, max_m, sa, sb, torch.bfloat16, config)
        ref = T.reference_grouped_moe_masked(a, sa, b, sb, masked)
    torch.cuda.synchronize()
    err = T.relative_error(out, ref)
    print(f"case {i} {CASES[i]}: {'PASS' if err < 2.5e-3 else 'FAIL'} rel err {err:.3e}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("case", nargs="?", type=int, help="run this case in this process")
    parser.add_argument("--cases", default="", help="comma-separated case indices (default: all)")
    parser.add_argument("--wrap", default="", help="command prefix for each case, e.g. compute-sanitizer")
    args = parser.parse_args()
    if args.case is not None:
        run_case(args.case)
        return
    indices = [int(c) for c in args.cases.split(",") if c.strip()] or range(len(CASES))
    for i in indices:
        cmd = shlex.split(args.wrap) + [sys.executable, __file__, str(i)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        line = [l for l in r.stdout.splitlines() if l.startswith("case")]
        summary = [l.strip() for l in (r.stdout + r.stderr).splitlines() if "SUMMARY" in l]
        print((line[0] if line else f"case {i} {CASES[i]}: ERROR rc={r.returncode} "
               + (r.stderr.strip().splitlines() or ["?"])[-1][:200]) + (f"  [{summary[-1]}]" if summary else ""),
              flush=True)


if __name__ == "__main__":
    main()
