"""Markdown table of a peer_bench.py log (its PERF lines): TFLOP/s of ours, DeepGEMM and torch's
block-wise GEMM, ours ÷ DeepGEMM, and the geometric means over the 19 DeepSeek-V3 dense anchors.

    python bench/peer_table.py gpu_logs/peers.log
"""
import json
import math
import sys

ANCHORS = [(m, n, k) for m in (64, 128, 4096) for (n, k) in
           [(2112, 7168), (24576, 1536), (32768, 512), (7168, 16384), (4096, 7168), (7168, 2048)]] + [(8192, 8192, 8192)]


def geomean(xs):
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else float("nan")


def main(path):
    rows = [json.loads(line[5:]) for line in open(path) if line.startswith("PERF")]
    print("| kind | shape | ours | DeepGEMM | torch block-wise | ours ÷ DeepGEMM | max rel. diff to DeepGEMM |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        dg = r.get("deepgemm_head")
        torch_block = r.get("torch_block")
        print(f"| {r['kind']} | {'x'.join(map(str, r['shape']))} | {r['ours']:.0f} | {dg:.0f} | "
              f"{f'{torch_block:.0f}' if torch_block else '-'} | {r['ours'] / dg:.3f} | {r.get('dg_err', '-')} |"
              if dg else f"| {r['kind']} | {'x'.join(map(str, r['shape']))} | {r['ours']:.0f} | - | - | - | - |")
    ratio = lambda r: r["ours"] / r["deepgemm_head"]  # noqa: E731
    dense = [r for r in rows if r["kind"] == "dense" and "deepgemm_head" in r]
    anchors = [r for r in dense if tuple(r["shape"]) in ANCHORS]
    groups = [("19 anchors", anchors), ("anchors M <= 128", [r for r in anchors if r["shape"][0] <= 128]),
              ("anchors M >= 4096", [r for r in anchors if r["shape"][0] >= 4096]),
              ("other dense shapes", [r for r in dense if tuple(r["shape"]) not in ANCHORS])]
    groups += [(kind, [r for r in rows if r["kind"] == kind and "deepgemm_head" in r]) for kind in ("contiguous", "masked")]
    for label, sel in groups:
        if sel:
            q = [ratio(r) for r in sel]
            print(f"\n{label}: ours ÷ DeepGEMM geomean {geomean(q):.3f} (min {min(q):.3f}, max {max(q):.3f}, n={len(q)})", end="")
    print()


if __name__ == "__main__":
    main(sys.argv[1])
