"""Does FP8 training track bf16? The same models trained twice: bf16 autocast, and torch_fp8gemm's FP8 path.

    python bench/train_compare.py [--steps N] [--device cuda|cpu] [--out file.md] [--small] [--log-every N]

Models (each trained from the same initial weights, on the same batches in the same order, with the
same AdamW settings and learning-rate schedule):

* ``mlp``: a 4-layer MLP (GELU) regressing the outputs of a fixed random teacher network on Gaussian
  inputs (MSE, targets normalized to unit variance).
* ``transformer``: token + position embedding, one pre-norm block (causal attention, SwiGLU MLP),
  RMSNorm, LM head; next-token cross-entropy on a fixed synthetic corpus: sequences whose first half
  is a random Markov chain and whose second half repeats the first (the loss floor is about
  0.57 nats: 1.13 on the first half, 0 on the copied half).
* ``moe``: the same block with an MoE MLP: a router, top-2 of 8 SwiGLU experts, a small
  load-balancing loss.

Both runs keep float32 master weights and run under ``torch.autocast(dtype=torch.bfloat16)``. The
FP8 run first calls ``torch_fp8gemm.convert(model, min_features=0)`` (training-mode FP8Linear: every
linear except the LM head and the router runs its three GEMMs on FP8 kernels) and, for the MoE, swaps
the experts for ``FP8MoEExperts.from_fused`` on the same Parameters (training mode). Nothing is
downloaded. Prints the loss curves and a table: final loss (mean of the last 20 steps) of each run,
their relative difference and whether it is within 2%. Exits 0 unless something crashes.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import math
import sys
import time
from typing import Callable, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

import torch_fp8gemm as fg
from torch_fp8gemm.bench.gemm import format_table
from torch_fp8gemm.moe import FP8MoEExperts

TOLERANCE = 0.02  # relative difference of the final losses counted as "tracks bf16"
FINAL_WINDOW = 20  # the final loss is the mean of this many last steps


class Sizes(NamedTuple):
    # MLP regression
    mlp_in: int
    mlp_hidden: int
    teacher_hidden: int
    mlp_batch: int
    # LM
    vocab: int
    d_model: int
    heads: int
    ffn: int
    seq: int
    batch: int
    experts: int
    expert_ffn: int
    top_k: int
    warmup: int


# Feature dims are multiples of 128 (the kernels' scale block; K % 16 and N % 8 are the hard rules).
FULL = Sizes(mlp_in=1024, mlp_hidden=2048, teacher_hidden=1024, mlp_batch=1024, vocab=128, d_model=512, heads=4,
             ffn=1536, seq=256, batch=16, experts=8, expert_ffn=512, top_k=2, warmup=30)
SMALL = Sizes(mlp_in=128, mlp_hidden=256, teacher_hidden=128, mlp_batch=64, vocab=128, d_model=128, heads=2,
              ffn=256, seq=32, batch=4, experts=8, expert_ffn=128, top_k=2, warmup=2)

LR = 1e-3
WEIGHT_DECAY = 0.1
BALANCE_LOSS = 0.01
DATA_SEED, INIT_SEED = 1234, 0


def _log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------------------------
# Models


class MLP(nn.Module):
    """Four linear layers with GELU between them (biases included)."""

    def __init__(self, d_in: int, hidden: int, d_out: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, d_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Attention(nn.Module):
    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(out.transpose(1, 2).reshape(b, t, d))


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, ffn: int) -> None:
        super().__init__()
        self.gate_up = nn.Linear(d_model, 2 * ffn, bias=False)
        self.down = nn.Linear(ffn, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Experts(nn.Module):
    """High-precision SiLU-gated experts in transformers' fused layout, the interface of FP8MoEExperts:
    ``gate_up_proj`` [E, 2I, H] (gate rows first), ``down_proj`` [E, H, I];
    ``forward(x [T, H], top_k_index [T, k], top_k_weights [T, k]) -> [T, H]``. A plain loop over experts."""

    def __init__(self, num_experts: int, hidden: int, ffn: int) -> None:
        super().__init__()
        self.gate_up_proj = nn.Parameter(torch.empty(num_experts, 2 * ffn, hidden))
        self.down_proj = nn.Parameter(torch.empty(num_experts, hidden, ffn))
        for weight in (self.gate_up_proj, self.down_proj):  # nn.Linear's default range, per expert
            bound = 1.0 / weight.shape[-1] ** 0.5
            nn.init.uniform_(weight, -bound, bound)

    def forward(self, x: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
        for e in range(self.gate_up_proj.shape[0]):
            token, slot = torch.where(top_k_index == e)
            if token.numel() == 0:
                continue
            gate, up = F.linear(x[token], self.gate_up_proj[e]).chunk(2, dim=-1)
            y = F.linear(F.silu(gate) * up, self.down_proj[e])
            out.index_add_(0, token, y.float() * top_k_weights[token, slot].unsqueeze(-1).float())
        return out.to(x.dtype)


class MoE(nn.Module):
    """Router (softmax, top-k, renormalized weights) + experts; keeps a Switch-style balance loss."""

    def __init__(self, d_model: int, num_experts: int, ffn: int, top_k: int) -> None:
        super().__init__()
        self.top_k = top_k
        self.router = nn.Linear(d_model, num_experts, bias=False)
        self.experts = Experts(num_experts, d_model, ffn)
        self.balance_loss = torch.zeros(())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        probs = self.router(flat).float().softmax(dim=-1)
        weights, index = probs.topk(self.top_k, dim=-1)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        num_experts = probs.shape[-1]
        load = F.one_hot(index, num_experts).float().mean(dim=(0, 1))  # fraction of routed slots per expert
        self.balance_loss = num_experts * (load * probs.mean(dim=0)).sum()
        return self.experts(flat, index, weights).reshape(x.shape)


class Block(nn.Module):
    def __init__(self, d_model: int, heads: int, mlp: nn.Module) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.RMSNorm(d_model), nn.RMSNorm(d_model)
        self.attn = Attention(d_model, heads)
        self.mlp = mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyLM(nn.Module):
    def __init__(self, sizes: Sizes, moe: bool) -> None:
        super().__init__()
        d = sizes.d_model
        mlp = MoE(d, sizes.experts, sizes.expert_ffn, sizes.top_k) if moe else SwiGLU(d, sizes.ffn)
        self.embed = nn.Embedding(sizes.vocab, d)
        self.pos = nn.Parameter(torch.randn(sizes.seq, d) * 0.02)
        self.block = Block(d, sizes.heads, mlp)
        self.norm = nn.RMSNorm(d)
        self.lm_head = nn.Linear(d, sizes.vocab, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens) + self.pos[: tokens.shape[1]]
        return self.lm_head(self.norm(self.block(h)))


def to_fp8(model: nn.Module) -> nn.Module:
    """The FP8 training path: FP8Linear (training mode) for every linear but the LM head and the
    router; FP8MoEExperts (training mode) on the experts' own Parameters."""
    fg.convert(model, module_filter_fn=lambda module, fqn: not fqn.endswith(("lm_head", "router")), min_features=0)
    for module in list(model.modules()):
        if isinstance(module, MoE):
            module.experts = FP8MoEExperts.from_fused(module.experts.gate_up_proj, module.experts.down_proj)
    return model


