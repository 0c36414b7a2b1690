"""One DataLoader for a whole run: persistent workers build each step's batch from what a sampler sends."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from medkit.api.batch import Batch, collate
from medkit.engine.plan import StepPlan
from medkit.engine.shm_slots import SharedSlots

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepItem:
    """Everything a worker needs to build the batch of one step (what the sampler sends it).

    Every stage's sources index the run's training datasets (:class:`medkit.api.batch.Source`
    holds a modality and indices into ``ctx.train_sets[modality]``, nothing else: buffers of
    earlier stages or of a ``--from`` run are mapped to those indices by their strategy, and the
    MLM corruption of buffer text happens in the strategy's loss, in the main process), so the
    workers hold only what is fixed for the run and the stage changes travel in these items.
    """

    step: int
    modality: str
    role: str
    indices: tuple[int, ...]
    seeds: tuple[int, ...]


class PlanSampler(torch.utils.data.Sampler):
    """Yields the :class:`StepItem` of every remaining step of the current stage's plan; iterated
    in the main process, so a new stage only needs :meth:`set_plan`, never new workers."""

    def __init__(self) -> None:
        self.plan: StepPlan | None = None
        self.start_step = 0

    def set_plan(self, plan: StepPlan, start_step: int = 0) -> None:
        self.plan, self.start_step = plan, int(start_step)

    def __len__(self) -> int:
        return 0 if self.plan is None else max(0, len(self.plan) - self.start_step)

    def __iter__(self) -> Iterator[StepItem]:
        plan = self.plan
        if plan is None:
            return
        for s in range(self.start_step, len(plan)):
            src, indices, seeds = plan.step(s)
            yield StepItem(step=s, modality=src.modality, role=src.role, indices=tuple(indices),
                           seeds=tuple(seeds))


class StepSamples(torch.utils.data.Dataset):
    """What the workers hold for the whole run: the training datasets and the tokenizers (whose
    ``collate`` only stacks or tokenises; it reads no trained weight). Item ``StepItem`` → the
    step's :class:`Batch`, with the per-sample seeds the plan gave it."""

    def __init__(self, datasets: dict[str, Any], tokenizers: dict[str, Any], slots: SharedSlots | None = None) -> None:
        self.datasets, self.tokenizers = datasets, tokenizers
        self.slots = slots or SharedSlots(0)

    def __len__(self) -> int:  # the sampler decides; a map-style dataset must still answer
        return 0

    def __getitem__(self, item: StepItem) -> tuple[Batch, list[int]]:
        ds = self.datasets[item.modality]
        samples = [ds.load(j, seed=s) for j, s in zip(item.indices, item.seeds)]
        with self.slots.stacking() as taken:  # in a worker: into a reused shared segment
            batch = collate(samples, item.modality, self.tokenizers[item.modality], role=item.role)
        batch.seeds = list(item.seeds)
        return batch, taken


def received(batches: Iterator[tuple[Batch, list[int]]], slots: SharedSlots) -> Iterator[Batch]:
    """The batches of a loader over :class:`StepSamples` or ``ChunkSamples``, telling ``slots``
    which shared segments each one holds (they are reused once nothing refers to them)."""
    for batch, taken in batches:
        slots.received(taken, (batch.inputs, batch.attention_mask, batch.labels))
        yield batch


class RunLoader:
    """The run's one ``DataLoader`` (``batch_size=None``) over :class:`StepSamples`, fed by a
    :class:`PlanSampler`. With ``num_workers > 0`` its workers are persistent: spawned on the first
    stage that trains, reused by every later stage, shut down by :meth:`close`.

    Args:
        datasets: the run's training datasets by modality (``ctx.train_sets``).
        tokenizers: the tokenizer of each modality.
        num_workers: worker processes (``trainer.num_workers``); 0 loads in the main process.
        pin_memory: pin batches in page-locked memory (on CUDA, so ``Batch.to`` copies overlap).
        seed: seeds the loader's own generator: creating its iterator never draws from the global
            RNG, or a resumed run (which creates it mid-stage) would see another random stream.
        worker_init_fn: passed to the ``DataLoader`` (tests record the worker processes with it).
    """

    def __init__(self, datasets: dict[str, Any], tokenizers: dict[str, Any], *, num_workers: int = 0,
                 pin_memory: bool = False, seed: int = 0,
                 worker_init_fn: Callable[[int], None] | None = None) -> None:
        self.sampler = PlanSampler()
        self.num_workers = int(num_workers)
        self.slots = SharedSlots(self.num_workers)
        self.loader = torch.utils.data.DataLoader(
            StepSamples(datasets, tokenizers, self.slots), batch_size=None, sampler=self.sampler,
            num_workers=self.num_workers, persistent_workers=self.num_workers > 0, pin_memory=pin_memory,
            generator=torch.Generator().manual_seed(int(seed)), worker_init_fn=worker_init_fn)

    def stage(self, plan: StepPlan, start_step: int = 0) -> Iterator[Batch]:
        """The batches of ``plan`` from ``start_step`` on, in order."""
        self.sampler.set_plan(plan, start_step)
        if len(self.sampler) == 0:
            return iter(())
        return received(iter(self.loader), self.slots)

    def close(self) -> None:
        """Shut the persistent workers down (idempotent)."""
        shutdown_workers(self.loader)


def shutdown_workers(loader: torch.utils.data.DataLoader) -> None:
    """Stop a DataLoader's persistent workers now (idempotent). torch has no public call for it:
    they otherwise live until the loader is garbage-collected."""
    it = getattr(loader, "_iterator", None)
    if it is not None:
        shutdown = getattr(it, "_shutdown_workers", None)
        if callable(shutdown):
            shutdown()
        loader._iterator = None
