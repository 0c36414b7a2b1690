"""Experience replay (``er``): a seeded reservoir buffer per finished modality, replayed with its pretext loss."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from medkit.api import BaseStrategy, CheckpointError, ConfigError, DataError, RunContext, Source

log = logging.getLogger(__name__)

STATE_FORMAT = 1
_EPS = 1e-9


def buffer_size(num_samples: int, buffer_ratio: float, num_center: float) -> int:
    """The size MedCoSS's k-means buffer nominally has (its reference per-centre rule):
    ``K·k`` with ``K = max(1, int(num_center·N))`` and ``k = max(1, int(N·buffer_ratio // K))``
    (≈ ``buffer_ratio·N``), at most ``N``."""
    clusters = min(max(1, int(num_center * num_samples + _EPS)), max(1, num_samples))
    per_cluster = max(1, int((num_samples * buffer_ratio + _EPS) // clusters))
    return min(num_samples, clusters * per_cluster)


def reservoir(num_items: int, size: int, generator: torch.Generator) -> list[int]:
    """Vitter's Algorithm R over the stream ``0 .. num_items-1``: a uniform random subset of ``size``
    positions (each item is kept with probability ``size / num_items``), drawn from ``generator``."""
    size = min(size, num_items)
    kept = list(range(size))
    if num_items > size:
        u = torch.rand(num_items - size, generator=generator, dtype=torch.float64)
        slots = (u * torch.arange(size + 1, num_items + 1, dtype=torch.float64)).floor().long()  # U{0..i}
        for item, slot in zip(range(size, num_items), slots.tolist()):
            if slot < size:
                kept[slot] = item
    return kept


def _generator(seed: int, modality: str) -> torch.Generator:
    key = int(hashlib.sha1(f"er:{seed}:{modality}".encode()).hexdigest()[:15], 16)
    return torch.Generator().manual_seed(key)


@dataclass
class ReplayBuffer:
    """The ids replayed for one modality, drawn once after the stage that trained it."""

    modality: str
    stage: int
    ids: list[str]
    num_samples: int
    data: str | None = None


def _data_path(ctx: RunContext, modality: str) -> str | None:
    try:
        found = json.loads((Path(ctx.run_dir) / "manifest.json").read_text(encoding="utf-8"))["data"].get(modality)
    except (OSError, ValueError, KeyError, AttributeError):
        found = None
    root = getattr(ctx.train_sets.get(modality), "root", None)
    return str(found) if found else (None if root is None else str(root))


class ExperienceReplay(BaseStrategy):
    """Replays a uniform random sample of every earlier modality, as extra ``"buffer"`` sources
    weighted by their size, with that modality's own pretext loss (no distillation, no mixup).

    The buffer (``buffer_ratio`` of the training samples, the same size rehearsal's k-means buffer
    has) is drawn by reservoir sampling from a generator seeded by ``seed`` and the modality name,
    and stored as sample ids.
    """

    name = "er"

    def __init__(self, *, buffer_ratio: float, num_center: float, seed: int,
                 min_current_fraction: float = 0.5) -> None:
        self.buffer_ratio, self.num_center, self.seed = float(buffer_ratio), float(num_center), int(seed)
        self.min_current_fraction = float(min_current_fraction)
        self.buffers: dict[str, ReplayBuffer] = {}
        self.active: dict[str, list[int]] = {}

    def before_stage(self, ctx: RunContext) -> None:
        self.active = {m: self._indices(ctx, b) for m, b in self.buffers.items() if m not in ctx.stage}
        if self.active:
            log.info("stage %d replays %s", ctx.stage_index + 1,
                     ", ".join(f"{m} ({len(ix)} samples)" for m, ix in self.active.items()))

    def _indices(self, ctx: RunContext, buf: ReplayBuffer) -> list[int]:
        if buf.modality not in ctx.train_sets:
            raise ConfigError(f"strategy er: the state holds a replay buffer of modality {buf.modality!r} "
                              f"(drawn after stage {buf.stage + 1}) but this run has no data for it; "
                              f"include {buf.modality!r} in the run (with its --data) so it can be replayed")
        where = {str(s): i for i, s in enumerate(ctx.train_sets[buf.modality].ids)}
        missing = [s for s in buf.ids if s not in where]
        if missing:
            shown = ", ".join(repr(s) for s in missing[:8]) + (", ..." if len(missing) > 8 else "")
            raise DataError(f"strategy er: {len(missing)} of the {len(buf.ids)} replay samples of modality "
                            f"{buf.modality!r} (drawn after stage {buf.stage + 1} from {buf.data or 'unknown data'}) "
                            f"are missing from the data at {_data_path(ctx, buf.modality) or 'unknown path'}: "
                            f"{shown}; the data changed since: restore those samples or start a new run")
        return [where[s] for s in buf.ids]

    def sources(self, ctx: RunContext) -> list[Source]:
        current = [Source(m, list(ctx.train_indices[m]), role="current") for m in ctx.stage]
        return current + [Source(m, list(ix), weight=float(len(ix)), role="buffer") for m, ix in self.active.items()]

    def after_stage(self, ctx: RunContext) -> None:
        for m in ctx.stage:  # every stage, the last included, so `--from` can continue the run
            indices = list(ctx.train_indices[m])
            ids = ctx.train_sets[m].ids
            size = buffer_size(len(indices), self.buffer_ratio, self.num_center)
            chosen = [str(ids[indices[p]]) for p in reservoir(len(indices), size, _generator(self.seed, m))]
            self.buffers.pop(m, None)
            self.buffers[m] = ReplayBuffer(modality=m, stage=ctx.stage_index, ids=chosen,
                                           num_samples=len(indices), data=_data_path(ctx, m))
            log.info("replay buffer of %s: %d of %d training samples", m, len(chosen), len(indices))
        self.active = {}

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return {}, {"format": STATE_FORMAT, "strategy": self.name,
                    "buffers": [asdict(b) for b in self.buffers.values()]}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        if not meta:
            return
        if meta.get("strategy", self.name) != self.name or int(meta.get("format", 0)) != STATE_FORMAT:
            raise CheckpointError(f"strategy er: the saved strategy state is from {meta.get('strategy')!r} "
                                  f"format {meta.get('format')!r}, expected 'er' format {STATE_FORMAT}; "
                                  f"continue with the run's own strategy")
        try:
            bufs = [ReplayBuffer(modality=str(b["modality"]), stage=int(b["stage"]), ids=[str(i) for i in b["ids"]],
                                 num_samples=int(b["num_samples"]), data=b.get("data"))
                    for b in meta.get("buffers", [])]
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"strategy er: a replay buffer entry in the state is malformed ({exc!r})") from exc
        self.buffers = {b.modality: b for b in bufs}


def make_er(buffer_ratio: float = 0.05, num_center: float = 0.01, seed: int = 0,
            min_current_fraction: float = 0.5) -> ExperienceReplay:
    """Experience replay with a seeded random buffer.

    Args:
        buffer_ratio: buffer size as a fraction of a modality's training samples.
        num_center: only sets the size, exactly as rehearsal's ``K·k`` (so both keep as many samples).
        seed: seeds the reservoir (with the modality name).
        min_current_fraction: the least share of a stage's steps on its own data (read by the
            engine's step plan), in ``[0, 1]``.
    """
    if not 0.0 < buffer_ratio <= 1.0 or not 0.0 < num_center <= 1.0:
        raise ConfigError(f"strategy er: buffer_ratio ({buffer_ratio}) and num_center ({num_center}) must be "
                          f"in (0, 1]; the MedCoSS budget is 0.05 and 0.01")
    if not 0.0 <= float(min_current_fraction) <= 1.0:
        raise ConfigError(f"strategy er: min_current_fraction must be in [0, 1], got {min_current_fraction}; "
                          f"set strategy.min_current_fraction=0.5 (the default)")
    return ExperienceReplay(buffer_ratio=buffer_ratio, num_center=num_center, seed=seed,
                            min_current_fraction=min_current_fraction)
