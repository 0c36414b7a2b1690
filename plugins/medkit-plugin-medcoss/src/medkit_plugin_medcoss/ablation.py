"""MedCoSS's parts switched off one at a time, for ablations: a random buffer instead of the k-means one."""

from __future__ import annotations

import hashlib
import logging

import torch

from medkit.api import DataError, RunContext

from medkit_plugin_medcoss.buffer import BufferEntry, buffer_sizes, data_path

log = logging.getLogger(__name__)

#: how a finished modality's buffer is chosen
SELECTIONS = ("kmeans", "random")
#: what a buffer batch is trained with
BUFFER_LOSSES = ("distill", "pretext")


def random_buffer(ctx: RunContext, modality: str, *, buffer_ratio: float, num_center: float, seed: int,
                  rule: str = "reference") -> BufferEntry:
    """A buffer of the same size the k-means selection would keep (``K·k``, at most N), drawn uniformly
    without replacement from the training samples — the ablation of the k-means selection.

    The draw is a pure function of ``seed``, the stage and the modality name, so every rank computes
    the same buffer without communicating, and no feature pass is run.
    """
    indices = list(ctx.train_indices[modality])
    ids = list(ctx.train_sets[modality].ids)
    if not indices:
        raise DataError(f"cannot select a rehearsal buffer of {modality!r} from 0 training samples")
    clusters, per_cluster = buffer_sizes(len(indices), buffer_ratio, num_center, rule)
    size = min(len(indices), clusters * per_cluster)
    key = int.from_bytes(hashlib.sha256(f"{seed}/{ctx.stage_index}/{modality}".encode()).digest()[:8], "little")
    generator = torch.Generator().manual_seed(key & 0x7FFF_FFFF_FFFF_FFFF)
    rows = sorted(int(r) for r in torch.randperm(len(indices), generator=generator)[:size])
    chosen = [str(ids[indices[r]]) for r in rows]
    log.info("rehearsal buffer of %s: %d of %d training samples drawn at random (selection=random)",
             modality, len(chosen), len(indices))
    return BufferEntry(modality=modality, stage=ctx.stage_index, ids=chosen, num_samples=len(indices),
                       num_clusters=0, per_cluster=0, inertia=0.0, data=data_path(ctx, modality),
                       selection="random")
