"""trainer.num_workers=auto (what the machine has, and a log line saying so) and the evaluation /
feature-pass batches loaded by worker processes, identical to loading them in the main process."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from medkit.api.errors import ConfigError
from medkit.config.schemas import check_values, defaults
from medkit.engine import workers
from medkit.engine.chunks import ChunkLoader, ChunkSamples
from medkit.engine.workers import resolve_num_workers


@pytest.mark.parametrize(("cpus", "ranks", "expected"), [(2, 1, 1), (12, 1, 8), (64, 1, 8), (1, 1, 0),
                                                         (16, 4, 3), (8, 8, 0), (5, 2, 1)])
def test_auto_is_one_worker_per_spare_core_per_rank_up_to_eight(cpus: int, ranks: int, expected: int,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(workers.ENV, raising=False)
    n, why = resolve_num_workers("auto", cpus=cpus, ranks=ranks)
    assert n == expected
    assert f"{cpus} CPUs" in why and f"{ranks} rank(s)" in why


def test_auto_reads_the_affinity_mask_and_local_world_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(workers.ENV, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(10)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert resolve_num_workers("auto")[0] == 4  # 10 CPUs / 2 ranks - 1
    monkeypatch.setenv(workers.ENV, "3")
    assert resolve_num_workers("auto") == (3, "trainer.num_workers=auto, set by $MEDKIT_NUM_WORKERS")
    assert resolve_num_workers(5)[0] == 5  # a number is taken as it is


def test_the_log_line_states_the_number_and_why(monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv(workers.ENV, raising=False)
    monkeypatch.setattr(workers, "available_cpus", lambda: 6)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    with caplog.at_level(logging.INFO, logger="medkit.engine.workers"):
        assert workers.num_workers("auto") == 5
    assert caplog.messages == ["DataLoader workers per rank: 5 (trainer.num_workers=auto: 6 CPUs available to "
                               "this process, 1 rank(s) on this node, so min(8, 6 - 1) with one core per rank "
                               "left to the training loop)"]


def test_auto_is_the_default_and_other_words_are_refused() -> None:
    assert defaults("trainer")["num_workers"] == "auto"
    check_values({"trainer": {"num_workers": "auto"}})
    with pytest.raises(ConfigError, match="trainer.num_workers=many"):
        check_values({"trainer": {"num_workers": "many"}})
    with pytest.raises(ConfigError, match="expected an integer >= 0 or 'auto'"):
        resolve_num_workers(-1)


class _Table:
    """A dataset whose sample is its index, the process that loaded it, and a seeded draw."""

    ids = [f"s{i}" for i in range(11)]

    def load(self, index: int, seed: int | None = None) -> dict[str, Any]:
        draw = float(torch.rand((), generator=torch.Generator().manual_seed(index)))
        return {"input": torch.tensor([index, draw, seed or 0], dtype=torch.float64), "id": self.ids[index]}


class _Stack:
    def collate(self, samples: Any, modality: str) -> dict[str, torch.Tensor]:
        return {"inputs": torch.stack([s["input"] for s in samples])}


def test_chunks_loaded_by_two_workers_equal_the_main_process_ones(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    where = tmp_path / "pids"
    where.mkdir()
    original = ChunkSamples.__getitem__

    def recording(self: ChunkSamples, item: Any) -> Any:
        (where / str(os.getpid())).touch()
        return original(self, item)

    monkeypatch.setattr(ChunkSamples, "__getitem__", recording)  # before the workers fork
    sets = {"m": _Table()}
    main = ChunkSamples(sets, {"m": _Table()}, {"m": _Stack()})
    chunks = [[0, 3, 5], [7], [], [10, 2, 1, 4]]
    expected = [original(main, item)[0] for item in _items(chunks)]
    loader = ChunkLoader(sets, {"m": _Table()}, {"m": _Stack()}, num_workers=2)
    try:
        for _ in range(2):  # the persistent workers serve a second call
            got = list(loader("m", chunks))
            assert len(got) == 3
            assert all(torch.equal(a.inputs, b.inputs) and a.ids == b.ids for a, b in zip(got, expected))
    finally:
        loader.close()
    pids = {int(p.name) for p in where.iterdir()} - {os.getpid()}
    assert 1 <= len(pids) <= 2, "the batches were not built by worker processes"


def _items(chunks: list[list[int]]) -> list[Any]:
    from medkit.engine.chunks import ChunkItem

    return [ChunkItem("m", False, "current", tuple(c)) for c in chunks if c]
