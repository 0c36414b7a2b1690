"""The deterministic per-step batch plan of a stage (:mod:`medkit.engine.loader` serves it to a DataLoader)."""

from __future__ import annotations

import hashlib
import logging
import math
from typing import Mapping, Sequence

import torch

from medkit.api.batch import Source
from medkit.api.errors import DataError
from medkit.api.randomness import sample_key
from medkit.engine.chunk_plan import CHUNK_WINDOW, chunk_of, chunk_permutation

log = logging.getLogger(__name__)


def _generator(*keys: int) -> torch.Generator:
    seed = int(hashlib.sha1(":".join(map(str, keys)).encode()).hexdigest()[:15], 16)
    return torch.Generator().manual_seed(seed)


def allocate_steps(shares: Sequence[float], current: Sequence[bool], max_steps: int,
                   min_current_fraction: float) -> list[int]:
    """Steps per source: proportional to ``shares`` (largest remainder, so the counts are exact),
    with at least ``ceil(min_current_fraction · max_steps)`` steps on the current stage's own data
    when buffers would otherwise take more."""
    total = float(sum(shares))
    probs = [s / total for s in shares] if total > 0 else [1.0 / len(shares)] * len(shares)
    cur = sum(p for p, c in zip(probs, current) if c)
    floor = min(max(float(min_current_fraction), 0.0), 1.0)
    if any(current) and not all(current) and 0 < cur < floor:
        probs = [p * (floor / cur if c else (1 - floor) / (1 - cur)) for p, c in zip(probs, current)]
    raw = [p * max_steps for p in probs]
    counts = [int(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - counts[i]), i))
    for i in order[: max_steps - sum(counts)]:
        counts[i] += 1
    need = math.ceil(floor * max_steps - 1e-9) if any(current) else 0
    while sum(c for c, is_cur in zip(counts, current) if is_cur) < need:
        donor = max((i for i, c in enumerate(current) if not c and counts[i] > 0), key=lambda i: counts[i])
        taker = max((i for i, c in enumerate(current) if c), key=lambda i: probs[i])
        counts[donor] -= 1
        counts[taker] += 1
    _rehearse_every_buffer(counts, probs, current, need)
    return counts


def _rehearse_every_buffer(counts: list[int], probs: Sequence[float], current: Sequence[bool], need: int) -> None:
    """Give every non-empty buffer that the proportional rule left at 0 steps one step, taken from
    the source with the most steps that can spare one (a buffer keeps >= 1, the current data keeps
    its floor ``need``). The proportional rule alone turns a short stage into a sequential one without
    a word; what still gets nothing (more buffers than spare steps) is reported by :class:`StepPlan`."""
    for i in sorted((i for i, c in enumerate(current) if not c and probs[i] > 0 and counts[i] == 0),
                    key=lambda i: (-probs[i], i)):
        cur_total = sum(c for c, is_cur in zip(counts, current) if is_cur)
        donors = [j for j, c in enumerate(counts)
                  if (c > 1 if not current[j] else (c > 1 and cur_total - 1 >= need))]
        if not donors:
            return
        donor = max(donors, key=lambda j: (counts[j], -j))
        counts[donor] -= 1
        counts[i] += 1


