"""torch.distributed on CPU (gloo, 2 processes spawned by the test): a model converted with fg.convert
(training mode) and wrapped with FSDP2's fully_shard trains exactly like the same model on one process,
and its sharded and full state dicts round-trip; FP8MoEExperts sharded along its experts too."""
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import torch_fp8gemm as fg

fsdp = pytest.importorskip("torch.distributed.fsdp")
WORLD, STEPS = 2, 3


def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(256, 512), nn.GELU(), nn.Linear(512, 256, bias=False))


def batches():
    g = torch.Generator().manual_seed(1)
    return [torch.randn(8 * WORLD, 256, generator=g) for _ in range(STEPS)]


def _train(module, loss_of_step, distributed=False):
    """STEPS of SGD on ``loss_of_step(step)``; the losses (averaged over the ranks when distributed)."""
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    losses = []
    for step in range(STEPS):
        loss = loss_of_step(step)
        loss.backward()
        opt.step()
        opt.zero_grad()
        mean = loss.detach().clone()
        if distributed:
            dist.all_reduce(mean)
            mean /= WORLD
        losses.append(mean.item())
    return losses


def _init(rank, rendezvous):
    # a file rendezvous: no TCP port to pick (and race for) on a shared machine
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=WORLD)


def _worker(rank, rendezvous, out):
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, set_model_state_dict

    _init(rank, rendezvous)
    try:
        model = fg.convert(build(), min_features=0)
        for layer in model:
            if isinstance(layer, nn.Linear):
                fsdp.fully_shard(layer)
        fsdp.fully_shard(model)
        data = batches()
        losses = _train(model, lambda step: model(data[step].chunk(WORLD)[rank]).float().square().mean(), True)
        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        sharded = {k: v.clone() for k, v in model.state_dict().items()}  # DTensors: this rank's shards
        # round trips: the full state dict into a fresh sharded model, and the sharded one back
        fresh = fg.convert(build(), min_features=0)
        for layer in fresh:
            if isinstance(layer, nn.Linear):
                fsdp.fully_shard(layer)
        fsdp.fully_shard(fresh)
        # the full state dict lives on rank 0 only (cpu_offload): rank 0 broadcasts it
        # (it replaces the dict's entries by the shards it loaded: a copy keeps `full` as saved)
        set_model_state_dict(fresh, dict(full), options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
        again = get_model_state_dict(fresh, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        fresh.load_state_dict(sharded)
        sharded_ok = all(torch.equal(fresh.state_dict()[k].to_local(), v.to_local()) for k, v in sharded.items())
        if rank == 0:
            torch.save({"losses": losses, "full": full, "again": again, "sharded_ok": sharded_ok}, out)
    finally:
        dist.destroy_process_group()


def test_fsdp2_trains_like_one_process_and_state_dicts_round_trip(tmp_path):
    got = _spawn(_worker, str(tmp_path / "rank0.pt"))

    model = fg.convert(build(), min_features=0)
    data = batches()
    # the mean over ranks of each rank's mean: the same gradient FSDP2's averaging reduce-scatter gives
    losses = _train(model, lambda step: sum(model(p).float().square().mean() for p in data[step].chunk(WORLD)) / WORLD)
    assert got["losses"] == pytest.approx(losses, rel=1e-5, abs=1e-7)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(got["full"][name], value, rtol=1e-5, atol=1e-6, msg=name)
        assert torch.equal(got["again"][name], got["full"][name]), f"full state dict round trip: {name}"
    assert got["sharded_ok"], "sharded state dict round trip"


def _moe_data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(16, 256, generator=g), torch.randint(0, 4, (16, 2), generator=g), torch.rand(16, 2, generator=g)


def _build_experts():
    from torch_fp8gemm.moe import FP8MoEExperts

    torch.manual_seed(0)
    return FP8MoEExperts(4, 256, 128)


def _moe_worker(rank, rendezvous, out):
    _init(rank, rendezvous)
    try:
        experts = _build_experts()
        fsdp.fully_shard(experts)  # the stacked [E, ...] weights are sharded along the experts
        x, idx, w = (t.chunk(WORLD)[rank] for t in _moe_data())
        losses = _train(experts, lambda step: experts(x, idx, w).square().mean(), True)
        full = {k: v.full_tensor() for k, v in experts.state_dict().items()}
        if rank == 0:
            torch.save({"losses": losses, "full": full}, out)
    finally:
        dist.destroy_process_group()


def _spawn(worker, out):
    ctx = mp.start_processes(worker, args=(out + ".rendezvous", out), nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + 240
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the 2-process FSDP2 run did not finish in 240 s")
    return torch.load(out, weights_only=False)


def test_fsdp2_shards_fp8_moe_experts_and_trains_like_one_process(tmp_path):
    got = _spawn(_moe_worker, str(tmp_path / "rank0.pt"))
    experts = _build_experts()
    parts = list(zip(*(t.chunk(WORLD) for t in _moe_data())))
    losses = _train(experts, lambda step: sum(experts(*part).square().mean() for part in parts) / WORLD)
    assert got["losses"] == pytest.approx(losses, rel=1e-5, abs=1e-7)
    for name, value in experts.state_dict().items():
        torch.testing.assert_close(got["full"][name], value, rtol=1e-5, atol=1e-6, msg=name)
