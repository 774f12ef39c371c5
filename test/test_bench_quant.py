"""Smoke test of the quantization benchmark on tiny sizes (CPU, host-clock timer): it runs end to end
and produces its table; no timing figure is checked."""
from torch_fp8gemm.bench import quant as bench_quant
from torch_fp8gemm.bench.gemm import WallTimer


def test_benchmark_quantize_small_cpu():
    table = bench_quant.benchmark_quantize(1, WallTimer(), 1000.0, device="cpu", small=True)
    lines = [line for line in table.splitlines() if line.startswith("|")][2:]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    assert [row[0] for row in rows] == ["1x128", "1x128 transposed", "128x128"]
    for row in rows:
        assert float(row[3]) > 0 and float(row[6]) > 0 and row[5].endswith("%")
        assert row[8] == "yes"  # the CPU op is the reference itself
