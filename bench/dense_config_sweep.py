"""Dense config sweep on the GPU: every compiled config that fits each shape, forced, timed with CUDA
events (L2 flushed before each call) on M-major activation scales, beside the heuristic's pick, ours with M-major scales (no layout
copy in the op) and DeepGEMM when the peer kit's build is importable (DG_PRINT_CONFIGS=1 prints its
choice). Needs the peer kit's kbench.py (PEER_DIR, default .peers).
    SWEEP_SHAPES="m,n,k;..." SWEEP_CONFIGS=1 PYTHONPATH=/tmp/deepgemm/dghead python3 bench/dense_config_sweep.py
SWEEP_CONFIGS=0 times only the pick. Output: one SWEEP json line per shape."""
import os, sys, json
sys.path.insert(0, os.environ.get("PEER_DIR", ".peers"))
import torch
from kbench import per_token_cast, per_block_cast
import torch_fp8gemm  # noqa: F401
ops = torch.ops.fp8gemm
try:
    import deep_gemm as dg
    from deep_gemm.utils.layout import get_mn_major_tma_aligned_tensor
except Exception:  # noqa: BLE001
    dg = None
names = ops._sm90_dense_configs()
flush = torch.empty(512 * 1024 * 1024 // 4, dtype=torch.int32, device="cuda")
ITERS = int(os.environ.get("SWEEP_ITERS", "8"))


def t(fn):
    fn(); torch.cuda.synchronize()
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(ITERS)]
    for s, e in ev:
        flush.zero_(); s.record(); fn(); e.record()
    torch.cuda.synchronize()
    return sorted(s.elapsed_time(e) for s, e in ev)[ITERS // 2] * 1e3  # median us


if os.environ.get("SWEEP_SHAPES"):
    shapes = [tuple(map(int, s.split(","))) for s in os.environ["SWEEP_SHAPES"].split(";")]
else:
    shapes = [(m, n, k) for m in (64, 128, 4096) for (n, k) in [(2112, 7168), (24576, 1536), (32768, 512), (7168, 16384), (4096, 7168), (7168, 2048)]] + [(8192, 8192, 8192)]
for m, n, k in shapes:
    torch.manual_seed(0)
    qa, sa = per_token_cast(torch.randn(m, k, device="cuda").bfloat16())
    qb, sb = per_block_cast(torch.randn(n, k, device="cuda").bfloat16())
    ref = ops.dense(qa, qb, a_scale=sa, b_scale=sb)
    pick = names[ops._sm90_dense_pick_config(m, n, k, torch.cuda.get_device_properties(0).multi_processor_count)]
    res, bad = {}, []
    # M-major scales (what quantize_1x128 returns): no layout copy inside the op
    sa_m = torch.empty(sa.shape[1], (m + 3) // 4 * 4, device="cuda")[:, :m].t()
    sa_m.copy_(sa)
    for i, name in enumerate(names if os.environ.get("SWEEP_CONFIGS", "1") == "1" else []):
        bm = int(name.split("_")[0][2:])
        if bm < 64 and m > bm:
            continue
        if m >= 1024 and bm < 128:
            continue
        out = ops._sm90_dense_forced(qa, qb, sa_m, sb, None, torch.bfloat16, i)
        if not torch.equal(out, ref):
            bad.append(name)
        res[name] = t(lambda: ops._sm90_dense_forced(qa, qb, sa_m, sb, None, torch.bfloat16, i))
    r = dict(shape=[m, n, k], pick=pick, pick_us=res.get(pick), default_us=t(lambda: ops.dense(qa, qb, a_scale=sa, b_scale=sb)),
             mmajor_us=t(lambda: ops.dense(qa, qb, a_scale=sa_m, b_scale=sb)))
    assert torch.equal(ops.dense(qa, qb, a_scale=sa_m, b_scale=sb), ref)
    if dg is not None:
        d = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
        sa2 = get_mn_major_tma_aligned_tensor(sa)
        r["dg_us"] = t(lambda: dg.fp8_gemm_nt((qa, sa2), (qb, sb), d))
    best = sorted(res.items(), key=lambda x: x[1]) or [("none", 0.0)] * 3
    r["best"] = [(a, round(b, 2)) for a, b in best[:6]]
    r["bad"] = bad
    r["all"] = {a: round(b, 2) for a, b in res.items()}
    print("SWEEP", json.dumps(r), flush=True)
