"""The pre-training engine: stages, steps, strategy points, events, evaluation and checkpoints."""

from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from medkit.api.components import Components
from medkit.api.context import RunContext, SampleMemo
from medkit.api.errors import CheckpointError, ConfigError
from medkit.api.events import RunInfo
from medkit.api.features import FeatureCache
from medkit.api.progress import LogReporter, Reporter
from medkit.api.protocols import Strategy
from medkit.config.typed import RunSettings
from medkit.data.groups import GroupOptions
from medkit.engine import checkpoint as cp
from medkit.engine.chunks import ChunkLoader
from medkit.engine.continuation import not_evaluated_after_from
from medkit.engine.datasets import build_datasets, data_paths
from medkit.engine.distributed import DataParallelStep, World, barrier, init_world
from medkit.engine.generations import GenerationStore
from medkit.engine.layout import keep_global_batch, step_factory
from medkit.engine.loader import RunLoader
from medkit.engine.plan import StepPlan
from medkit.engine.schedule import adamw, lr_at, param_groups
from medkit.engine.stages import StageLoop
from medkit.engine.step import TrainStep
from medkit.engine.workers import num_workers
from medkit.eval.matrices import write_matrices
from medkit.eval.records import stage_results
from medkit.models.build import Model, build_model, load_model_state, set_trunk_options
from medkit.storage import files as ck
from medkit.storage.lock import run_lock

#: What this module held before the stage loop (:mod:`medkit.engine.stages`) and the process layout
#: (:mod:`medkit.engine.layout`) moved out: still importable from here.
__all__ = ["Engine", "load_config", "DataParallelStep", "RunLoader", "StepPlan", "TrainStep", "adamw", "lr_at",
           "param_groups"]

log = logging.getLogger(__name__)


class Engine(StageLoop):
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
            feature_cache=FeatureCache(self.model.encoder), batch_loader=self._chunk_loader(sets, device, seed),
            sample_memo=SampleMemo(mb << 20) if (mb := int(self.settings.trainer.eval_cache_mb)) > 0 else None)
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
        set_trunk_options(self.model.encoder, self.settings.trainer)  # trainer.grad_checkpointing, trainer.compile
        ctx.step_factory = step_factory(self.model.modules(), self.settings, self.world, ctx.device)
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
        """Resume under another world size with the run's global batch (:func:`medkit.engine.layout.keep_global_batch`:
        new settings and config objects, the given ones unchanged)."""
        self.settings, self.cfg = keep_global_batch(self.run_dir, self.recovered, self.settings, self.cfg, self.world)

    def _results(self) -> dict[str, Any]:
        matrix = stage_results(self.record.evaluations)
        return {"run_dir": str(self.run_dir), "matrix": matrix}


def load_config(run_dir: Path) -> dict[str, Any]:
    """The resolved config saved in a run directory, through the gate for received files
    (:func:`medkit.config.received.received_config`)."""
    from medkit.config.received import received_config

    return received_config(run_dir)
