"""The fixed-order reduction: one tree over the global groups, whatever the ranks hold of it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from medkit.api.batch import Batch
from medkit.api.context import LossOutput
from medkit.api.errors import ConfigError
from medkit.engine.ordered import OrderedReduce, check_layout, group_size, node_cover, tree_sum


def _leaves(n: int, width: int = 257) -> list[torch.Tensor]:
    """Values over many magnitudes, so that another summation order rounds differently."""
    g = torch.Generator().manual_seed(n)
    return [torch.randn(width, generator=g) * torch.logspace(-6, 6, width) for _ in range(n)]


def _partitioned(leaves: list[torch.Tensor], world: int) -> torch.Tensor:
    """What every rank ends with when ``world`` ranks hold equal contiguous blocks of ``leaves``:
    each sums the tree nodes of its block, then all finish the tree from the exchanged nodes."""
    n = len(leaves)
    per = n // world
    known: dict[tuple[int, int], torch.Tensor] = {}
    for r in range(world):
        for lo, hi in node_cover(0, n, r * per, (r + 1) * per):
            known[(lo, hi)] = tree_sum(lo, hi, lambda a, b: leaves[a] if b - a == 1 else None, torch.add)
    return tree_sum(0, n, lambda a, b: known.get((a, b)) if (a, b) in known else
                    (leaves[a] if b - a == 1 else None), torch.add)


@pytest.mark.parametrize("n,worlds", [(8, (1, 2, 4, 8)), (4, (1, 2, 4)), (6, (1, 2, 3, 6)), (12, (1, 2, 3, 4, 6))])
def test_any_partition_of_the_groups_gives_the_same_bits(n, worlds):
    leaves = _leaves(n)
    sums = [_partitioned(leaves, w) for w in worlds]
    assert all(torch.equal(s, sums[0]) for s in sums[1:])
    left_fold = leaves[0]
    for x in leaves[1:]:
        left_fold = left_fold + x
    # the test could fail: the same numbers summed in another order give other bits
    assert not torch.equal(left_fold, sums[0])


def test_node_cover_is_one_node_for_power_of_two_layouts():
    for world in (1, 2, 4, 8):
        per = 8 // world
        assert [node_cover(0, 8, r * per, (r + 1) * per) for r in range(world)] == \
            [[(r * per, (r + 1) * per)] for r in range(world)]
    assert node_cover(0, 6, 0, 2) == [(0, 1), (1, 2)]  # 6 groups over 3 ranks: two nodes for rank 0


def test_group_size_depends_on_the_global_batch_only():
    assert group_size(64) == 8 and group_size(8) == 1 and group_size(12) == 3 and group_size(7) == 7
    assert group_size(64, 16) == 16
    with pytest.raises(ConfigError, match="does not divide the global batch of 64"):
        group_size(64, 24)
    assert check_layout(64, 8, 2) == 4
    with pytest.raises(ConfigError, match="reduce_group"):
        check_layout(12, 3, 3)


class _Step:
    """What :meth:`OrderedReduce.backward` reads of a :class:`medkit.engine.step.TrainStep`."""

    device = torch.device("cpu")
    amp_dtype = None

    @staticmethod
    def forward(fn: Any, batch: Batch) -> LossOutput:
        return fn(batch)

    @staticmethod
    def describe(batch: Batch) -> str:
        return ",".join(batch.ids)


def _model_and_batch() -> tuple[torch.nn.Module, Batch]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 4))
    # a channels-last table, like the tokenizers' position tables: its gradient keeps that layout
    model.table = torch.nn.Parameter(torch.randn(1, 4, 2, 2).to(memory_format=torch.channels_last))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 16, generator=g) * torch.logspace(-3, 3, 16)
    batch = Batch(modality="m", inputs=x, ids=[str(i) for i in range(16)], seeds=list(range(100, 116)))
    return model, batch


def _loss(model: torch.nn.Module) -> Any:
    def fn(b: Batch) -> LossOutput:
        noise = torch.rand(len(b))  # a batch-level draw from the global RNG: seeded per group
        out = model(b.inputs) + model.table.reshape(1, 4, 4).mean(-1)
        value = (out.pow(2).mean(dim=1) * (1 + noise)).mean()
        return LossOutput(value, {"noise": noise.mean()})
    return fn


def _reduce(rank: int, world: int) -> dict[str, Any]:
    model, batch = _model_and_batch()
    params = list(model.parameters())
    per = 8 // world  # 8 groups of 2 samples
    mine = batch.split(8)[rank * per:(rank + 1) * per]
    out = OrderedReduce(params, rank=rank, world_size=world, groups_per_rank=per).backward(_Step(), _loss(model), mine)
    assert all(p.grad.stride() == p.stride() for p in params)  # each gradient in its parameter's layout
    return {"grads": [p.grad.clone() for p in params], "loss": out.loss, "losses": out.losses,
            "noise": [float(p["noise"]) for p in out.parts]}


def _worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from medkit.storage.files import save_tensors

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        got = _reduce(rank, world)
        tensors = {f"grad{i}": g for i, g in enumerate(got["grads"])}
        tensors.update(loss=got["loss"].reshape(1), losses=got["losses"], noise=torch.tensor(got["noise"]))
        save_tensors(Path(out) / f"rank{rank}.safetensors", tensors)
    finally:
        dist.destroy_process_group()


def test_two_and_four_ranks_leave_the_one_process_gradient_bit_for_bit(tmp_path):
    """Real gloo process groups: every rank of 2 and of 4 ends with the one-process gradient, loss
    and per-group metrics, to the bit."""
    import socket

    import torch.multiprocessing as mp

    from medkit.storage.files import load_tensors

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = _reduce(0, 1)
    finally:
        torch.set_num_threads(threads)
    for world in (2, 4):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        out = tmp_path / str(world)
        out.mkdir()
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        mp.start_processes(_worker, args=(world, port, str(out)), nprocs=world, start_method="fork")
        for rank in range(world):
            got = load_tensors(out / f"rank{rank}.safetensors")
            assert all(torch.equal(got[f"grad{i}"], g) for i, g in enumerate(one["grads"])), (world, rank)
            assert torch.equal(got["loss"], one["loss"].reshape(1)) and torch.equal(got["losses"], one["losses"])
            assert got["noise"].tolist() == one["noise"]
