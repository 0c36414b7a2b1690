"""The stages of a run: the strategy points around each stage, its step loop, evaluation and checkpoints."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import torch

from medkit.api.context import RunContext, StageState
from medkit.api.events import RunInfo, StageInfo
from medkit.engine import checkpoint as cp
from medkit.engine.chunk_plan import declared_chunks
from medkit.engine.layout import ordered_groups
from medkit.engine.loader import RunLoader
from medkit.engine.plan import StepPlan
from medkit.engine.schedule import adamw, lr_at, param_groups
from medkit.engine.steplog import StepLog
from medkit.eval.evaluate import evaluate_stage, want_probe_features
from medkit.eval.probes import ProbeOptions
from medkit.models.build import build_head
from medkit.storage import files as ck

log = logging.getLogger(__name__)


class StageLoop:
    """The part of :class:`medkit.engine.engine.Engine` that runs one stage (a mixin: it reads the
    engine's settings, world, model, strategy, record, loader and reporter)."""

    settings: Any
    world: Any
    model: Any
    strategy: Any
    record: cp.RunRecord
    components: Any
    reporter: Any
    loader: RunLoader | None
    workers: int
    cfg: dict[str, Any]

    def _save(self, ctx: RunContext, *, stage: int, step: int, finished: bool = False) -> None:
        """One checkpoint generation: :meth:`medkit.engine.engine.Engine._save` (persistence)."""
        raise NotImplementedError

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
        groups = ordered_groups(self.settings, self.world)  # None: DDP's all-reduce (trainer.reduce)
        step = ctx.make_step(optimizer, groups=groups, after_backward=lambda: self.strategy.after_backward(ctx),
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
            micro = batch.split(groups) if groups is not None else batch.split(accum) if accum > 1 else batch
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