# --------------------------------------------------------------------------------------------
# Data: fixed and identical for both runs


def markov_corpus(vocab: int, sequences: int, length: int, seed: int) -> torch.Tensor:
    """[sequences, length] tokens: the first half of each sequence is a random Markov chain (each
    token has 4 fixed successors taken with probabilities 0.55, 0.25, 0.12, 0.08), the second half
    repeats the first. The first half is learned from the previous token alone (entropy floor
    1.13 nats); the second needs attention to look back half a sequence (floor 0)."""
    gen = torch.Generator().manual_seed(seed)
    successors = torch.randint(0, vocab, (vocab, 4), generator=gen)
    probs = torch.tensor([0.55, 0.25, 0.12, 0.08])
    half = (length + 1) // 2
    chain = torch.empty(sequences, half, dtype=torch.long)
    chain[:, 0] = torch.randint(0, vocab, (sequences,), generator=gen)
    for t in range(1, half):
        choice = torch.multinomial(probs, sequences, replacement=True, generator=gen)
        chain[:, t] = successors[chain[:, t - 1], choice]
    return torch.cat([chain, chain], dim=1)[:, :length]


class Task:
    """A model factory, a deterministic batch per step and a loss (computed in float32)."""

    def __init__(self, name: str, build: Callable[[], nn.Module], batch: Callable[[int], tuple],
                 loss: Callable[[nn.Module, tuple], torch.Tensor]) -> None:
        self.name, self.build, self.batch, self.loss = name, build, batch, loss


