"""How a run's steps are laid over its processes: the global batch a resume keeps, and the training
step each process builds (DDP's all-reduce, or the fixed-order reduction of :mod:`medkit.engine.ordered`)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable

import torch

from medkit.api.errors import ConfigError
from medkit.config.typed import RunSettings
from medkit.engine.distributed import DataParallelStep, World, broadcast_parameters
from medkit.engine.ordered import OrderedReduce, check_layout, group_size, reduce_record
from medkit.engine.step import TrainStep

log = logging.getLogger(__name__)


def keep_global_batch(run_dir: Path, current: Path | None, settings: RunSettings, cfg: dict[str, Any],
                      world: World) -> tuple[RunSettings, dict[str, Any]]:
    """Resume under another world size with the same global batch, so the step plan (a pure function
    of the seed, the stage, the step and the global batch) is the one the run started.

    Args:
        run_dir: the run (for messages).
        current: the committed generation the run resumes from (its ``manifest.json`` says the
            world size it ran on); ``None``: nothing to keep.
        settings / cfg: the run's typed settings and config (never changed: new ones are returned).
        world: the processes of this resume.

    Returns:
        The settings and config this resume runs with (per-process batch derived where the world
        size changed; the same objects otherwise).

    Raises:
        ConfigError: the global batch cannot be split over this many processes.
    """
    if current is None or not (current / "manifest.json").is_file():
        return settings, cfg
    from medkit.config.received import received_manifest

    saved = received_manifest(current / "manifest.json")
    before = int(saved.get("world_size", 1))
    now = world.world_size
    _same_reduction(run_dir, saved.get("reduce"), settings, before, world)
    if before == now:
        return settings, cfg
    global_batch = settings.trainer.batch_size * before
    if global_batch % now:
        raise ConfigError(f"{run_dir} ran on {before} process(es) with a global batch of {global_batch}; "
                          f"it cannot be split over {now} processes — resume with a world size that divides "
                          f"{global_batch}")
    per_process = global_batch // now
    # derived for this run as new objects (the caller's config is not changed); the manifest's
    # config hash and the run events see the batch size each process runs, as they always did
    trainer = dataclasses.replace(settings.trainer, batch_size=per_process)
    settings = dataclasses.replace(settings, trainer=trainer)
    cfg = {**cfg, "trainer": {**cfg["trainer"], "batch_size": per_process}}
    log.info("resuming on %d process(es) instead of %d: %d samples per process keep the global batch of %d",
             now, before, per_process, global_batch)
    if trainer.reduce != "ordered" and world.is_main:
        log.warning("%s: trainer.reduce=%s sums gradients in an order that depends on the number of processes, "
                    "so this resume will not be bit-identical to a run on %d process(es) (only close to it); "
                    "trainer.reduce=ordered gives the same bits on any world size", run_dir, trainer.reduce, before)
    return settings, cfg


def _same_reduction(run_dir: Path, saved: Any, settings: RunSettings, before: int, world: World) -> None:
    """Warn when the resume reduces gradients otherwise than the run did (``trainer.reduce`` or the
    group size changed by an override): the steps after it are then not the run's bits."""
    if not isinstance(saved, dict) or not world.is_main:
        return
    tr = settings.trainer
    now = reduce_record(tr.reduce, tr.reduce_group, tr.batch_size * before, tr.accum_steps)
    if saved != now:
        log.warning("%s ran with the gradient reduction %s and resumes with %s: the result will not be "
                    "bit-identical to an uninterrupted run", run_dir, saved, now)


def ordered_groups(settings: RunSettings, world: World) -> int | None:
    """Reduction groups per process and step under ``trainer.reduce=ordered`` (``None`` for
    ``allreduce``); refuses a layout the groups cannot be dealt to (:func:`check_layout`)."""
    tr = settings.trainer
    if tr.reduce != "ordered":
        return None
    global_batch = tr.batch_size * world.world_size
    group = group_size(global_batch, tr.reduce_group, tr.accum_steps)
    per_rank = check_layout(global_batch, group, world.world_size)
    if tr.accum_steps > 1 and world.is_main:
        log.info("trainer.reduce=ordered with trainer.accum_steps=%d: each step runs as %d group(s) of %d samples "
                 "per process, the groups of %d micro-batches of %d samples", tr.accum_steps, per_rank, group,
                 tr.accum_steps, global_batch // tr.accum_steps)
    return per_rank


def step_factory(model: torch.nn.Module, settings: RunSettings, world: World,
                 device: torch.device) -> Callable[..., TrainStep]:
    """The run's ``ctx.step_factory``: ``make(optimizer, *, groups=None, **hooks)`` builds a
    :class:`TrainStep` over the optimizer's parameters. ``groups`` (the pre-training loop passes
    :func:`ordered_groups`): the step reduces that many groups per process in the fixed order;
    otherwise a distributed step goes through DDP (strategies' own loops, ``allreduce``)."""
    tr, opt_cfg = settings.trainer, settings.optim

    def make(optimizer: torch.optim.Optimizer, *, groups: int | None = None, **hooks: Any) -> TrainStep:
        params = [p for g in optimizer.param_groups for p in g["params"]]
        forward = no_sync = reducer = None
        if groups is not None:
            if world.distributed:  # every rank starts the stage from rank 0's weights, as under DDP
                shared = {id(t): t for t in [*model.parameters(), *model.buffers(), *params]}
                broadcast_parameters(list(shared.values()))
            reducer = OrderedReduce(params, rank=world.rank, world_size=world.world_size, groups_per_rank=groups)
        elif world.distributed:
            in_model = {id(p) for p in model.parameters()}
            dp = DataParallelStep(model, [p for p in params if id(p) not in in_model], device=device)
            forward, no_sync = dp.forward, dp.no_sync
        return TrainStep(optimizer, params=params, device=device, clip_grad=opt_cfg.clip_grad,
                         amp=tr.amp, forward=forward, no_sync=no_sync, reducer=reducer, **hooks)
    return make
