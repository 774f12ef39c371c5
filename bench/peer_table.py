"""Markdown table of a peer_bench.py log (its PERF lines): TFLOP/s of ours, DeepGEMM and torch's
block-wise GEMM, ours ÷ DeepGEMM, and the geometric means over the 19 DeepSeek-V3 dense anchors.
With --ab, two logs of one call (the tree as it is, then a patch applied: bench/peer_session.sh's
AB_PATCH) side by side: ours A and B, B ÷ A, and ours ÷ DeepGEMM on each side (DeepGEMM, timed
beside ours on both sides, absorbs the card's drift between them).

    python bench/peer_table.py gpu_logs/peers.log
    python bench/peer_table.py --ab gpu_logs/peers.log gpu_logs/b_x/peers.log
"""
import json
import math
import sys

ANCHORS = [(m, n, k) for m in (64, 128, 4096) for (n, k) in
           [(2112, 7168), (24576, 1536), (32768, 512), (7168, 16384), (4096, 7168), (7168, 2048)]] + [(8192, 8192, 8192)]


def geomean(xs):
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else float("nan")


def load(path):
    """The rows DeepGEMM ran beside ours, keyed by (kind, shape)."""
    rows = [json.loads(line[5:]) for line in open(path) if line.startswith("PERF")]
    return rows, {(r["kind"], tuple(r["shape"])): r for r in rows if "deepgemm_head" in r}


def groups(keys):
    """(label, keys) of the summary lines: the anchors, M <= 128 and M >= 4096 of them, other dense
    shapes, contiguous, masked."""
    dense = [key for key in keys if key[0] == "dense"]
    anchors = [key for key in dense if key[1] in ANCHORS]
    return [("19 anchors", anchors), ("anchors M <= 128", [key for key in anchors if key[1][0] <= 128]),
            ("anchors M >= 4096", [key for key in anchors if key[1][0] >= 4096]),
            ("other dense shapes", [key for key in dense if key[1] not in ANCHORS])] + \
           [(kind, [key for key in keys if key[0] == kind]) for kind in ("contiguous", "masked")]


def ratio(r):
    return r["ours"] / r["deepgemm_head"]


def table(path):
    rows, measured = load(path)
    print("| kind | shape | ours | DeepGEMM | torch block-wise | ours ÷ DeepGEMM | max rel. diff to DeepGEMM |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        dg = r.get("deepgemm_head")
        torch_block = r.get("torch_block")
        print(f"| {r['kind']} | {'x'.join(map(str, r['shape']))} | {r['ours']:.0f} | {dg:.0f} | "
              f"{f'{torch_block:.0f}' if torch_block else '-'} | {r['ours'] / dg:.3f} | {r.get('dg_err', '-')} |"
              if dg else f"| {r['kind']} | {'x'.join(map(str, r['shape']))} | {r['ours']:.0f} | - | - | - | - |")
    for label, keys in groups(list(measured)):
        if keys:
            q = [ratio(measured[key]) for key in keys]
            print(f"\n{label}: ours ÷ DeepGEMM geomean {geomean(q):.3f} (min {min(q):.3f}, max {max(q):.3f}, n={len(q)})", end="")
    print()


def ab_table(path_a, path_b):
    _, a = load(path_a)
    _, b = load(path_b)
    both = [key for key in a if key in b]
    if not both:
        raise ValueError(f"{path_a} and {path_b} have no shape in common")
    print("| kind | shape | ours A | ours B | B ÷ A | ours ÷ DeepGEMM, A | ours ÷ DeepGEMM, B |")
    print("|---|---|---|---|---|---|---|")
    for key in both:
        ra, rb = a[key], b[key]
        print(f"| {key[0]} | {'x'.join(map(str, key[1]))} | {ra['ours']:.0f} | {rb['ours']:.0f} | "
              f"{rb['ours'] / ra['ours']:.3f} | {ratio(ra):.3f} | {ratio(rb):.3f} |")
    for label, keys in groups(both):
        if keys:
            print(f"\n{label}: ours ÷ DeepGEMM {geomean([ratio(a[k]) for k in keys]):.3f} -> "
                  f"{geomean([ratio(b[k]) for k in keys]):.3f} (B ÷ A {geomean([b[k]['ours'] / a[k]['ours'] for k in keys]):.3f}, "
                  f"n={len(keys)})", end="")
    print()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--ab"] and len(sys.argv) == 4:
        ab_table(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 2:
        table(sys.argv[1])
    else:
        sys.exit(__doc__)
