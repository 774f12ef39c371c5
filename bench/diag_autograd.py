"""Diagnose the GPU dgrad error: quantization agreement and kernel error on the same operands."""
import torch

import torch_fp8gemm as fg
from torch_fp8gemm import testing as T

torch.manual_seed(0)
m, n, k = 70, 136, 384
dy = torch.randn(m, n, device="cuda")
w = torch.randn(n, k, dtype=torch.bfloat16, device="cuda")
wt = torch.nn.functional.pad(w.t(), (0, 8)).contiguous()  # [384, 144]
dyp = torch.nn.functional.pad(dy, (0, 8)).contiguous()  # [70, 144]
qa, sa = fg.quantize_1x128(dyp)
qb, sb = fg.quantize_128x128(wt)
ca, csa = T.quantize_1x128_torch(dyp.cpu())
cb, csb = T.quantize_128x128_torch(wt.cpu())
print("a fp8 equal:", torch.equal(qa.float().cpu(), ca.float()), "a scale equal:", torch.equal(sa.cpu(), csa))
print("b fp8 equal:", torch.equal(qb.float().cpu(), cb.float()), "b scale equal:", torch.equal(sb.cpu(), csb))
for out_dtype in (torch.float32, torch.bfloat16):
    out = fg.dense(qa, qb, sa, sb, out_dtype=out_dtype)
    ref = T.reference_dense(qa.cpu(), sa.cpu(), qb.cpu(), sb.cpu())
    print(out_dtype, "kernel vs f64 on the same operands:", T.relative_error(out.cpu(), ref))
    out_hp = fg.dense(dyp, wt, out_dtype=out_dtype)
    print(out_dtype, "op on hp inputs vs f64 of cpu-quantized:", T.relative_error(out_hp.cpu(), T.reference_dense(ca, csa, cb, csb)))
