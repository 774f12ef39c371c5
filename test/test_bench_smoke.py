"""Smoke tests of the benchmark and training-comparison code paths on tiny sizes (CPU, a few seconds).

They check that the scripts run end to end and produce their tables, not any timing or accuracy
figure: on the CPU the FP8 ops run the ATen reference and the timers read the host clock.
"""
import importlib.util
import math
import pathlib

import pytest
import torch

from conftest import requires_cuda
from torch_fp8gemm.bench import layers as bench_layers
from torch_fp8gemm.bench import gemm as B

REPO = pathlib.Path(__file__).resolve().parents[1]


def _load_train_compare():
    spec = importlib.util.spec_from_file_location("train_compare", REPO / "bench" / "train_compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _table_rows(table: str) -> list[list[str]]:
    """Data rows of the first markdown table in ``table``."""
    lines = table.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    block = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        block.append(line)
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in block[2:]]


def test_train_compare_small(tmp_path):
    out = tmp_path / "train.md"
    train_compare = _load_train_compare()
    assert train_compare.main(["--small", "--steps", "5", "--device", "cpu", "--out", str(out)]) == 0
    rows = _table_rows(out.read_text().split("Command:")[1])
    assert [row[0] for row in rows] == ["mlp", "transformer", "moe"]
    for row in rows:
        assert row[1] == "5"
        assert all(math.isfinite(float(value)) for value in row[2:4]), row
        assert row[5] in ("yes", "no")


def test_benchmark_moe_small_cpu():
    table = B.benchmark_moe(1, device="cpu", timer=B.WallTimer(), small=True)
    rows = _table_rows(table)
    assert [row[0] for row in rows] == ["contiguous", "masked"]
    for row in rows:
        assert row[5] != "n/a" and float(row[5]) > 0  # ours µs
        assert row[10] != "n/a"  # dense per expert runs everywhere


def test_layer_benchmarks_small_cpu():
    timer = B.WallTimer()
    forward = bench_layers.benchmark_linear_forward(1, timer, small=True, device="cpu")
    rows = _table_rows(forward)
    assert len(rows) == len(bench_layers.SMALL_FORWARD_LAYERS) * len(bench_layers.SMALL_TOKENS)
    assert all(value != "n/a" for row in rows for value in row[4:10]), forward

    training = bench_layers.benchmark_training_step(1, timer, small=True, device="cpu")
    rows = _table_rows(training)
    assert len(rows) == (len(bench_layers.SMALL_TRAINING_LINEARS) + 1) * len(bench_layers.SMALL_TOKENS)
    assert all(row[3] != "n/a" and row[4] != "n/a" for row in rows), training  # bf16 and ours


def test_rowwise_baseline_matches_bf16_gradients():
    """The torchao-style rowwise linear computes y, dx and dW (to FP8 accuracy: ~4% on random data)."""
    torch.manual_seed(0)
    x = torch.randn(64, 256, dtype=torch.bfloat16, requires_grad=True)
    linear = torch.nn.Linear(256, 128, bias=False, dtype=torch.bfloat16)
    dy = torch.randn(64, 128, dtype=torch.bfloat16)
    linear(x).backward(dy)
    expected = (linear(x).detach(), x.grad.clone(), linear.weight.grad.clone())
    x.grad = linear.weight.grad = None
    if bench_layers.rowwise_unavailable("cpu") is not None:
        pytest.skip("torch._scaled_mm has no row-wise CPU kernel in this torch")
    out = bench_layers.RowwiseFP8Linear(linear.weight)(x)
    out.backward(dy)
    for actual, reference in zip((out, x.grad, linear.weight.grad), expected):
        err = ((actual.float() - reference.float()).norm() / reference.float().norm()).item()
        assert err < 0.08, err


@requires_cuda
def test_kernel_timer_cuda():
    # KernelTimer reads CUPTI kernel records and synchronizes CUDA: it needs a GPU (WallTimer is the
    # CPU stand-in used above), so this part is skipped on CPU-only machines.
    timer = B.KernelTimer("cuda", flush_bytes=1 << 20)
    x = torch.randn(256, 256, device="cuda")
    assert timer.median_us(lambda: x @ x, iters=3) > 0


@requires_cuda
def test_kernel_timer_interleaved_attributes_calls():
    # Round-robin timing must charge each call's kernels to its own callable: a callable launching
    # nothing but a tiny copy, one running eight large matmuls, and the tiny one again.
    timer = B.KernelTimer("cuda", flush_bytes=1 << 20)
    small = torch.ones(8, device="cuda")
    big = torch.randn(2048, 2048, device="cuda")

    def eight_matmuls():
        for _ in range(8):
            big @ big

    tiny, heavy, tiny_again = timer.median_us_interleaved([lambda: small.add_(1), eight_matmuls,
                                                           lambda: small.add_(1)], iters=5)
    assert heavy > 20 * max(tiny, tiny_again), (tiny, heavy, tiny_again)
    assert timer.last_breakdown and sum(timer.last_breakdown.values()) < heavy / 20


def test_kernel_categories():
    from torch_fp8gemm.bench.gemm import kernel_category

    gemm = "void torch_fp8gemm::sm90::sm90_fp8_gemm_kernel<128, 256, 4, 1, 1, (torch_fp8gemm::sm90::GemmKind){}, false>(...)"
    assert kernel_category(gemm.format(0)) == "FP8 GEMM dense"
    assert kernel_category(gemm.format(1)) == "FP8 GEMM grouped"
    assert kernel_category(gemm.format(3)) == "FP8 GEMM dense 1x128"
    assert kernel_category("void torch_fp8gemm::(anonymous namespace)::quantize_1x128_cols_kernel<...>(...)") == \
        "FP8 quantization"
    assert kernel_category("triton_poi_fused_mul_0") == "Inductor (Triton)"
    assert kernel_category("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64") == "other GEMM (cuBLAS)"
    assert kernel_category("void at::native::vectorized_elementwise_kernel<4, ...>") == "other torch kernels"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")
def test_cpu_only_suite_says_why_no_table(capsys):
    from torch_fp8gemm.bench import gemm as benchmark

    assert benchmark.main(["--suite", "moe", "--skip-verify"]) == 0
    assert "No benchmark table for --suite moe" in capsys.readouterr().out
