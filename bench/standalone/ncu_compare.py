"""Summarize an ncu source page (--page source --csv --print-source sass) of several kernels side by side:
per kernel the warp-instruction count, the stall-reason mix of the sampled warps, the most executed
opcodes and the instructions holding the most stall samples. Used to compare our dense kernel with the
reference kernel (bench/device_session.sh ncu writes ncu_source.csv).

    python bench/standalone/ncu_compare.py ncu_source.csv [--top 12]
"""
import argparse
import csv
import io


def kernels(path):
    """Yields (kernel name, header, rows) for every kernel section of the csv."""
    name, lines = None, []
    with open(path, newline="") as f:
        for line in f:
            if line.startswith('"Kernel Name"'):
                if name is not None:
                    yield parse(name, lines)
                name, lines = line.split(",", 1)[1].strip().strip('"'), []
            elif name is not None:
                lines.append(line)
    if name is not None:
        yield parse(name, lines)


def parse(name, lines):
    rows = list(csv.reader(io.StringIO("".join(lines))))
    header = rows[0]
    return name, header, [r for r in rows[1:] if len(r) == len(header)]


def number(text):
    try:
        return float(text or 0)
    except ValueError:
        return 0.0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    for name, header, rows in kernels(args.csv):
        col = {h: i for i, h in enumerate(header)}
        samples, executed = col["Warp Stall Sampling (All Samples)"], col["Instructions Executed"]
        stalls = [h for h in header if h.startswith("stall_") and "Not Issued" not in h]
        total = sum(number(r[samples]) for r in rows) or 1.0
        print(f"== {name[:140]}")
        print(f"   warp instructions {sum(number(r[executed]) for r in rows):.3g}, stall samples {total:.0f}")
        mix = {s: sum(number(r[col[s]]) for r in rows) for s in stalls}
        print("   stalls: " + ", ".join(f"{k[6:]} {100 * v / total:.1f}%"
                                      for k, v in sorted(mix.items(), key=lambda kv: -kv[1])[:8]))
        opcodes = {}
        for r in rows:
            words = r[col["Source"]].split()
            if words:
                op = (words[1] if words[0].startswith("@") and len(words) > 1 else words[0]).split(".")[0]
                opcodes[op] = opcodes.get(op, 0.0) + number(r[executed])
        print("   opcodes (1e6 warp instructions): " + ", ".join(
            f"{k} {v / 1e6:.1f}" for k, v in sorted(opcodes.items(), key=lambda kv: -kv[1])[:12]))
        for r in sorted(rows, key=lambda r: -number(r[samples]))[: args.top]:
            top = sorted(((s[6:], number(r[col[s]])) for s in stalls), key=lambda kv: -kv[1])[:2]
            print(f"   {r[col['Address']][-5:]} {100 * number(r[samples]) / total:5.1f}%  "
                  f"exec {number(r[executed]) / 1e6:6.2f}M  {r[col['Source']][:58]:58s} "
                  + ", ".join(f"{k} {v:.0f}" for k, v in top))


if __name__ == "__main__":
    main()
