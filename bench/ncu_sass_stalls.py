"""Where a kernel's warps stall, per SASS instruction: reads the source page of an ncu report
(`ncu --import rep.ncu-rep -k regex:NAME --page source --csv --print-source sass > k.csv`, from a
profile taken with `--set full`, which samples warp states per PC) and prints the stall samples and
the executed warp instructions by opcode, then the instructions with the most samples.

    python3 bench/ncu_sass_stalls.py ours.csv [deepgemm.csv] [--top 40]
"""
import argparse
import collections
import csv
import re


def load(path):
    """[(title, header, rows)]: one source table per profiled kernel, each under a header row with
    'Address' and 'Source' (the line before a header, where there is one, names the kernel)."""
    tables, previous = [], None
    for row in csv.reader(open(path, newline="")):
        if "Source" in row and "Address" in row:
            tables.append((" ".join(previous or [])[:120], row, []))
        elif tables and len(row) == len(tables[-1][1]):
            tables[-1][2].append(row)
        previous = row
    if not tables:
        raise ValueError(f"{path}: no source table (a header with 'Address' and 'Source')")
    return tables


def number(text):
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return 0.0


def summarize(path, title, header, rows, top):
    col = {name: i for i, name in enumerate(header)}
    samples = next((c for c in header if c.startswith("Warp Stall Sampling (All")), None)
    executed = next((c for c in header if c.startswith("Instructions Executed")), None)
    if samples is None:
        raise ValueError(f"{path}: no 'Warp Stall Sampling (All ...)' column; was SourceCounters collected?")
    # Per-reason columns, where this ncu version writes them (e.g. "stall_long_sb").
    reasons = [c for c in header if re.match(r"stall_|smsp__pcsamp", c)]
    total = sum(number(r[col[samples]]) for r in rows)
    print(f"== {path} {title}: {len(rows)} instructions, {total:.0f} stall samples")
    by_op, executed_by_op = collections.Counter(), collections.Counter()
    for r in rows:
        words = r[col["Source"]].split() or ["?"]
        opcode = words[1] if words[0].startswith("@") and len(words) > 1 else words[0]
        by_op[opcode] += number(r[col[samples]])
        if executed:
            executed_by_op[opcode] += number(r[col[executed]])
    print("samples by opcode:", ", ".join(f"{op} {n:.0f}" for op, n in by_op.most_common(15)))
    if executed:
        total_executed = sum(executed_by_op.values())
        print(f"warp instructions executed {total_executed:.0f}; by opcode:",
              ", ".join(f"{op} {n:.0f}" for op, n in executed_by_op.most_common(20)))
    ranked = sorted(rows, key=lambda r: -number(r[col[samples]]))[:top]
    for r in ranked:
        detail = ", ".join(f"{c} {number(r[col[c]]):.0f}" for c in reasons if number(r[col[c]]) > 0)
        ex = f" exec {number(r[col[executed]]):.0f}" if executed else ""
        print(f"{r[col['Address']]:>8} {number(r[col[samples]]):7.0f}{ex}  {r[col['Source']][:70]}  {detail[:160]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("csv", nargs="+")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    for path in args.csv:
        for title, header, rows in load(path):
            summarize(path, title, header, rows, args.top)


if __name__ == "__main__":
    main()
