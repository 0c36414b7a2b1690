"""Samples, batches, held-out splits and the deterministic per-step batch plan of a stage."""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import torch

from medkit.api.errors import DataError

#: One sample as a modality's dataset returns it: ``{"input": tensor or str, "id": str,
#: "label": int (optional)}``. Images are ``[C, H, W]`` or ``[C, D, H, W]``; text is a ``str``.
Sample = dict[str, Any]


class TrainViewMixin:
    """Gives a dataset ``view(train)``: the same index with augmentation on or off, without reading
    the folder again (the engine needs both views of every modality)."""

    train: bool

    def view(self, train: bool) -> Any:
        other = copy.copy(self)
        other.train = bool(train)
        return other


@dataclass
class Batch:
    """One homogeneous batch: every sample is of the same modality.

    Attributes:
        modality: modality name.
        inputs: ``[B, C, H, W]``, ``[B, C, D, H, W]`` or token ids ``[B, L]``.
        attention_mask: ``[B, L]`` with 1 for real tokens (text only).
        labels: ``[B]`` class labels where the data carry them (``-1`` = none).
        ids: the sample ids.
        role: ``"current"`` (this stage's data) or ``"buffer"`` (rehearsed earlier data).
    """

    modality: str
    inputs: torch.Tensor
    attention_mask: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    ids: list[str] = field(default_factory=list)
    role: str = "current"

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def to(self, device: torch.device | str) -> Batch:
        move = (lambda t: None if t is None else t.to(device, non_blocking=True))
        return replace(self, inputs=move(self.inputs), attention_mask=move(self.attention_mask),
                       labels=move(self.labels))


def collate(samples: Sequence[Sample], modality: str, tokenizer: Any, role: str = "current") -> Batch:
    """Build a :class:`Batch` through the tokenizer's ``collate`` (which checks shapes)."""
    if not samples:
        raise DataError(f"cannot build an empty batch for modality {modality!r}")
    parts = tokenizer.collate(samples, modality)
    labels = None
    if any("label" in s for s in samples):
        labels = torch.tensor([int(s.get("label", -1)) for s in samples], dtype=torch.long)
    return Batch(modality=modality, inputs=parts["inputs"], attention_mask=parts.get("attention_mask"),
                 labels=labels, ids=[str(s["id"]) for s in samples], role=role)


def split_indices(ids: Sequence[str], val_fraction: float = 0.1, *, min_val: int = 1) -> tuple[list[int], list[int]]:
    """Deterministic train/held-out split by a hash of each sample id.

    The same id always lands in the same split, whatever the order or the other files; at least
    ``min_val`` samples (and at least one training sample) are held out when there are two or more.
    """
    if len(ids) == 0:
        return [], []
    score = [int(hashlib.sha1(str(i).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF for i in ids]
    val = [i for i, s in enumerate(score) if s < val_fraction]
    if len(ids) >= 2 and len(val) < min_val:
        order = sorted(range(len(ids)), key=lambda i: score[i])
        val = sorted(order[:min(min_val, len(ids) - 1)])
    if len(val) == len(ids):
        val = val[:-1]
    val_set = set(val)
    return [i for i in range(len(ids)) if i not in val_set], sorted(val_set)


@dataclass
class Source:
    """One data stream of a stage.

    Attributes:
        modality: modality name.
        indices: indices into the modality's training dataset that this stream draws from.
        weight: relative share of steps (the engine uses ``len(indices)`` when ``None``).
        role: ``"current"`` or ``"buffer"``.
    """

    modality: str
    indices: list[int]
    weight: float | None = None
    role: str = "current"

    @property
    def share(self) -> float:
        return float(len(self.indices) if self.weight is None else self.weight)


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
