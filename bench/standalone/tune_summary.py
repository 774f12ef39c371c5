"""Summary of a standalone `--tune` run: per shape the fastest configuration, the heuristic's pick and
how far the pick is from the fastest, so that heuristic changes start from measurements.

    python bench/standalone/tune_summary.py gpu_logs/tune.log [--num-sms 132]

The heuristic's pick comes from the installed extension (``fp8gemm::_sm90_dense_plan``); without it
(or without the library's config names) only the fastest configurations are listed. Split-K lines
(``tune-splitk``) are listed when they beat every unsplit configuration.
"""
import argparse
import re


def parse(path):
    """{(m, n, k): {config: TFLOP/s}} for the plain and the split-K lines of a tune log."""
    plain, split = {}, {}
    for line in open(path):
        match = re.match(r"\s*tune(-splitk)? m=(\d+) n=(\d+) k=(\d+):(.*)", line)
        if not match:
            continue
        shape = tuple(int(match.group(i)) for i in (2, 3, 4))
        results = {name: int(value) for name, value in re.findall(r"(\S+)=(\d+)", match.group(5))}
        (split if match.group(1) else plain)[shape] = results
    return plain, split


def heuristic_pick(shape, num_sms):
    """The library's [config name, splits] for a bf16-out GEMM of this shape, or None."""
    try:
        import torch
        import torch_fp8gemm  # noqa: F401  (registers the ops)

        names = torch.ops.fp8gemm._sm90_dense_configs()
        config, splits = torch.ops.fp8gemm._sm90_dense_plan(*shape, num_sms)
        return names[config], splits
    except (ImportError, AttributeError, RuntimeError):
        return None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("log")
    parser.add_argument("--num-sms", type=int, default=132)
    parser.add_argument("--top", type=int, default=3)
    args = parser.parse_args()
    plain, split = parse(args.log)
    print("| M | N | K | fastest (TFLOP/s) | heuristic's pick | pick ÷ fastest | faster split-K |")
    print("|---|---|---|---|---|---|---|")
    for shape, results in plain.items():
        ranked = sorted(results.items(), key=lambda kv: -kv[1])
        fastest = ", ".join(f"{name} {value}" for name, value in ranked[: args.top])
        pick = heuristic_pick(shape, args.num_sms)
        pick_cell, ratio_cell = "n/a", "n/a"
        if pick is not None:
            name, splits = pick
            pick_cell = name if splits == 1 else f"{name}/s{splits}"
            measured = results.get(name) if splits == 1 else split.get(shape, {}).get(f"{name}/s{splits}")
            if measured:
                ratio_cell = f"{measured / ranked[0][1]:.2f}"
        better_split = [(n, v) for n, v in split.get(shape, {}).items() if v > ranked[0][1]]
        split_cell = ", ".join(f"{n} {v}" for n, v in sorted(better_split, key=lambda kv: -kv[1])[:2]) or "-"
        print(f"| {shape[0]} | {shape[1]} | {shape[2]} | {fastest} | {pick_cell} | {ratio_cell} | {split_cell} |")


if __name__ == "__main__":
    main()
