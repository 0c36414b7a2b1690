"""The pre-training engine: stages, steps, strategy points, events, evaluation and checkpoints."""

from __future__ import annotations

import dataclasses
import logging
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from medkit.api.components import Components
from medkit.api.context import RunContext, StageState
from medkit.api.errors import CheckpointError, ConfigError
from medkit.api.events import RunInfo, StageInfo
from medkit.api.features import FeatureCache
from medkit.api.progress import LogReporter, Reporter
from medkit.api.protocols import Strategy
from medkit.config.typed import RunSettings
from medkit.engine import checkpoint as cp
from medkit.engine.chunks import ChunkLoader
from medkit.engine.continuation import not_evaluated_after_from
from medkit.engine.chunk_plan import declared_chunks
from medkit.data.groups import GroupOptions
from medkit.engine.datasets import build_datasets, data_paths
from medkit.engine.distributed import DataParallelStep, World, barrier, init_world
from medkit.engine.generations import GenerationStore
from medkit.engine.loader import RunLoader
from medkit.engine.plan import StepPlan
from medkit.engine.schedule import adamw, lr_at, param_groups
from medkit.engine.step import TrainStep
from medkit.engine.steplog import StepLog
from medkit.engine.workers import num_workers
from medkit.eval.evaluate import evaluate_stage, want_probe_features
from medkit.eval.matrices import write_matrices
from medkit.eval.probes import ProbeOptions
from medkit.eval.records import stage_results
from medkit.models.build import Model, build_head, build_model, load_model_state, set_trunk_options
from medkit.storage import files as ck
from medkit.storage.lock import run_lock

log = logging.getLogger(__name__)


