"""The k-means rehearsal buffer: features of a finished modality, selection, and ids ↔ indices."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Sequence

import torch

from medkit.api import CheckpointError, ConfigError, DataError, RunContext, gather_cat, work_reporter

from medkit_plugin_medcoss import kmeans
from medkit_plugin_medcoss.store import FeatureStore

log = logging.getLogger(__name__)

#: Per-centre rules: ``reference`` is ``main_buffer_kmean.py``'s ``k = int(N·buffer_ratio // K)``;
#: ``fixed`` is medkit's earlier ``k = int(buffer_ratio / num_center)`` (ignores N, so for small N
#: the buffer is not ``buffer_ratio·N``).
PER_CENTER_RULES = ("reference", "fixed")
_EPS = 1e-9


def check_sizes(buffer_ratio: float, num_center: float, rule: str) -> None:
    """The buffer-size settings as :func:`buffer_sizes` needs them (the strategy checks them when it
    is built, so a bad value fails before the first stage, not after it).

    Raises:
        ConfigError: naming the ``strategy.*`` key and the accepted values.
    """
    if not 0.0 < buffer_ratio <= 1.0 or not 0.0 < num_center <= 1.0:
        raise ConfigError(f"strategy rehearsal: buffer_ratio ({buffer_ratio}) and num_center ({num_center}) "
                          f"must be in (0, 1]; MedCoSS uses strategy.buffer_ratio=0.05 strategy.num_center=0.01")
    if rule not in PER_CENTER_RULES:
        raise ConfigError(f"strategy rehearsal: per_center_rule must be one of {', '.join(PER_CENTER_RULES)}, "
                          f"got {rule!r}")


def buffer_sizes(num_samples: int, buffer_ratio: float, num_center: float,
                 rule: str = "reference") -> tuple[int, int]:
    """``(K, k)``: ``K = max(1, int(num_center·N))`` clusters (at most N) and ``k`` samples per cluster.

    ``rule="reference"`` (MedCoSS ``main_buffer_kmean.py``): ``k = max(1, int(N·buffer_ratio
    // K))``, so ``K·k ≈ buffer_ratio·N`` for every N (N = 199: K = 1, k = 9). ``rule="fixed"``:
    ``k = max(1, int(buffer_ratio / num_center))`` (N = 199: K = 1, k = 5). The ``max(1, ·)`` floors
    can make the buffer larger than ``buffer_ratio·N``; :func:`select_buffer` warns when they do.
    """
    check_sizes(buffer_ratio, num_center, rule)
    n = int(num_samples)
    clusters = min(max(1, int(num_center * n + _EPS)), max(1, n))
    if rule == "reference":
        per_cluster = max(1, int((n * buffer_ratio + _EPS) // clusters))
    else:
        per_cluster = max(1, int(buffer_ratio / num_center + _EPS))
    return clusters, per_cluster


@dataclass
class BufferEntry:
    """The buffer of one modality, selected once after the stage that trained it.

    Attributes:
        modality: modality name.
        stage: 0-based index of the stage after which it was selected.
        ids: the selected sample ids (stable across file order; never paths or indices).
        num_samples: N, the training samples clustered.
        num_clusters, per_cluster: K and k.
        inertia: the k-means inertia, for the record.
        data: the data path the samples came from (for error messages).
        selection: ``"kmeans"`` (MedCoSS) or ``"random"`` (the ablation; K, k and inertia are then 0).
    """

    modality: str
    stage: int
    ids: list[str]
    num_samples: int
    num_clusters: int
    per_cluster: int
    inertia: float
    data: str | None = None
    selection: str = "kmeans"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any], *, source: str = "strategy state") -> BufferEntry:
        try:
            return cls(modality=str(obj["modality"]), stage=int(obj["stage"]), ids=[str(i) for i in obj["ids"]],
                       num_samples=int(obj["num_samples"]), num_clusters=int(obj["num_clusters"]),
                       per_cluster=int(obj["per_cluster"]), inertia=float(obj["inertia"]),
                       data=None if obj.get("data") is None else str(obj["data"]),
                       selection=str(obj.get("selection", "kmeans")))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{source}: a rehearsal buffer entry is malformed ({exc!r}); "
                                  f"the strategy state is corrupted or from another strategy") from exc


def data_path(ctx: RunContext, modality: str) -> str | None:
    """Where ``modality``'s data lives: the run manifest's record, else the dataset's ``root``."""
    manifest = Path(ctx.run_dir) / "manifest.json"
    try:
        found = json.loads(manifest.read_text(encoding="utf-8")).get("data", {}).get(modality)
    except (OSError, ValueError):
        found = None
    if found:
        return str(found)
    root = getattr(ctx.train_sets.get(modality), "root", None)
    return None if root is None else str(root)


def indices_for_ids(ctx: RunContext, entry: BufferEntry, *, strategy: str) -> list[int]:
    """Map a buffer's sample ids to indices of the modality's current training dataset."""
    if entry.modality not in ctx.train_sets:
        raise ConfigError(f"strategy {strategy}: the state holds a buffer of modality {entry.modality!r} "
                          f"(selected after stage {entry.stage + 1}) but this run has no data for it; "
                          f"include {entry.modality!r} in the run (with its --data) so it can be rehearsed")
    ds = ctx.train_sets[entry.modality]
    where = {str(sid): i for i, sid in enumerate(ds.ids)}
    missing = [sid for sid in entry.ids if sid not in where]
    if missing:
        shown = ", ".join(repr(s) for s in missing[:8]) + (", ..." if len(missing) > 8 else "")
        raise DataError(f"strategy {strategy}: {len(missing)} of the {len(entry.ids)} buffer samples of "
                        f"modality {entry.modality!r} (selected after stage {entry.stage + 1} from "
                        f"{entry.data or 'unknown data'}) are missing from the data at "
                        f"{data_path(ctx, entry.modality) or 'unknown path'}: {shown}; the data changed "
                        f"since the buffer was selected: restore those samples or start a new run")
    return [where[sid] for sid in entry.ids]


def _shard(n: int, rank: int, world: int) -> tuple[int, int]:
    return n * rank // world, n * (rank + 1) // world


def _distributed(ctx: RunContext) -> bool:
    import torch.distributed as dist

    return ctx.world_size > 1 and dist.is_initialized()


def extract_features(ctx: RunContext, modality: str, indices: Sequence[int], *, chunk: int = 4096,
                     spill_threshold: int = 200_000, spill_dir: str | Path | None = None) -> FeatureStore | None:
    """Eval-mode pooled features (mask ratio 0, mean over non-padding tokens, un-augmented input)
    of ``indices``, in order. Each rank computes its share of every chunk; the shares are gathered
    on rank 0, the one rank that holds all rows (spilled to disk above ``spill_threshold``) and
    runs the k-means. The other ranks return ``None``: they never hold more than one chunk's share."""
    distributed = _distributed(ctx)
    store = None if distributed and ctx.rank != 0 else FeatureStore(
        len(indices), int(ctx.encoder.embed_dim), spill_threshold=spill_threshold, spill_dir=spill_dir)
    reporter = work_reporter(getattr(ctx, "reporter", None), "samples") if ctx.rank == 0 else None
    chunks = range(0, len(indices), chunk)
    if reporter is not None:
        reporter.start(len(indices), f"buffer features [{modality}]")
    # each rank's share of a chunk is encoded in pieces, so progress (rate, time left) shows between gathers
    piece = max(8 * ctx.batch_size, chunk // 16)
    try:
        for start in chunks:
            part = list(indices[start:start + chunk])
            lo, hi = _shard(len(part), ctx.rank, ctx.world_size)
            mine, pieces = part[lo:hi], []
            for p in range(0, max(len(mine), 1), piece):
                pieces.append(ctx.features(modality, mine[p:p + piece]))
                if reporter is not None:  # rank 0's share done, scaled to the whole chunk
                    share = min(p + piece, len(mine)) / max(len(mine), 1)
                    reporter.update(start + round(share * len(part)), {})
            local = torch.cat(pieces) if len(pieces) > 1 else pieces[0]
            feats: torch.Tensor | None = gather_cat(local.to(ctx.device)) if distributed else local
            if store is not None and feats is not None:
                store.write(start, feats.cpu())
    except BaseException:
        if store is not None:
            store.close()
        raise
    finally:
        if reporter is not None:
            reporter.finish()
    return store


@dataclass
class Selection:
    """The result of :func:`select_buffer`: selected row positions and the clustering."""

    rows: list[int]
    centroids: torch.Tensor
    num_clusters: int
    per_cluster: int
    inertia: float
    iterations: int


def select_buffer(features: kmeans.Data, *, buffer_ratio: float, num_center: float, iters: int = 50,
                  batch: int = 4096, seed: int = 0, method: str = "lloyd",
                  device: torch.device | str | None = None, rule: str = "reference",
                  modality: str = "?", reporter: Any = None, init_sample: int | None = None) -> Selection:
    """K-means with ``K`` clusters, then the ``k`` rows nearest each centroid (:func:`buffer_sizes`),
    deterministic for ``seed``; k-means++ seeds on ``init_sample`` rows (:func:`kmeans.init_rows`).
    Warns when the per-centre floor makes ``K·k`` exceed ``buffer_ratio·N``."""
    n = features.shape[0] if isinstance(features, torch.Tensor) else features.num_rows
    if n == 0:
        raise DataError("cannot select a rehearsal buffer from 0 training samples")
    k_clusters, per_cluster = buffer_sizes(n, buffer_ratio, num_center, rule)
    nominal = min(n, k_clusters * per_cluster)
    if nominal > buffer_ratio * n + _EPS:
        log.warning("rehearsal buffer of %s: %d of %d samples (%.1f%%) is larger than buffer_ratio=%g "
                    "(%.1f samples) because of the at-least-one floor of K=%d clusters × k=%d per cluster "
                    "(per_center_rule=%s); lower num_center or accept the larger buffer", modality, nominal,
                    n, 100.0 * nominal / n, buffer_ratio, buffer_ratio * n, k_clusters, per_cluster, rule)
    # the run's bar, or a line every few seconds; ``iters`` is an upper bound (it may converge sooner)
    shown = work_reporter(reporter, "iterations") if reporter is not None else None
    if shown is not None:
        shown.start(iters, f"k-means [{modality}] (K={k_clusters}, N={n}; stops when converged)")
    try:
        result = kmeans.fit(features, k_clusters, iters=iters, batch=batch, seed=seed, method=method, device=device,
                            progress=None if shown is None else partial(shown.update, metrics={}),
                            init_sample=init_sample)
    finally:
        if shown is not None:
            shown.finish()
    rows = kmeans.select_nearest(result.labels, result.sq_dist, per_cluster, k_clusters)
    return Selection(rows=[int(r) for r in rows], centroids=result.centroids, num_clusters=k_clusters,
                     per_cluster=per_cluster, inertia=result.inertia, iterations=result.iterations)


def build_buffer(ctx: RunContext, modality: str, *, buffer_ratio: float, num_center: float, iters: int,
                 batch: int, seed: int, method: str, spill_threshold: int,
                 spill_dir: str | None, rule: str = "reference",
                 init_sample: int | None = None) -> tuple[BufferEntry, torch.Tensor]:
    """Select ``modality``'s buffer from every training sample with the model as it is now."""
    t0 = time.perf_counter()
    indices = list(ctx.train_indices[modality])
    ids = list(ctx.train_sets[modality].ids)
    if not indices:  # on every rank, before rank 0 alone selects (the others would wait for it)
        raise DataError(f"cannot select a rehearsal buffer of {modality!r} from 0 training samples")
    store = extract_features(ctx, modality, indices, chunk=max(batch, ctx.batch_size),
                             spill_threshold=spill_threshold, spill_dir=spill_dir or ctx.run_dir)
    sel: Selection | None = None
    if store is not None:  # rank 0 (or the only rank): the k-means runs once per run, here
        try:
            sel = select_buffer(store, buffer_ratio=buffer_ratio, num_center=num_center, iters=iters,
                                batch=batch, seed=seed, method=method, device=ctx.device, rule=rule,
                                modality=modality, reporter=getattr(ctx, "reporter", None), init_sample=init_sample)
        finally:
            store.close()
    sel = share_selection(ctx, sel)
    rows, centroids = sel.rows, sel.centroids
    chosen = [str(ids[indices[r]]) for r in rows]
    log.info("rehearsal buffer of %s: %d of %d training samples (K=%d clusters × k=%d, inertia %.4g, "
             "%d k-means iterations, %.1fs)", modality, len(chosen), len(indices), sel.num_clusters,
             sel.per_cluster, sel.inertia, sel.iterations, time.perf_counter() - t0)
    entry = BufferEntry(modality=modality, stage=ctx.stage_index, ids=chosen, num_samples=len(indices),
                        num_clusters=sel.num_clusters, per_cluster=sel.per_cluster, inertia=sel.inertia,
                        data=data_path(ctx, modality))
    return entry, centroids


def share_selection(ctx: RunContext, sel: Selection | None) -> Selection:
    """Rank 0's selection on every rank (rank 0 alone ran the k-means; the others pass ``None``
    and wait here): its rows, centroids and record are broadcast, so every rank rehearses the
    very same buffer. Without a process group ``sel`` is returned as it is."""
    import torch.distributed as dist

    if not _distributed(ctx):
        assert sel is not None
        return sel
    head = torch.zeros(7, dtype=torch.float64, device=ctx.device)
    if ctx.rank == 0:
        assert sel is not None
        head.copy_(torch.tensor([len(sel.rows), *sel.centroids.shape, sel.num_clusters, sel.per_cluster,
                                 sel.inertia, sel.iterations], dtype=torch.float64))
    dist.broadcast(head, src=0)
    count, k_rows, dim, clusters, per_cluster, inertia, iterations = head.tolist()
    picked = torch.zeros(int(count), dtype=torch.long, device=ctx.device)
    shared = torch.zeros(int(k_rows), int(dim), dtype=torch.float32, device=ctx.device)
    if ctx.rank == 0:
        assert sel is not None
        picked.copy_(torch.tensor(sel.rows, dtype=torch.long))
        shared.copy_(sel.centroids.to(ctx.device, torch.float32))
    dist.broadcast(picked, src=0)
    dist.broadcast(shared, src=0)
    return Selection(rows=[int(r) for r in picked.cpu()], centroids=shared.cpu(), num_clusters=int(clusters),
                     per_cluster=int(per_cluster), inertia=float(inertia), iterations=int(iterations))
