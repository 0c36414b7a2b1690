"""Un-augmented batches of chosen samples (evaluation, feature passes) loaded by DataLoader workers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch

from medkit.api.batch import Batch, collate
from medkit.engine.loader import received, shutdown_workers
from medkit.engine.shm_slots import SharedSlots


@dataclass(frozen=True)
class ChunkItem:
    """One batch to load: samples ``indices`` of ``modality`` from its training or evaluation set."""

    modality: str
    train: bool
    role: str
    indices: tuple[int, ...]


class ItemSampler(torch.utils.data.Sampler):
    """Yields the :class:`ChunkItem` list it is given, in order (iterated in the main process)."""

    def __init__(self) -> None:
        self.items: list[ChunkItem] = []

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[ChunkItem]:
        return iter(list(self.items))


class ChunkSamples(torch.utils.data.Dataset):
    """What the workers hold: the run's training and evaluation datasets and the tokenizers (whose
    ``collate`` only stacks or tokenises). Item :class:`ChunkItem` → its un-augmented :class:`Batch`,
    exactly what :meth:`medkit.api.context.RunContext.load_batch` builds in the main process."""

    def __init__(self, train_sets: dict[str, Any], eval_sets: dict[str, Any], tokenizers: dict[str, Any],
                 slots: SharedSlots | None = None) -> None:
        self.train_sets, self.eval_sets, self.tokenizers = train_sets, eval_sets, tokenizers
        self.slots = slots or SharedSlots(0)

    def __len__(self) -> int:  # the sampler decides; a map-style dataset must still answer
        return 0

    def __getitem__(self, item: ChunkItem) -> tuple[Batch, list[int]]:
        ds = (self.train_sets if item.train else self.eval_sets)[item.modality]
        samples = [ds.load(i, seed=None) for i in item.indices]
        with self.slots.stacking() as taken:  # in a worker: into a reused shared segment
            batch = collate(samples, item.modality, self.tokenizers[item.modality], role=item.role)
        return batch, taken


class ChunkLoader:
    """Loads lists of sample indices as batches, in order, with ``num_workers`` persistent worker
    processes (spawned on the first call, reused by every later one, shut down by :meth:`close`).

    The engine gives one to the run context (``RunContext.batch_loader``) when
    ``trainer.num_workers > 0``, so the held-out evaluation and the strategies' feature passes
    (the rehearsal buffer's) decode in the same number of workers as training. Samples are loaded
    without augmentation, so a batch does not depend on which process loaded it.

    Args:
        train_sets / eval_sets: the run's datasets by modality.
        tokenizers: the tokenizer of each modality.
        num_workers: worker processes (at least 1; with 0 the context loads in the main process).
        pin_memory: pin batches in page-locked memory (on CUDA).
        seed: seeds the loader's own generator (creating an iterator never draws from the global RNG).
    """

    def __init__(self, train_sets: dict[str, Any], eval_sets: dict[str, Any], tokenizers: dict[str, Any], *,
                 num_workers: int, pin_memory: bool = False, seed: int = 0) -> None:
        if int(num_workers) < 1:
            raise ValueError(f"ChunkLoader needs num_workers >= 1, got {num_workers}")
        self.num_workers = int(num_workers)
        self.sampler = ItemSampler()
        self.slots = SharedSlots(self.num_workers)
        self.loader = torch.utils.data.DataLoader(
            ChunkSamples(train_sets, eval_sets, tokenizers, self.slots), batch_size=None, sampler=self.sampler,
            num_workers=self.num_workers, persistent_workers=True, pin_memory=pin_memory,
            generator=torch.Generator().manual_seed(int(seed)))

    def __call__(self, modality: str, chunks: Sequence[Sequence[int]], *, train: bool = False,
                 role: str = "current") -> Iterator[Batch]:
        """The batches of ``chunks`` (lists of indices) of ``modality``, in order (empty ones skipped)."""
        items = [ChunkItem(modality, bool(train), role, tuple(int(i) for i in c)) for c in chunks if len(c)]
        if not items:
            return iter(())
        self.sampler.items = items
        return received(iter(self.loader), self.slots)

    def close(self) -> None:
        """Shut the persistent workers down (idempotent)."""
        shutdown_workers(self.loader)