def make_tasks(sizes: Sizes, steps: int, device: torch.device) -> list[Task]:
    # MLP: targets from a fixed random teacher, normalized on a probe batch to unit variance.
    teacher_gen = torch.Generator().manual_seed(DATA_SEED)
    w1 = torch.randn(sizes.teacher_hidden, sizes.mlp_in, generator=teacher_gen) / sizes.mlp_in ** 0.5
    w2 = torch.randn(sizes.mlp_in, sizes.teacher_hidden, generator=teacher_gen) / sizes.teacher_hidden ** 0.5
    w1, w2 = w1.to(device), w2.to(device)

    def teacher(x):
        return torch.tanh(2.0 * x @ w1.t()) @ w2.t()

    probe = torch.randn(4096, sizes.mlp_in, generator=teacher_gen).to(device)
    target_std = teacher(probe).std().item()

    def mlp_batch(step: int):
        gen = torch.Generator().manual_seed(DATA_SEED + 1 + step)
        x = torch.randn(sizes.mlp_batch, sizes.mlp_in, generator=gen).to(device)
        return x, teacher(x) / target_std

    def mlp_loss(model, batch):
        x, y = batch
        return F.mse_loss(model(x).float(), y)

    corpus = markov_corpus(sizes.vocab, steps * sizes.batch, sizes.seq + 1, DATA_SEED).to(device)

    def lm_batch(step: int):
        rows = corpus[step * sizes.batch:(step + 1) * sizes.batch]
        return rows[:, :-1], rows[:, 1:]

    def lm_loss(model, batch):
        tokens, targets = batch
        logits = model(tokens)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))
        for module in model.modules():
            if isinstance(module, MoE):
                loss = loss + BALANCE_LOSS * module.balance_loss
        return loss

    return [
        Task("mlp", lambda: MLP(sizes.mlp_in, sizes.mlp_hidden, sizes.mlp_in), mlp_batch, mlp_loss),
        Task("transformer", lambda: TinyLM(sizes, moe=False), lm_batch, lm_loss),
        Task("moe", lambda: TinyLM(sizes, moe=True), lm_batch, lm_loss),
    ]


# --------------------------------------------------------------------------------------------
# Training