class Engine:
    """Runs (or resumes) one run directory.

    Args:
        cfg: the composed config (:func:`medkit.config.compose.compose`).
        run_dir: the run directory (rank 0 writes there).
        components: the plugin host (``medkit.registry.get_host()``): builds components by name
            and receives the run's events.
        reporter: progress display (the CLI passes a bar on a terminal).
        resume: continue the run in ``run_dir`` from its current checkpoint generation.
    """

    def __init__(self, cfg: dict[str, Any], run_dir: Path, *, components: Components,
                 reporter: Reporter | None = None, resume: bool = False) -> None:
        self.cfg, self.run_dir, self.resume = cfg, Path(run_dir), resume
        # the typed sections, built once; every default is the schema's (medkit.config.schemas)
        self.settings = RunSettings.of(cfg)
        self.components = components
        self.reporter: Reporter = reporter or LogReporter(self.settings.trainer.log_every)
        self.world: World = init_world(self.settings.trainer.device)
        self.record = cp.RunRecord()
        self.store = GenerationStore(self.run_dir, keep=self.settings.trainer.keep_checkpoints)
        self.restored: cp.Restored | None = None
        self.recovered: Path | None = None
        self.loader: RunLoader | None = None  # one DataLoader (persistent workers) for the whole run
        self.workers = num_workers(self.settings.trainer.num_workers)  # per rank; logs the number and why
        self.chunks: ChunkLoader | None = None  # evaluation and feature passes, in as many workers

    # -- setup -------------------------------------------------------------------------------
    def _device(self) -> torch.device:
        want = self.settings.trainer.device
        if want == "auto":
            return torch.device(f"cuda:{self.world.local_rank}" if torch.cuda.is_available() else "cpu")
        return torch.device(want)

    def _fresh_strategy(self) -> Strategy:
        return self.components.create("strategy", self.cfg["run"]["strategy"], **dict(self.cfg["strategy"]))

    def _build(self) -> RunContext:
        cfg = self.cfg
        seed = int(cfg["run"]["seed"])
        torch.manual_seed(seed)
        names = list(cfg["run"]["modalities"])
        modalities = {m: self.components.create("modality", m, **cfg["modality"].get(m, {})) for m in names}
        self.data_paths = data_paths(cfg, modalities, is_main=self.world.is_main)
        sets = build_datasets(modalities, self.data_paths, val_fraction=self.settings.trainer.val_fraction,
                              seed=seed, previous=self._previous_split(),
                              groups=GroupOptions.from_trainer(self.settings.trainer))
        self.record.split = sets.split
        origin = cfg["run"].get("from")
        assets = self.run_dir if self.resume else (Path(origin["path"]) if origin else None)
        self.model: Model = build_model(cfg, create=self.components.create, assets_dir=assets)
        for m, dataset in sets.train.items():  # prepared token ids must come from this run's tokenizer
            check = getattr(dataset, "check_tokenizer", None)
            if callable(check):
                check(self.model.encoder.tokenizers[self.model.tokenizer_of[m]])
        device = self._device()
        self.model.modules().to(device)
        self.strategy = self._fresh_strategy()
        if origin:
            stages = [list(s) for s in origin["stages"]] + self.strategy.plan(cfg["run"]["new_modalities"])
        else:
            stages = self.strategy.plan(names)
        ctx = RunContext(
            run_dir=self.run_dir, encoder=self.model.encoder, heads=self.model.heads,
            not_evaluated=not_evaluated_after_from(cfg), modalities=modalities,
            tokenizer_of=dict(self.model.tokenizer_of), train_sets=sets.train,
            eval_sets=sets.eval, train_indices=sets.train_indices, val_indices=sets.val_indices, stages=stages,
            config=dict(cfg["strategy"]), device=device, seed=seed, rank=self.world.rank,
            world_size=self.world.world_size, batch_size=self.settings.trainer.batch_size,
            model=self.model.modules(), reporter=self.reporter, data_paths=dict(self.data_paths),
            feature_cache=FeatureCache(self.model.encoder), batch_loader=self._chunk_loader(sets, device, seed))
        return ctx

    def _chunk_loader(self, sets: Any, device: torch.device, seed: int) -> ChunkLoader | None:
        """The workers of the evaluation and the strategies' feature passes (none with 0 workers)."""
        if self.workers == 0:
            return None
        tokenizers = {m: self.model.encoder.tokenizers[t] for m, t in self.model.tokenizer_of.items()}
        self.chunks = ChunkLoader(sets.train, sets.eval, tokenizers, num_workers=self.workers,
                                  pin_memory=device.type == "cuda", seed=seed)
        return self.chunks

    def _previous_split(self) -> dict[str, Any] | None:
        """The split this run must keep: its own (resume) or that of the model it continues (--from)."""
        origin = self.cfg["run"].get("from")
        where = self.recovered if self.resume else (Path(origin["path"]) if origin else None)
        if where is None or not (where / "metrics" / "split.json").is_file():
            return None
        return ck.read_json(where / "metrics" / "split.json")

    def _step_factory(self, ctx: RunContext) -> Any:
        tr, opt_cfg = self.settings.trainer, self.settings.optim
        amp = tr.amp
        set_trunk_options(self.model.encoder, tr)  # trainer.grad_checkpointing, trainer.compile

        def make(optimizer: torch.optim.Optimizer, **hooks: Any) -> TrainStep:
            params = [p for g in optimizer.param_groups for p in g["params"]]
            forward = no_sync = None
            if self.world.distributed:
                in_model = {id(p) for p in self.model.modules().parameters()}
                dp = DataParallelStep(self.model.modules(), [p for p in params if id(p) not in in_model],
                                      device=ctx.device)
                forward, no_sync = dp.forward, dp.no_sync
            return TrainStep(optimizer, params=params, device=ctx.device, clip_grad=opt_cfg.clip_grad,
                             amp=amp, forward=forward, no_sync=no_sync, **hooks)
        return make

    # -- persistence ---------------------------------------------------------------------------
    def _save(self, ctx: RunContext, *, stage: int, step: int, finished: bool = False) -> None:
        """One checkpoint generation (rank 0 writes; every rank meets at the barrier)."""
        if self.world.is_main:  # the tokenizers' assets are part of the generation (cp.write_tokenizers)
            cp.write_generation(self.store, cfg=self.cfg, ctx=ctx, model=self.model, strategy=self.strategy,
                                record=self.record, stage=stage, step=step, finished=finished,
                                data_paths=self.data_paths, world_size=self.world.world_size,
                                dists=self.components.distributions(), write_matrices=write_matrices)
        else:
            self.record.pending_steps = []
        barrier()

    def _restore(self) -> cp.Restored:
        found = self.recovered
        assert found is not None
        restored = cp.read_generation(found, self.record)
        load_model_state(self.model, found / "model.safetensors")
        self.strategy.load_state_dict(ck.load_tensors(found / "checkpoint" / "strategy.safetensors"),
                                      ck.read_json(found / "checkpoint" / "strategy.json"))
        if not restored.finished:  # a finished run says so in _run, not "resuming ... at stage N+1"
            log.info("resuming %s at stage %d, step %d (generation %s)", self.run_dir, restored.stage + 1,
                     restored.step, found.name)
        return restored

    def _continue_from(self) -> int:
        """Load the weights (and, where it was kept, the strategy state) of the model this run
        continues; returns the index of the first new stage."""
        from medkit.engine.continuation import load_origin

        origin = self.cfg["run"]["from"]
        self.strategy, evaluations = load_origin(origin, self.model, self.strategy, self.cfg["run"]["strategy"],
                                                 fresh=self._fresh_strategy)
        self.record.evaluations = evaluations
        for i in range(len(origin["stages"])):
            self.record.stage_steps.setdefault(i, 0)
        return len(origin["stages"])

    # -- the run -------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run or resume; one writer per run directory (the lock of :mod:`medkit.storage.lock`,
        held by rank 0 for the whole run)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        lock = run_lock(self.run_dir, "run --resume" if self.resume else "run") if self.world.is_main \
            else nullcontext()
        with lock:
            return self._run()

    def _run(self) -> dict[str, Any]:
        cfg = self.cfg
        if self.world.is_main and not self.resume:
            if self.store.current() is not None or (self.run_dir / "manifest.json").exists():
                raise ConfigError(f"{self.run_dir} already holds a run; use --resume {self.run_dir} to "
                                  f"continue it or choose another --run-dir")
            from medkit.config.compose import to_yaml

            self.store.sweep()  # what an earlier start that never committed left (temp files, staging)
            ck.atomic_write_text(self.run_dir / "config.yaml", to_yaml(cfg))
        if self.resume:
            # recovery writes (sweeps leftovers, deletes uncommitted generations, re-points links): rank 0
            # alone does it, then every rank reads the generation it settled on
            self.recovered = self.store.recover() if self.world.is_main else None
            barrier()
            if not self.world.is_main:
                self.recovered = self.store.current()
            if self.recovered is None:
                raise CheckpointError(f"{self.run_dir} has no committed checkpoint to resume from (it stopped "
                                      f"before its first one); start it again without --resume")
            self._keep_global_batch()
        ctx = self._build()
        ctx.step_factory = self._step_factory(ctx)
        start_stage, start_step = 0, 0
        if self.resume:
            self.restored = self._restore()
            if self.restored.finished:
                log.info("%s is already complete (all %d stage(s) done); nothing to resume", self.run_dir,
                         len(ctx.stages))
                return self._results()
            start_stage, start_step = self.restored.stage, self.restored.step
        elif cfg["run"].get("from"):
            start_stage = self._continue_from()
        self.strategy.setup(ctx)
        info = RunInfo(run_dir=self.run_dir, config=self.cfg, stages=ctx.stages, resumed=self.resume)
        self.components.emit("run_start", run=info)
        if not self.resume:
            self._save(ctx, stage=start_stage, step=0)
        try:
            for si in range(start_stage, len(ctx.stages)):
                restored = self.restored if si == start_stage else None
                self._run_stage(ctx, info, si, start_step if si == start_stage else 0, restored)
        finally:
            if self.loader is not None:
                self.loader.close()
                self.loader = None
            if self.chunks is not None:
                self.chunks.close()
        results = self._results()
        self.components.emit("run_end", run=info, results=results)
        return results

    def _keep_global_batch(self) -> None:
        """Resume under another world size with the same global batch, so the step plan (a pure
        function of the seed, the stage, the step and the global batch) is the one the run started."""
        current = self.recovered
        if current is None or not (current / "manifest.json").is_file():
            return
        from medkit.config.received import received_manifest

        before = int(received_manifest(current / "manifest.json").get("world_size", 1))
        now = self.world.world_size
        if before == now:
            return
        global_batch = self.settings.trainer.batch_size * before
        if global_batch % now:
            raise ConfigError(f"{self.run_dir} ran on {before} process(es) with a global batch of {global_batch}; "
                              f"it cannot be split over {now} processes — resume with a world size that divides "
                              f"{global_batch}")
        per_process = global_batch // now
        # derived for this run as new objects (the caller's config is not changed); the manifest's
        # config hash and the run events see the batch size each process runs, as they always did
        trainer = dataclasses.replace(self.settings.trainer, batch_size=per_process)
        self.settings = dataclasses.replace(self.settings, trainer=trainer)
        self.cfg = {**self.cfg, "trainer": {**self.cfg["trainer"], "batch_size": per_process}}
        log.info("resuming on %d process(es) instead of %d: %d samples per process keep the global batch of %d",
                 now, before, per_process, global_batch)

    def _results(self) -> dict[str, Any]:
        matrix = stage_results(self.record.evaluations)
        return {"run_dir": str(self.run_dir), "matrix": matrix}

    def _run_stage(self, ctx: RunContext, info: RunInfo, si: int, start_step: int,
                   restored: cp.Restored | None) -> None:
        tr, opt_cfg = self.settings.trainer, self.settings.optim
        max_steps = tr.max_steps if self.strategy.trains else 0
        resumed_mid = restored is not None and restored.has_optimizer and start_step > 0
        ctx.begin_stage(StageState(index=si, max_steps=max_steps, start_step=start_step, resumed=bool(resumed_mid)))
        if restored is not None and not resumed_mid:
            ck.set_rng_state(restored.rng())
        stage = StageInfo(index=si, modalities=list(ctx.stage), max_steps=max_steps, start_step=start_step)
        self.strategy.before_stage(ctx)
        self.components.emit("stage_start", run=info, stage=stage)

        named = [(n, p) for n, p in self.model.modules().named_parameters() if p.requires_grad]
        groups = param_groups(named, opt_cfg.weight_decay) + list(self.strategy.parameters_groups(ctx))
        global_batch = ctx.batch_size * self.world.world_size
        base_lr = opt_cfg.lr if opt_cfg.lr is not None else opt_cfg.blr * global_batch / 256
        optimizer = adamw(groups, lr=base_lr, betas=opt_cfg.betas, device=ctx.device)
        ctx.optimizer = optimizer
        if resumed_mid and restored is not None:
            restored.load_optimizer(optimizer, ctx.device)
            ck.set_rng_state(restored.rng())

        timings: dict[str, float] = {}
        if start_step < max_steps:
            self._train_steps(ctx, info, stage, base_lr, timings, optimizer)
        self.record.stage_steps[si] = max_steps
        t0 = time.perf_counter()
        probes = ProbeOptions.from_trainer(dataclasses.asdict(tr))  # trainer.probe_*
        want_probe_features(ctx, probes)  # the buffer's pass over the training set keeps what the probes read
        self.strategy.after_stage(ctx)
        t1 = time.perf_counter()
        evaluation = evaluate_stage(ctx, self.strategy, eval_batches=tr.eval_batches, probes=probes,
                                    make_head=self._fresh_head(ctx))  # {"after_stage": si + 1, ...}
        t2 = time.perf_counter()
        self.record.evaluations.append(evaluation)
        metrics = evaluation["metrics"]
        ctx.optimizer = None
        self._save(ctx, stage=si + 1, step=0, finished=si == len(ctx.stages) - 1)
        timings.update({"strategy_after_stage": t1 - t0, "evaluation": t2 - t1,
                        "checkpoint_final": time.perf_counter() - t2})
        log.info("stage %d/%d done: %s", si + 1, len(ctx.stages),
                 ", ".join(f"{k} {v:.2f}s" for k, v in timings.items()))
        flat = {f"{m}/{k}": v for k, per in metrics.items() for m, v in per.items()}
        self.components.emit("stage_end", run=info, stage=stage, metrics=flat)

    def _fresh_head(self, ctx: RunContext) -> Any:
        """Builds a new pretext head of a modality for the live encoder (the refitted-decoder loss)."""
        return lambda modality: build_head(self.cfg, modality, ctx.encoder, create=self.components.create)

    def _loader(self, ctx: RunContext, plan: StepPlan) -> Any:
        """This stage's batches from the run's one :class:`RunLoader` (its workers, when
        ``trainer.num_workers > 0``, are spawned once and serve every stage)."""
        if self.loader is None:
            tokenizers = {m: ctx.encoder.tokenizers[t] for m, t in ctx.tokenizer_of.items()}
            self.loader = RunLoader(ctx.train_sets, tokenizers, num_workers=self.workers,
                                    pin_memory=ctx.device.type == "cuda", seed=ctx.seed)
        return self.loader.stage(plan, start_step=ctx.step)

    def _train_steps(self, ctx: RunContext, info: RunInfo, stage: StageInfo, base_lr: float,
                     timings: dict[str, float], optimizer: torch.optim.Optimizer) -> None:
        tr, opt_cfg = self.settings.trainer, self.settings.optim
        plan = StepPlan(self.strategy.sources(ctx), batch_size=ctx.batch_size, max_steps=ctx.max_steps,
                        seed=ctx.seed, stage=ctx.stage_index, rank=self.world.rank,
                        world_size=self.world.world_size,
                        min_current_fraction=self.strategy.min_current_fraction,
                        chunk_sizes=declared_chunks(ctx.train_sets))
        self.record.realised_mix[ctx.stage_index] = plan.mix()
        log.info("stage %d plan: %s", ctx.stage_index + 1,
                 ", ".join(f"{k} {v} steps" for k, v in plan.mix().items()))
        step = ctx.make_step(optimizer, after_backward=lambda: self.strategy.after_backward(ctx),
                             after_optimizer_step=lambda: self.strategy.after_optimizer_step(ctx))
        every = tr.checkpoint_every
        # trainer.batch_size samples per process and step, run as accum_steps micro-batches (their
        # mean loss: the same gradient as one batch for a loss that is a mean over equal samples)
        accum = tr.accum_steps
        desc = f"stage {ctx.stage_index + 1}/{len(ctx.stages)} [{'+'.join(ctx.stage)}]"
        if self.world.is_main:
            self.reporter.start(ctx.max_steps, desc, completed=ctx.step)
        ctx.model.train()  # type: ignore[union-attr]

        def report(n: int, metrics: dict[str, float]) -> None:
            if self.world.is_main:
                self.reporter.update(n, metrics)

        def observe(head: dict[str, Any], metrics: dict[str, float]) -> None:
            self.components.emit("step_end", run=info, stage=stage, step=head["step"], metrics=metrics,
                                 modality=head["modality"], role=head["role"])
        # losses stay on the device until a sync point (log_every, a checkpoint, the stage's end)
        steps = StepLog(tr.log_every, self.record, report, observe)
        waited = computed = saved = 0.0
        t_wait = time.perf_counter()
        for batch in self._loader(ctx, plan):
            t_got = time.perf_counter()
            lr = lr_at(ctx.step, ctx.max_steps, base_lr=base_lr, min_lr=opt_cfg.min_lr,
                       warmup_fraction=opt_cfg.warmup_fraction)
            micro = batch.split(accum) if accum > 1 else batch
            out = step(lambda b: self.strategy.loss(ctx, b), micro, lr=lr, sync=False)
            ctx.step += 1
            t_done = time.perf_counter()
            waited, computed = waited + (t_got - t_wait), computed + (t_done - t_got)
            steps.add(out, stage=ctx.stage_index + 1, step=ctx.step, modality=batch.modality, role=batch.role,
                      lr=lr, time_s=round(t_done - t_wait, 6), data_s=round(t_got - t_wait, 6))
            checkpoint = ctx.step % every == 0 and ctx.step < ctx.max_steps
            if checkpoint or steps.due(ctx.step):
                steps.flush()  # raises on a non-finite step: never checkpointed
                t_synced = time.perf_counter()  # on CUDA, waiting for the queued steps
                computed += t_synced - t_done
            if checkpoint:
                self.record.stage_steps[ctx.stage_index] = ctx.step
                self._save(ctx, stage=ctx.stage_index, step=ctx.step)
                saved += time.perf_counter() - t_synced
            t_wait = time.perf_counter()
        steps.flush()
        timings.update({"data": waited, "forward_backward": computed, "checkpoint": saved})
        if self.world.is_main:
            self.reporter.finish()


def load_config(run_dir: Path) -> dict[str, Any]:
    """The resolved config saved in a run directory, through the gate for received files
    (:func:`medkit.config.received.received_config`)."""
    from medkit.config.received import received_config

    return received_config(run_dir)
