"""The wgmma loops of each kernel in a SASS dump (`cuobjdump -sass`): for every backward branch
whose body holds QGMMA instructions, its length and instruction mix (a loop nested in another shows
up in both); --dump N prints loop N of each kernel without its FFMAs. Reads ours (bench/sass.sh) and
DeepGEMM's (bench/peer_sass.sh) alike; --kernel keeps the kernels whose mangled name contains it.

    python3 bench/sass_loops.py out/grouped_bm128.sass [--kernel Li128ELi192ELi2E] [--dump 2]
"""
import argparse
import collections
import re
import signal


def kernels(path):
    """{mangled name: [(address, instruction)]}"""
    found, name = {}, None
    for line in open(path):
        m = re.search(r"Function : (\S+)", line)
        if m:
            name = m.group(1)
            found[name] = []
            continue
        m = re.search(r"/\*([0-9a-f]{4,})\*/\s+(.*?);", line)
        if name and m:
            found[name].append((int(m.group(1), 16), m.group(2)))
    return found


def opcode(text):
    words = text.split()
    return words[1] if words[0].startswith("@") and len(words) > 1 else words[0]


def main():
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # quiet under `| head`
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sass")
    parser.add_argument("--kernel", default="")
    parser.add_argument("--dump", type=int, default=-1)
    args = parser.parse_args()
    for name, body in kernels(args.sass).items():
        if args.kernel not in name:
            continue
        print(f"{name[:140]}: {len(body)} instructions")
        at = {address: i for i, (address, _) in enumerate(body)}
        loops = 0
        for i, (address, text) in enumerate(body):
            m = re.search(r"BRA\S*\s+(0x[0-9a-f]+)", text)
            target = int(m.group(1), 16) if m else None
            if target is None or target > address or target not in at:
                continue
            loop = body[at[target]:i + 1]
            mix = collections.Counter(opcode(t) for _, t in loop)
            qgmma = sum(n for op, n in mix.items() if op.startswith("QGMMA"))
            if not qgmma:
                continue
            lds = sum(n for op, n in mix.items() if op.startswith("LDS"))
            print(f"  loop {loops} at {target:#x}: {len(loop)} instructions, {qgmma} QGMMA, {mix['FFMA']} FFMA, "
                  f"{mix['FMUL']} FMUL, {lds} LDS, {mix['SYNCS.PHASECHK.TRANS64.TRYWAIT']} TRYWAIT")
            if loops == args.dump:
                for a, t in loop:
                    if opcode(t) != "FFMA":
                        print(f"    {a:#x} {t}")
            loops += 1


if __name__ == "__main__":
    main()