def train(model: nn.Module, task: Task, steps: int, warmup: int, device: torch.device, label: str,
          log_every: int) -> list[float]:
    """AdamW, linear warm-up then cosine decay to 10%, gradient clipping at 1, bf16 autocast."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.95), weight_decay=WEIGHT_DECAY)

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.45 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    losses = []
    start = time.perf_counter()
    for step in range(steps):
        batch = task.batch(step)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            loss = task.loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            _log(f"    {task.name} {label}: loss {losses[-1]} at step {step}; stopping this run")
            break
        if (step + 1) % log_every == 0 or step + 1 == steps:
            _log(f"    {task.name} {label} step {step + 1}/{steps}: loss {losses[-1]:.4f} "
                 f"({time.perf_counter() - start:.1f} s)")
    return losses


def final_loss(losses: list[float]) -> float:
    window = losses[-FINAL_WINDOW:]
    return sum(window) / len(window) if window else float("nan")


def curve_table(curves: dict[str, dict[str, list[float]]], every: int) -> str:
    """Loss every `every` steps (mean over the `every` steps ending there) for each model and run."""
    names = list(curves)
    steps = max(len(run) for runs in curves.values() for run in runs.values())
    header = ["step"] + [f"{name} {label}" for name in names for label in ("bf16", "FP8")]
    rows = []
    for end in list(range(every, steps + 1, every)) + ([steps] if steps % every else []):
        row = [str(end)]
        for name in names:
            for label in ("bf16", "fp8"):
                window = curves[name][label][max(0, end - every):end]
                row.append(f"{sum(window) / len(window):.4f}" if window else "n/a")
        rows.append(row)
    return format_table(header, rows)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300, help="training steps per run (default 300)")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", help="write the result table (markdown) to this file")
    parser.add_argument("--small", action="store_true", help="tiny models (CPU smoke runs)")
    parser.add_argument("--log-every", type=int, default=None, help="loss lines every N steps (default steps/10)")
    parser.add_argument("--models", default="mlp,transformer,moe", help="comma-separated subset to run")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    sizes = SMALL if args.small else FULL
    log_every = args.log_every or max(1, args.steps // 10)
    wanted = [name.strip() for name in args.models.split(",") if name.strip()]
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    env = (f"{datetime.date.today()}, {gpu}, torch {torch.__version__}, sm_90a kernels built: "
           f"{fg.cuda_kernels_built()}, {'small' if args.small else 'full'} sizes, {args.steps} steps")
    _log(f"train_compare: {env}")

    curves: dict[str, dict[str, list[float]]] = {}
    for task in make_tasks(sizes, args.steps, device):
        if task.name not in wanted:
            continue
        torch.manual_seed(INIT_SEED)
        reference = task.build().to(device)
        fp8_model = to_fp8(copy.deepcopy(reference))
        _log(f"  {task.name}: {sum(p.numel() for p in reference.parameters()) / 1e6:.2f} M parameters; "
             f"{fp8_model.fp8gemm_conversion_report}".replace("\n", "\n    "))
        runs = {}
        for label, model in (("bf16", reference), ("fp8", fp8_model)):
            torch.manual_seed(INIT_SEED + 1)  # anything random inside a step draws the same numbers
            runs[label] = train(model, task, args.steps, sizes.warmup, device, label, log_every)
        curves[task.name] = runs

    if not curves:
        _log(f"no model selected (--models {args.models})")
        return 0
    curve = curve_table(curves, log_every)
    rows = []
    for name, runs in curves.items():
        bf16, fp8 = final_loss(runs["bf16"]), final_loss(runs["fp8"])
        rel = abs(fp8 - bf16) / abs(bf16) if bf16 else float("nan")
        within = "yes" if rel <= TOLERANCE else "no"
        rows.append([name, str(len(runs["fp8"])), f"{bf16:.4f}", f"{fp8:.4f}", f"{100 * rel:.2f}%", within])
    window = min(FINAL_WINDOW, args.steps)
    table = format_table(
        ["model", "steps", f"final loss bf16 (mean of last {window})", f"final loss FP8 (mean of last {window})",
         "relative difference", f"within {100 * TOLERANCE:.0f}%"], rows)
    _log("\nLoss curves (mean over each logging window):\n\n" + curve + "\n\n" + table + "\n")
    if args.out:
        command = "python bench/train_compare.py " + " ".join(argv if argv is not None else sys.argv[1:])
        with open(args.out, "w") as f:
            f.write(f"### Training comparison, bf16 autocast vs FP8 ({env})\n\nCommand: `{command}`\n\n"
                    f"{table}\n\nLoss curves (mean over each logging window):\n\n{curve}\n")
        _log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
