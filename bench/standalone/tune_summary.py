"""Summary of a standalone `--tune` run: per shape the fastest configuration, the heuristic's pick and
how far the pick is from the fastest, so that heuristic changes start from measurements.

    python bench/standalone/tune_summary.py gpu_logs/tune.log [--num-sms 132]

The heuristic's pick comes from the installed extension (``fp8gemm::_sm90_dense_pick_config``);
without it only the fastest configurations are listed.
"""
import argparse
import re


def parse(path):
    """{(m, n, k): {config: TFLOP/s}} for the tune lines of a log."""
    tuned = {}
    for line in open(path):
        match = re.match(r"\s*tune m=(\d+) n=(\d+) k=(\d+):(.*)", line)
        if match:
            shape = tuple(int(match.group(i)) for i in (1, 2, 3))
            tuned[shape] = {name: int(value) for name, value in re.findall(r"(\S+)=(\d+)", match.group(4))}
    return tuned


def heuristic_pick(shape, num_sms):
    """The library's config name for a bf16-out GEMM of this shape, or None."""
    try:
        import torch
        import torch_fp8gemm  # noqa: F401  (registers the ops)

        names = torch.ops.fp8gemm._sm90_dense_configs()
        return names[torch.ops.fp8gemm._sm90_dense_pick_config(*shape, num_sms)]
    except (ImportError, AttributeError, RuntimeError):
        return None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("log")
    parser.add_argument("--num-sms", type=int, default=132)
    parser.add_argument("--top", type=int, default=3)
    args = parser.parse_args()
    print("| M | N | K | fastest (TFLOP/s) | heuristic's pick | pick ÷ fastest |")
    print("|---|---|---|---|---|---|")
    for shape, results in parse(args.log).items():
        ranked = sorted(results.items(), key=lambda kv: -kv[1])
        fastest = ", ".join(f"{name} {value}" for name, value in ranked[: args.top])
        pick = heuristic_pick(shape, args.num_sms)
        ratio = f"{results[pick] / ranked[0][1]:.2f}" if pick in results else "n/a"
        print(f"| {shape[0]} | {shape[1]} | {shape[2]} | {fastest} | {pick or 'n/a'} | {ratio} |")


if __name__ == "__main__":
    main()
