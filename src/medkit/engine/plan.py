"""The deterministic per-step batch plan of a stage, and the dataset that serves it to a DataLoader."""

from __future__ import annotations

import hashlib
from typing import Any, Sequence

import torch

from medkit.api.batch import Batch, Source, collate
from medkit.api.errors import DataError


def _generator(*keys: int) -> torch.Generator:
    seed = int(hashlib.sha1(":".join(map(str, keys)).encode()).hexdigest()[:15], 16)
    return torch.Generator().manual_seed(seed)


class StepPlan:
    """Which samples every optimizer step of a stage uses — a pure function of the seed and step.

    Steps pick a source with probability proportional to its share (a fixed, seeded sequence);
    within a source, samples are drawn without replacement from per-epoch seeded permutations.
    Because nothing depends on history, a resumed run sees exactly the batches it would have seen.
    """

    def __init__(self, sources: Sequence[Source], *, batch_size: int, max_steps: int, seed: int,
                 stage: int, rank: int = 0, world_size: int = 1) -> None:
        sources = [s for s in sources if s.indices]
        if not sources:
            raise DataError("this stage has no training samples; check --data")
        self.sources = list(sources)
        self.batch_size = batch_size
        self.seed, self.stage, self.rank, self.world = seed, stage, rank, world_size
        shares = torch.tensor([s.share for s in self.sources], dtype=torch.float64)
        if len(self.sources) == 1:
            choice = torch.zeros(max_steps, dtype=torch.long)
        else:
            choice = torch.multinomial(shares / shares.sum(), max_steps, replacement=True,
                                       generator=_generator(seed, stage, 7))
        self.choice = choice.tolist()
        # position k of step s within its source = number of earlier steps choosing that source
        counts: dict[int, int] = {}
        self.position: list[int] = []
        for c in self.choice:
            self.position.append(counts.get(c, 0))
            counts[c] = counts.get(c, 0) + 1

    def __len__(self) -> int:
        return len(self.choice)

    def step(self, step: int) -> tuple[Source, list[int], int]:
        """(source, dataset indices for this rank, augmentation seed base) of 0-based ``step``."""
        src = self.sources[self.choice[step]]
        global_bs = self.batch_size * self.world
        n = len(src.indices)
        start = self.position[step] * global_bs
        picked: list[int] = []
        while len(picked) < global_bs:
            epoch, offset = divmod(start + len(picked), n)
            perm = torch.randperm(n, generator=_generator(self.seed, self.stage, self.choice[step], epoch))
            take = min(global_bs - len(picked), n - offset)
            picked += [src.indices[int(j)] for j in perm[offset:offset + take]]
        mine = picked[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
        aug_seed = int(_generator(self.seed, self.stage, step, self.rank).initial_seed() % (2**31))
        return src, mine, aug_seed


class StepBatches(torch.utils.data.Dataset):
    """Map-style dataset whose item ``s`` is the whole batch of step ``s`` (for a DataLoader with
    ``batch_size=None``), so worker processes cannot change what a step sees."""

    def __init__(self, plan: StepPlan, datasets: dict[str, Any], tokenizers: dict[str, Any],
                 start_step: int = 0) -> None:
        self.plan, self.datasets, self.tokenizers = plan, datasets, tokenizers
        self.start_step = start_step

    def __len__(self) -> int:
        return len(self.plan) - self.start_step

    def __getitem__(self, i: int) -> Batch:
        src, indices, aug_seed = self.plan.step(self.start_step + i)
        ds = self.datasets[src.modality]
        samples = [ds.load(j, seed=aug_seed + k) for k, j in enumerate(indices)]
        return collate(samples, src.modality, self.tokenizers[src.modality], role=src.role)
