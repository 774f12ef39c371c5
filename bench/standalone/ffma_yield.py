"""Post-link SASS pass: let the promotion FFMAs of the GEMM kernels give up the issue slot.

Why: in the fine-grained-scaling GEMM each math warp alternates between issuing wgmmas (tensor cores)
and a run of 64-128 FFMAs that promote the tensor-core partial sums into the FP32 accumulators. The two
(or three) math warps on one SM sub-partition should interleave: while one promotes, the other's wgmmas
run. ptxas emits the promotion FFMAs in pairs whose second instruction marks an operand for the
register reuse cache; an instruction that fills the reuse cache also carries the control bit that keeps
the warp on the issue slot for the next instruction (the "yield" flag of the Volta+ control field, bit
45 of the high instruction word, set = do not switch). Clearing both bits on the first part of each
promotion run lets the scheduler switch warps on every instruction there, so the other warpgroup's
wgmma issue and bookkeeping are not held behind the FFMA stream. The idea and the bit positions are
public (DeepGEMM's README, "FFMA SASS interleaving"; CuAssembler's control-code layout); this is our own
implementation (its earlier measurements are in the git history of docs/benchmarks.md).

Safety: the reuse bit is a cache hint (clearing it only makes the instruction read the register file
again) and the yield bit is a scheduling hint; neither changes what an instruction computes. A run is
patched only if it looks like a promotion (>= MIN_RUN consecutive FFMAs, every destination distinct),
and its bytes are located by matching the whole run, so nothing else in the binary can be touched.

Usage: python bench/standalone/ffma_yield.py [--fraction F] [--dry-run] FILE...   (a .so, executable or cubin with
uncompressed sm_90a SASS). Needs cuobjdump (and nvdisasm) on PATH or under $CUDA_HOME/bin.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

KEEP_SLOT_BIT = 1 << 45      # control field "yield" flag: set = the warp keeps the issue slot
REUSE_BITS = 0xF << 58       # operand reuse-cache flags (one per source slot)
MIN_RUN = 16                 # shortest FFMA run treated as a promotion (BN = 32 gives 16 per wave)
DEFAULT_FRACTION = 9 / 16    # share of each run (from its start) that is patched

_WORD = re.compile(r"/\*\s*(0x[0-9a-fA-F]{16})\s*\*/")
_INSTR = re.compile(r"/\*([0-9a-fA-F]{4,})\*/\s+(.*?)\s*;")


@dataclass
class Instruction:
    text: str
    lo: int
    hi: int

    @property
    def opcode(self) -> str:
        tokens = self.text.split()
        if tokens and tokens[0].startswith("@"):  # predicate guard
            tokens = tokens[1:]
        return tokens[0] if tokens else ""

    @property
    def dest(self) -> str:
        tokens = self.text.split()
        if tokens and tokens[0].startswith("@"):
            tokens = tokens[1:]
        return tokens[1].rstrip(",") if len(tokens) > 1 else ""

    def to_bytes(self) -> bytes:
        return self.lo.to_bytes(8, "little") + self.hi.to_bytes(8, "little")


@dataclass
class Run:
    function: str
    instructions: list[Instruction] = field(default_factory=list)


def parse_sass(sass: str) -> list[tuple[str, list[Instruction]]]:
    """Functions of a cuobjdump -sass listing as (name, instructions); each instruction takes two lines
    (text + low word, then the high word alone)."""
    functions: list[tuple[str, list[Instruction]]] = []
    lines = sass.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if "Function :" in line:
            functions.append((line.split("Function :", 1)[1].strip(), []))
        else:
            m = _INSTR.search(line)
            w = _WORD.search(line)
            if m and w and functions and i + 1 < len(lines):
                w_hi = _WORD.search(lines[i + 1])
                if w_hi and not _INSTR.search(lines[i + 1]):
                    functions[-1][1].append(Instruction(m.group(2).strip(), int(w.group(1), 16), int(w_hi.group(1), 16)))
                    i += 2
                    continue
        i += 1
    return functions


def promotion_runs(functions, min_run: int = MIN_RUN) -> list[Run]:
    """Maximal runs of consecutive unpredicated FFMAs with distinct destinations, at least min_run long."""
    runs: list[Run] = []
    for name, instructions in functions:
        current: list[Instruction] = []
        for ins in instructions + [Instruction("END", 0, 0)]:
            if ins.opcode == "FFMA" and not ins.text.startswith("@"):
                current.append(ins)
                continue
            if len(current) >= min_run and len({x.dest for x in current}) == len(current):
                runs.append(Run(name, current))
            current = []
    return runs


def patched_words(run: Run, fraction: float) -> list[Instruction]:
    """The run with reuse + keep-slot bits cleared on reuse-marked instructions of its first part."""
    limit = int(len(run.instructions) * fraction)
    out = []
    for idx, ins in enumerate(run.instructions):
        hi = ins.hi
        if idx < limit and hi & REUSE_BITS:
            hi &= ~(REUSE_BITS | KEEP_SLOT_BIT)
        out.append(Instruction(ins.text, ins.lo, hi))
    return out


def apply(data: bytearray, runs: list[Run], fraction: float) -> tuple[int, int]:
    """Patches every occurrence of every run in data; returns (runs found, instructions changed)."""
    found = changed = 0
    for run in runs:
        old = b"".join(x.to_bytes() for x in run.instructions)
        new_ins = patched_words(run, fraction)
        new = b"".join(x.to_bytes() for x in new_ins)
        if old == new:
            continue
        pos = data.find(old)
        if pos < 0:
            continue
        found += 1
        while pos >= 0:
            data[pos:pos + len(old)] = new
            changed += sum(a.hi != b.hi for a, b in zip(run.instructions, new_ins))
            pos = data.find(old, pos + len(new))
    return found, changed


def find_tool(name: str) -> str | None:
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    candidates = [shutil.which(name)]
    if cuda_home:
        candidates.append(os.path.join(cuda_home, "bin", name))
    for c in candidates:
        if c and os.path.exists(c):
            return c
    return None


def patch_file(path: str, fraction: float = DEFAULT_FRACTION, dry_run: bool = False, log=print) -> tuple[int, int]:
    cuobjdump = find_tool("cuobjdump")
    if cuobjdump is None:
        raise FileNotFoundError("cuobjdump not found on PATH or under $CUDA_HOME/bin")
    env = dict(os.environ)
    nvdisasm = find_tool("nvdisasm")
    if nvdisasm:
        env["PATH"] = os.path.dirname(nvdisasm) + os.pathsep + env.get("PATH", "")
    res = subprocess.run([cuobjdump, "-sass", path], capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"cuobjdump -sass {path} failed: {res.stderr.strip()[:500]}")
    runs = promotion_runs(parse_sass(res.stdout))
    with open(path, "rb") as f:
        data = bytearray(f.read())
    found, changed = apply(data, runs, fraction)
    if not dry_run and changed:
        tmp = path + ".ffma_yield.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        shutil.copymode(path, tmp)
        os.replace(tmp, path)
    log(f"ffma_yield: {path}: {len(runs)} promotion runs, {found} located, {changed} instructions "
        f"{'would change' if dry_run else 'changed'} (fraction {fraction:.3f})")
    return found, changed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+")
    p.add_argument("--fraction", type=float, default=float(os.environ.get("TORCH_FP8GEMM_FFMA_YIELD", DEFAULT_FRACTION)))
    p.add_argument("--dry-run", action="store_true")
    a = p.parse_args(argv)
    for path in a.files:
        patch_file(path, a.fraction, a.dry_run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