class StepPlan:
    """Which samples every optimizer step of a stage uses — a pure function of the seed and step.

    Each source gets an exact number of steps (:func:`allocate_steps`: proportional to its share,
    with a floor for the current stage's own data), in a seeded random order; within a source,
    samples are drawn without replacement from per-epoch seeded permutations. Because nothing
    depends on history, a resumed run sees exactly the batches it would have seen.

    A modality in ``chunk_sizes`` (its training dataset is stored in chunks of these many
    consecutive samples, e.g. prepared data) gets chunk-aware permutations instead
    (:func:`~medkit.engine.chunk_plan.chunk_permutation`: chunks shuffled, samples shuffled within
    windows of ``chunk_window`` chunks), equally a pure function of seed, stage, source and epoch.
    """

    def __init__(self, sources: Sequence[Source], *, batch_size: int, max_steps: int, seed: int,
                 stage: int, rank: int = 0, world_size: int = 1, min_current_fraction: float = 0.0,
                 chunk_sizes: Mapping[str, Sequence[int]] | None = None,
                 chunk_window: int = CHUNK_WINDOW) -> None:
        sources = [s for s in sources if s.indices]
        if not sources:
            raise DataError("this stage has no training samples; check --data")
        self.sources = list(sources)
        self.batch_size = batch_size
        self.seed, self.stage, self.rank, self.world = seed, stage, rank, world_size
        counts = allocate_steps([s.share for s in self.sources], [s.role == "current" for s in self.sources],
                                max_steps, min_current_fraction)
        self.counts = counts
        starved = [s for s, n in zip(self.sources, counts) if n == 0 and s.role != "current"]
        if starved and rank == 0:
            log.warning("stage %d: %s %s no step of %d (the current data keeps at least %.0f%%, "
                        "strategy.min_current_fraction=%g): raise trainer.max_steps or lower "
                        "strategy.min_current_fraction, or the stage trains as sequential for them",
                        stage + 1, ", ".join(f"the {s.modality} buffer ({len(s.indices)} samples)" for s in starved),
                        "gets" if len(starved) == 1 else "get",
                        max_steps, 100 * min_current_fraction, min_current_fraction)
        order = [i for i, n in enumerate(counts) for _ in range(n)]
        perm = torch.randperm(len(order), generator=_generator(seed, stage, 7)).tolist() if len(self.sources) > 1 \
            else list(range(len(order)))
        self.choice = [order[j] for j in perm]
        self._perms: dict[int, tuple[int, torch.Tensor]] = {}
        self.chunk_sizes = {m: list(v) for m, v in (chunk_sizes or {}).items() if v}
        self.chunk_window = int(chunk_window)
        self._chunks: dict[int, list[int]] = {}
        # position k of step s within its source = number of earlier steps choosing that source
        seen: dict[int, int] = {}
        self.position: list[int] = []
        for c in self.choice:
            self.position.append(seen.get(c, 0))
            seen[c] = seen.get(c, 0) + 1

    def _permutation(self, source: int, n: int, epoch: int) -> torch.Tensor:
        # consecutive steps of a source share an epoch's permutation: keep the last one per source
        # (the sampler computes steps in the main process, so a large source is not shuffled per step)
        kept = self._perms.get(source)
        if kept is None or kept[0] != epoch:
            kept = (epoch, self._epoch_permutation(source, n, _generator(self.seed, self.stage, source, epoch)))
            self._perms[source] = kept
        return kept[1]

    def _epoch_permutation(self, source: int, n: int, generator: torch.Generator) -> torch.Tensor:
        """A source's epoch permutation: chunk-aware where its modality declares chunks."""
        sizes = self.chunk_sizes.get(self.sources[source].modality)
        if not sizes:
            return torch.randperm(n, generator=generator)
        chunks = self._chunks.get(source)
        if chunks is None:
            chunks = self._chunks[source] = chunk_of(self.sources[source].indices, sizes)
        return chunk_permutation(chunks, generator, self.chunk_window)

    def mix(self) -> dict[str, int]:
        """Steps per ``modality/role`` source: the realised mix of the stage."""
        out: dict[str, int] = {}
        for c in self.choice:
            key = f"{self.sources[c].modality}/{self.sources[c].role}"
            out[key] = out.get(key, 0) + 1
        return out

    def __len__(self) -> int:
        return len(self.choice)

    def step(self, step: int) -> tuple[Source, list[int], list[int]]:
        """(source, dataset indices for this rank, their seeds) of 0-based ``step``. A sample's
        seed is keyed by its place in the global batch, not by the rank that loads it, so
        augmentation and every per-sample draw are the same whatever the number of processes."""
        src = self.sources[self.choice[step]]
        global_bs = self.batch_size * self.world
        n = len(src.indices)
        start = self.position[step] * global_bs
        picked: list[int] = []
        while len(picked) < global_bs:
            epoch, offset = divmod(start + len(picked), n)
            perm = self._permutation(self.choice[step], n, epoch)
            take = min(global_bs - len(picked), n - offset)
            picked += [src.indices[int(j)] for j in perm[offset:offset + take]]
        lo = self.rank * self.batch_size
        mine = picked[lo:lo + self.batch_size]
        seeds = [sample_key(self.seed, self.stage, step, g) % (2**31) for g in range(lo, lo + len(mine))]
        return src, mine, seeds

