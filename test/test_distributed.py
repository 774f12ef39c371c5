"""torch.distributed on CPU (gloo, 2 processes spawned by the test): a model converted with fg.convert
(training mode) and wrapped with FSDP2's fully_shard trains exactly like the same model on one process,
and its sharded and full state dicts round-trip; the same with the weights all-gathered as FP8
(bit for bit the unsharded FP8 layers, and the bf16 fallback for shards off 128-row boundaries);
FP8MoEExperts sharded along its experts too."""
import os
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
    """Joins the gloo group and returns a CPU mesh of the ranks. Every fully_shard takes that mesh:
    its default mesh is the accelerator's where one exists, and gloo cannot serve CUDA tensors."""
    from torch.distributed.device_mesh import init_device_mesh

    # a file rendezvous: no TCP port to pick (and race for) on a shared machine
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=WORLD)
    return init_device_mesh("cpu", (WORLD,))


def _weight_kinds(model):
    """Forward hooks recording the type of each FP8Linear's weight as its forward sees it."""
    kinds = []
    for layer in model.modules():
        if isinstance(layer, fg.FP8Linear):
            layer.register_forward_pre_hook(lambda module, args: kinds.append(type(module.weight).__name__))
    return kinds


def _worker(rank, rendezvous, out, fp8_all_gather=False):
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, set_model_state_dict

    mesh = _init(rank, rendezvous)
    try:
        model = fg.convert(build(), min_features=0, fp8_all_gather=fp8_all_gather)
        kinds = _weight_kinds(model)
        for layer in model:
            if isinstance(layer, nn.Linear):
                fsdp.fully_shard(layer, mesh=mesh)
        fsdp.fully_shard(model, mesh=mesh)
        data = batches()
        losses = _train(model, lambda step: model(data[step].chunk(WORLD)[rank]).float().square().mean(), True)
        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        sharded = {k: v.clone() for k, v in model.state_dict().items()}  # DTensors: this rank's shards
        # round trips: the full state dict into a fresh sharded model, and the sharded one back
        fresh = fg.convert(build(), min_features=0, fp8_all_gather=fp8_all_gather)
        for layer in fresh:
            if isinstance(layer, nn.Linear):
                fsdp.fully_shard(layer, mesh=mesh)
        fsdp.fully_shard(fresh, mesh=mesh)
        # the full state dict lives on rank 0 only (cpu_offload): rank 0 broadcasts it
        # (it replaces the dict's entries by the shards it loaded: a copy keeps `full` as saved)
        set_model_state_dict(fresh, dict(full), options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
        again = get_model_state_dict(fresh, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        fresh.load_state_dict(sharded)
        sharded_ok = all(torch.equal(fresh.state_dict()[k].to_local(), v.to_local()) for k, v in sharded.items())
        dist.barrier()  # both ranks are through every collective: what rank 0 saves is final
        if rank == 0:
            torch.save({"losses": losses, "full": full, "again": again, "sharded_ok": sharded_ok, "kinds": kinds}, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("fp8_all_gather", [False, True])
def test_fsdp2_trains_like_one_process_and_state_dicts_round_trip(tmp_path, fp8_all_gather):
    got = _spawn(_worker, str(tmp_path / "rank0.pt"), fp8_all_gather)
    # 512 and 256 output rows over 2 shards: whole 128-row blocks per rank, gathered as FP8
    assert set(got["kinds"]) == {"GatheredFP8Weight" if fp8_all_gather else "Parameter"}, got["kinds"]

    model = fg.convert(build(), min_features=0)
    data = batches()
    # the mean over ranks of each rank's mean: the same gradient FSDP2's averaging reduce-scatter gives
    losses = _train(model, lambda step: sum(model(p).float().square().mean() for p in data[step].chunk(WORLD)) / WORLD)
    assert got["losses"] == pytest.approx(losses, rel=1e-5, abs=1e-7)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(got["full"][name], value, rtol=1e-5, atol=1e-6, msg=name)
        assert torch.equal(got["again"][name], got["full"][name]), f"full state dict round trip: {name}"
    assert got["sharded_ok"], "sharded state dict round trip"


def _gather_worker(rank, rendezvous, out, out_features):
    mesh = _init(rank, rendezvous)
    try:
        torch.manual_seed(0)
        layer = fg.convert(nn.Linear(256, out_features), min_features=0, fp8_all_gather=True)
        kinds = _weight_kinds(layer)
        fsdp.fully_shard(layer, mesh=mesh)
        x = torch.randn(8 * WORLD, 256, generator=torch.Generator().manual_seed(1)).chunk(WORLD)[rank]
        with pytest.warns(UserWarning, match="does not split into 128-row blocks") if out_features % 256 else _no_warning():
            y = layer(x)
        y.float().square().mean().backward()
        grads = {name: p.grad.full_tensor() for name, p in layer.named_parameters()}
        outs = [torch.empty_like(y) for _ in range(WORLD)]
        dist.all_gather(outs, y.detach())
        dist.barrier()  # both ranks are through every collective: what rank 0 saves is final
        if rank == 0:
            torch.save({"y": torch.cat(outs), "grads": grads, "kinds": kinds}, out)
    finally:
        dist.destroy_process_group()


class _no_warning:
    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        self._catch.__exit__(*exc)


@pytest.mark.parametrize("out_features", [512, 384])
def test_fp8_all_gather_is_the_unsharded_fp8_layer_bit_for_bit(tmp_path, out_features):
    # 512 rows: 2 blocks per rank, gathered as fp8 + scales; 384: 192 rows per rank, off the block
    # grid, so gathered in the weight's dtype after a warning. Either way the unsharded layer's bits.
    got = _spawn(_gather_worker, str(tmp_path / "rank0.pt"), out_features)
    assert set(got["kinds"]) == {"GatheredFP8Weight" if out_features % 256 == 0 else "Parameter"}
    torch.manual_seed(0)
    layer = fg.convert(nn.Linear(256, out_features), min_features=0)
    x = torch.randn(8 * WORLD, 256, generator=torch.Generator().manual_seed(1))
    y = torch.cat([layer(part) for part in x.chunk(WORLD)])
    assert torch.equal(got["y"], y.detach())
    (sum(part.float().square().mean() for part in y.chunk(WORLD)) / WORLD).backward()
    for name, p in layer.named_parameters():
        torch.testing.assert_close(got["grads"][name], p.grad, rtol=1e-6, atol=0, msg=name)


def test_fp8_all_gather_is_for_training_layers():
    with pytest.raises(ValueError, match=r"^FP8Linear: `fp8_all_gather=True` needs `inference=False`"):
        fg.FP8Linear(256, 256, inference=True, fp8_all_gather=True)
    with pytest.raises(ValueError, match=r"^convert: `fp8_all_gather=True` needs `inference=False`"):
        fg.convert(nn.Linear(512, 512), inference=True, fp8_all_gather=True)
    layer = fg.FP8Linear(256, 256, fp8_all_gather=True)  # outside FSDP2: the plain training layer
    plain = fg.FP8Linear(256, 256)
    plain.load_state_dict(layer.state_dict())
    x = torch.randn(4, 256)
    assert torch.equal(layer(x), plain(x)) and "fp8_all_gather=True" in repr(layer)


def _moe_data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(16, 256, generator=g), torch.randint(0, 4, (16, 2), generator=g), torch.rand(16, 2, generator=g)


def _build_experts():
    from torch_fp8gemm.moe import FP8MoEExperts

    torch.manual_seed(0)
    return FP8MoEExperts(4, 256, 128)


def _moe_worker(rank, rendezvous, out):
    mesh = _init(rank, rendezvous)
    try:
        experts = _build_experts()
        fsdp.fully_shard(experts, mesh=mesh)  # the stacked [E, ...] weights are sharded along the experts
        x, idx, w = (t.chunk(WORLD)[rank] for t in _moe_data())
        losses = _train(experts, lambda step: experts(x, idx, w).square().mean(), True)
        full = {k: v.full_tensor() for k, v in experts.state_dict().items()}
        dist.barrier()  # both ranks are through every collective: what rank 0 saves is final
        if rank == 0:
            torch.save({"losses": losses, "full": full}, out)
    finally:
        dist.destroy_process_group()


def _spawn(worker, out, *args):
    ctx = mp.start_processes(worker, args=(out + ".rendezvous", out, *args), nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + 240
    try:
        while not ctx.join(timeout=5):
            if time.monotonic() > deadline:
                for p in ctx.processes:
                    p.kill()
                pytest.fail("the 2-process run did not finish in 240 s")
    except mp.ProcessExitedException:
        # rank 0 saves only after a barrier that both ranks passed: a signal after that comes from
        # tearing the gloo connections down, not from the work under test
        if not os.path.exists(out):
            raise
    return torch.load(out, weights_only=False)


def test_fsdp2_shards_fp8_moe_experts_and_trains_like_one_process(tmp_path):
    got = _spawn(_moe_worker, str(tmp_path / "rank0.pt"))
    experts = _build_experts()
    parts = list(zip(*(t.chunk(WORLD) for t in _moe_data())))
    losses = _train(experts, lambda step: sum(experts(*part).square().mean() for part in parts) / WORLD)
    assert got["losses"] == pytest.approx(losses, rel=1e-5, abs=1e-7)
    for name, value in experts.state_dict().items():
        torch.testing.assert_close(got["full"][name], value, rtol=1e-5, atol=1e-6, msg=name)


def _tp_worker(rank, rendezvous, out, in_features, out_features):
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    mesh = _init(rank, rendezvous)
    try:
        model = fg.convert(build_tp(in_features, out_features), min_features=0)
        parallelize_module(model, mesh, {"0": ColwiseParallel(), "2": RowwiseParallel()})
        x = _tp_input(in_features)  # the same full input on every rank (ColwiseParallel replicates it)
        result = {}
        try:
            y = model(x)
            y.float().square().mean().backward()
            result = {"y": y.detach(), "grads": {n: p.grad.full_tensor() for n, p in model.named_parameters()}}
        except ValueError as exc:
            result = {"error": str(exc)}
        dist.barrier()  # both ranks are through every collective: what rank 0 saves is final
        if rank == 0:
            torch.save(result, out)
    finally:
        dist.destroy_process_group()


def build_tp(in_features, hidden):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(in_features, hidden), nn.GELU(), nn.Linear(hidden, in_features))


def _tp_input(in_features):
    return torch.randn(8, in_features, generator=torch.Generator().manual_seed(1))


def test_tensor_parallel_colwise_then_rowwise_is_the_unsharded_model(tmp_path):
    # hidden 512 over 2 ranks: 256 output columns of the first layer and 256 input columns of the
    # second per rank, whole 128x128 blocks: the same blocks, the same bits as one process, except
    # the row-parallel partial sums, added in another order (float rounding).
    got = _spawn(_tp_worker, str(tmp_path / "rank0.pt"), 256, 512)
    model = fg.convert(build_tp(256, 512), min_features=0)
    y = model(_tp_input(256))
    torch.testing.assert_close(got["y"], y.detach(), rtol=2e-2, atol=1e-5)
    y.float().square().mean().backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(got["grads"][name], p.grad, rtol=2e-2, atol=1e-6, msg=name)


def test_tensor_parallel_split_off_the_block_grid_names_the_layer(tmp_path):
    got = _spawn(_tp_worker, str(tmp_path / "rank0.pt"), 256, 384)  # 192 hidden columns per rank
    assert got["error"].startswith("FP8Linear(in_features=256, out_features=384): ColwiseParallel over 2 ranks "
                                   "splits out_features=384 into 192 per rank"), got
