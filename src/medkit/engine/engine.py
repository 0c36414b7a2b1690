"""The training engine: stages, steps, strategy calls, events, evaluation, atomic checkpoints."""

from __future__ import annotations

import importlib.metadata as md
import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from medkit.storage import files as ck
from medkit.config.compose import config_hash, to_yaml
from medkit.api.context import RunContext
from medkit.data.demo import demo_root
from medkit.data.split import split_indices
from medkit.engine.plan import StepBatches, StepPlan
from medkit.engine.distributed import World, average_gradients, barrier, broadcast_parameters, init_world
from medkit.api.errors import CheckpointError, ConfigError
from medkit.eval.evaluate import NOT_EVALUATED, evaluate_stage
from medkit.eval.records import evaluations_before, normalise_evaluations, stage_results, write_evaluations
from medkit.api.events import RunInfo, StageInfo
from medkit.models.build import MODEL_METADATA, Model, build_model, load_model_state, save_model
from medkit.api.progress import LogReporter, Reporter

log = logging.getLogger(__name__)
CHECKPOINT_DIR = "checkpoint"


def package_versions() -> dict[str, str]:
    out = {}
    names = ["medkit", "torch", "timm", "monai", "safetensors"]
    try:
        from medkit.registry import get_host

        names += [r.dist for r in get_host().records if r.dist not in names]
    except Exception:  # noqa: BLE001
        pass
    for name in names:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return out


def lr_at(step: int, max_steps: int, *, base_lr: float, min_lr: float, warmup_fraction: float) -> float:
    """Linear warm-up then half-cycle cosine to ``min_lr`` (spec §4), per optimizer step."""
    warmup = int(round(warmup_fraction * max_steps))
    if step < warmup:
        return base_lr * (step + 1) / warmup
    span = max(max_steps - warmup, 1)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / span))


def param_groups(named: list[tuple[str, torch.nn.Parameter]], weight_decay: float) -> list[dict[str, Any]]:
    """timm's rule (spec §4): no weight decay for 1-D parameters and biases."""
    decay = [p for n, p in named if p.ndim > 1 and not n.endswith(".bias")]
    no_decay = [p for n, p in named if p.ndim <= 1 or n.endswith(".bias")]
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


class Engine:
    """Runs (or resumes) one run directory."""

    def __init__(self, cfg: dict[str, Any], run_dir: Path, *, reporter: Reporter | None = None,
                 resume: bool = False) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.reporter: Reporter = reporter or LogReporter(cfg["trainer"].get("log_every", 10))
        self.world: World = init_world(cfg["trainer"].get("device", "auto"))
        self.pending_steps: list[dict[str, Any]] = []
        self.evaluations: list[dict[str, Any]] = []
        self.stage_steps: dict[int, int] = {}
        from medkit.registry import get_host

        self.host = get_host()

    # -- setup -------------------------------------------------------------------------------
    def _device(self) -> torch.device:
        want = str(self.cfg["trainer"].get("device", "auto"))
        if want == "auto":
            return torch.device(f"cuda:{self.world.local_rank}" if torch.cuda.is_available() else "cpu")
        return torch.device(want)

    def _data_paths(self, modalities: dict[str, Any]) -> dict[str, str]:
        paths: dict[str, str] = {}
        for name, modality in modalities.items():
            given = self.cfg["run"]["data"].get(name)
            if given:
                path = Path(given).expanduser()
                if not path.exists():
                    raise ConfigError(f"--data for modality {name!r}: {path} does not exist")
                paths[name] = str(path.resolve())
                continue
            root = demo_root() / name
            if self.world.is_main:  # one writer; the others wait, then only look it up
                path = modality.demo_data(root)
            barrier()
            if not self.world.is_main:
                path = modality.demo_data(root)
            log.info("%s: no --data given, using the built-in demo data at %s", name, path)
            paths[name] = str(path)
        return paths

    def _build(self) -> RunContext:
        from medkit.registry import create

        cfg = self.cfg
        seed = int(cfg["run"]["seed"])
        torch.manual_seed(seed)
        names = list(cfg["run"]["modalities"])
        modalities = {m: create("modality", m, **cfg["modality"].get(m, {})) for m in names}
        self.data_paths = self._data_paths(modalities)
        train_sets, eval_sets, train_idx, val_idx = {}, {}, {}, {}
        val_fraction = float(cfg["trainer"].get("val_fraction", 0.1))
        for m, modality in modalities.items():
            path = Path(self.data_paths[m])
            train_sets[m] = modality.dataset(path, train=True)
            view = getattr(train_sets[m], "view", None)
            eval_sets[m] = view(train=False) if callable(view) else modality.dataset(path, train=False)
            train_idx[m], val_idx[m] = split_indices(list(train_sets[m].ids), val_fraction)
            log.info("%s: %d training / %d held-out samples from %s", m, len(train_idx[m]),
                     len(val_idx[m]), path)
        origin = cfg["run"].get("from")
        assets = self.run_dir if self.resume else (Path(origin["path"]) if origin else None)
        self.model: Model = build_model(cfg, assets_dir=assets)
        device = self._device()
        self.model.modules().to(device)
        broadcast_parameters(self.model.modules().parameters())
        strategy_cfg = dict(cfg["strategy"])
        self.strategy = self._fresh_strategy()
        if origin:
            stages = [list(s) for s in origin["stages"]] + self.strategy.plan(cfg["run"]["new_modalities"])
        else:
            stages = self.strategy.plan(names)
        # an earlier run's modality without its data here is not evaluated (never on the demo data)
        given = cfg["run"].get("data") or {}
        skip = {m: (f"trained in {origin['ref']}; its data are not here (pass --data {m}=DIR to evaluate "
                    f"it), and it is never evaluated on the demo data")
                for m in dict.fromkeys(x for s in (origin["stages"] if origin else []) for x in s)
                if not given.get(m) and m not in cfg["run"].get("new_modalities", [])}
        return RunContext(
            run_dir=self.run_dir, encoder=self.model.encoder, heads=self.model.heads, extras={NOT_EVALUATED: skip},
            modalities=modalities, tokenizer_of=dict(self.model.tokenizer_of), train_sets=train_sets,
            eval_sets=eval_sets, train_indices=train_idx, val_indices=val_idx, stages=stages,
            config=strategy_cfg, device=device, seed=seed, rank=self.world.rank,
            world_size=self.world.world_size, batch_size=int(cfg["trainer"]["batch_size"]),
            model=self.model.modules(), reporter=self.reporter, data_paths=dict(self.data_paths))

    # -- persistence ---------------------------------------------------------------------------
    def _manifest(self, ctx: RunContext, *, stage: int, step: int, finished: bool) -> dict[str, Any]:
        stages = []
        for i, mods in enumerate(ctx.stages):
            status = "done" if i < stage else ("running" if i == stage and not finished else "pending")
            stages.append({"index": i + 1, "modalities": mods, "status": status,
                           "steps": self.stage_steps.get(i, 0)})
        files = {}
        for rel in ["model.safetensors", "config.json", "config.yaml"]:
            if (self.run_dir / rel).exists():
                files[rel] = ck.sha256_file(self.run_dir / rel)
        origin = self.cfg["run"].get("from")
        if origin:
            for i in range(len(origin["stages"])):
                stages[i]["source"] = origin["ref"]
        return {
            "format": 1, "strategy": self.cfg["run"]["strategy"],
            "from": ({"ref": origin["ref"], "stages": origin["stages"], "strategy": origin.get("strategy")}
                     if origin else None), "modalities": self.cfg["run"]["modalities"],
            "stages": stages, "stages_done": [s["modalities"] for s in stages if s["status"] == "done"],
            "current": {"stage": stage + 1, "step": step}, "finished": finished,
            "config_hash": config_hash(self.cfg), "versions": package_versions(),
            "data": self.data_paths, "seed": self.cfg["run"]["seed"],
            "world_size": self.world.world_size, "files": files,
        }

    def _save(self, ctx: RunContext, *, stage: int, step: int, finished: bool = False) -> None:
        """Checkpoint: a complete ``checkpoint/`` directory swapped in atomically, then the
        top-level model, metrics and manifest (each an atomic file write)."""
        if not self.world.is_main:
            barrier()
            return
        tmp = Path(tempfile.mkdtemp(prefix=".checkpoint-", dir=self.run_dir))
        ck.save_tensors(tmp / "model.safetensors", self.model.state_dict(), metadata=MODEL_METADATA)
        if ctx.optimizer is not None:
            ck.save_optimizer(tmp, ctx.optimizer)
        ck.save_tensors(tmp / "rng.safetensors", ck.rng_state())
        s_tensors, s_meta = self.strategy.state_dict()
        ck.save_tensors(tmp / "strategy.safetensors", s_tensors)
        ck.atomic_write_json(tmp / "strategy.json", s_meta)
        ck.atomic_write_json(tmp / "trainer.json", {
            "stage": stage, "step": step, "finished": finished, "evaluations": self.evaluations,
            "stage_steps": {str(k): v for k, v in self.stage_steps.items()},
            "has_optimizer": ctx.optimizer is not None})
        ck.swap_directory(tmp, self.run_dir / CHECKPOINT_DIR)
        metrics = self.run_dir / "metrics"
        metrics.mkdir(exist_ok=True)
        ck.append_jsonl(metrics / "steps.jsonl", self.pending_steps)
        self.pending_steps = []
        write_evaluations(metrics, self.evaluations, self.cfg["run"]["modalities"])  # eval.json + matrix*.csv
        checkpointed = self.run_dir / CHECKPOINT_DIR / "model.safetensors"
        save_model(self.model, self.run_dir, self.cfg, weights=checkpointed)  # linked, not written twice
        if step == 0:  # stage boundaries only: what --from continues with (resume uses checkpoint/)
            strategy_dir = self.run_dir / "strategy"
            ck.save_tensors(strategy_dir / "state.safetensors", s_tensors)
            ck.atomic_write_json(strategy_dir / "state.json", s_meta)
        ck.atomic_write_json(self.run_dir / "manifest.json",
                             self._manifest(ctx, stage=stage, step=step, finished=finished))
        barrier()

    def _restore(self, ctx: RunContext) -> tuple[int, int, dict[str, Any] | None]:
        remove_incomplete(self.run_dir)
        found = ck.recover_directory(self.run_dir / CHECKPOINT_DIR)
        if found is None:
            raise CheckpointError(f"{self.run_dir} has no checkpoint/ to resume from; start it again "
                                  f"without --resume")
        trainer = ck.read_json(found / "trainer.json")
        load_model_state(self.model, found / "model.safetensors")
        self.strategy.load_state_dict(ck.load_tensors(found / "strategy.safetensors"),
                                      ck.read_json(found / "strategy.json"))
        self.evaluations = normalise_evaluations(trainer.get("evaluations", []))
        self.stage_steps = {int(k): v for k, v in trainer.get("stage_steps", {}).items()}
        self._truncate_steps_log(trainer["stage"], trainer["step"])
        self._resume_dir = found
        log.info("resuming %s at stage %d, step %d", self.run_dir, trainer["stage"] + 1, trainer["step"])
        return int(trainer["stage"]), int(trainer["step"]), trainer

    def _continue_from(self, ctx: RunContext) -> int:
        """Load the weights (and, where it was kept, the strategy state) of the model this run
        continues; returns the index of the first new stage."""
        from medkit.hub.hub import load_pretrained_weights

        origin = self.cfg["run"]["from"]
        src = Path(origin["path"])
        report = load_pretrained_weights(self.model, src)
        log.info("continuing %s: %d earlier stage(s) %s; fresh: %s", origin["ref"], len(origin["stages"]),
                 origin["stages"], ", ".join(report["new"]) or "nothing")
        state = src / "strategy" / "state.json"
        name = self.cfg["run"]["strategy"]
        if state.exists() and origin.get("strategy") == name:
            try:
                self.strategy.load_state_dict(ck.load_tensors(src / "strategy" / "state.safetensors"),
                                              ck.read_json(state))
            except (KeyError, ValueError, TypeError, CheckpointError) as exc:
                # a published repo ships only the parts of the state that carry no patient data
                log.info("%s ships only part of the %s state (%s): %s starts with no state from earlier "
                         "stages", origin["ref"], name, exc, name)
                self.strategy = self._fresh_strategy()
            else:
                log.info("restored the %s state of %s (buffers, teachers, Fisher, masks as kept)", name,
                         origin["ref"])
        elif state.exists():
            log.info("%s was trained with strategy %r, not %r: %s starts with no state from earlier stages",
                     origin["ref"], origin.get("strategy"), name, name)
        else:
            log.info("%s ships no strategy state: %s starts with no state from earlier stages "
                     "(no buffers, teachers or Fisher of them)", origin["ref"], name)
        eval_file = src / "metrics" / "eval.json"
        if eval_file.exists():
            self.evaluations = evaluations_before(ck.read_json(eval_file), len(origin["stages"]))
        for i in range(len(origin["stages"])):
            self.stage_steps.setdefault(i, 0)
        return len(origin["stages"])

    def _fresh_strategy(self) -> Any:
        from medkit.registry import create

        return create("strategy", self.cfg["run"]["strategy"], **dict(self.cfg["strategy"]))

    def _truncate_steps_log(self, stage: int, step: int) -> None:
        path = self.run_dir / "metrics" / "steps.jsonl"
        if not path.exists() or not self.world.is_main:
            return
        keep = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
                and (json.loads(line)["stage"] - 1, json.loads(line)["step"]) <= (stage, step)]
        ck.atomic_write_text(path, "".join(k + "\n" for k in keep))

    # -- the run -------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.world.is_main and not self.resume:
            if (self.run_dir / "manifest.json").exists():
                raise ConfigError(f"{self.run_dir} already holds a run; use --resume {self.run_dir} to "
                                  f"continue it or choose another --run-dir")
            ck.atomic_write_text(self.run_dir / "config.yaml", to_yaml(cfg))
        ctx = self._build()
        start_stage, start_step, trainer_state = 0, 0, None
        if self.resume:
            start_stage, start_step, trainer_state = self._restore(ctx)
        elif cfg["run"].get("from"):
            start_stage = self._continue_from(ctx)
        self.strategy.setup(ctx)
        info = RunInfo(run_dir=self.run_dir, config=cfg, stages=ctx.stages, resumed=self.resume)
        self.host.emit("run_start", run=info)
        if not self.resume:
            self._save(ctx, stage=0, step=0)  # every rank: _save ends on a barrier
        for si in range(start_stage, len(ctx.stages)):
            step0 = start_step if si == start_stage else 0
            self._run_stage(ctx, info, si, step0, trainer_state if si == start_stage else None)
            trainer_state = None
        matrix = stage_results(self.evaluations)
        results = {"run_dir": str(self.run_dir), "matrix": matrix}
        self.host.emit("run_end", run=info, results=results)
        return results

    def _run_stage(self, ctx: RunContext, info: RunInfo, si: int, start_step: int,
                   trainer_state: dict[str, Any] | None) -> None:
        tr, opt_cfg = self.cfg["trainer"], self.cfg["optim"]
        ctx.stage_index, ctx.step = si, start_step
        max_steps = int(tr["max_steps"]) if self.strategy.trains else 0
        ctx.max_steps = max_steps
        resumed_mid = trainer_state is not None and trainer_state.get("has_optimizer") and start_step > 0
        ctx.extras["resumed"] = bool(resumed_mid)
        if trainer_state is not None and not resumed_mid:
            ck.set_rng_state(ck.load_tensors(self._resume_dir / "rng.safetensors"))
        stage = StageInfo(index=si, modalities=list(ctx.stage), max_steps=max_steps, start_step=start_step)
        self.strategy.before_stage(ctx)
        self.host.emit("stage_start", run=info, stage=stage)

        named = [(n, p) for n, p in self.model.modules().named_parameters() if p.requires_grad]
        groups = param_groups(named, float(opt_cfg["weight_decay"])) + list(self.strategy.parameters_groups(ctx))
        global_batch = ctx.batch_size * self.world.world_size
        base_lr = opt_cfg["lr"] if opt_cfg.get("lr") is not None else opt_cfg["blr"] * global_batch / 256
        for g in groups:
            g.setdefault("lr_scale", 1.0)
        ctx.optimizer = torch.optim.AdamW(groups, lr=base_lr, betas=tuple(opt_cfg["betas"]))
        if resumed_mid:
            ck.load_optimizer(self._resume_dir, ctx.optimizer, ctx.device)
            ck.set_rng_state(ck.load_tensors(self._resume_dir / "rng.safetensors"))

        if start_step < max_steps:
            self._train_steps(ctx, info, stage, base_lr)
        self.stage_steps[si] = max_steps
        self.strategy.after_stage(ctx)
        record = evaluate_stage(ctx, self.strategy, trainer=tr)  # {"after_stage": si + 1, ...}
        self.evaluations.append(record)
        metrics = record["metrics"]
        ctx.optimizer = None
        last = si == len(ctx.stages) - 1
        self._save(ctx, stage=si + 1, step=0, finished=last)
        flat = {f"{m}/{k}": v for k, per in metrics.items() for m, v in per.items()}
        self.host.emit("stage_end", run=info, stage=stage, metrics=flat)

    def _train_steps(self, ctx: RunContext, info: RunInfo, stage: StageInfo, base_lr: float) -> None:
        tr, opt_cfg = self.cfg["trainer"], self.cfg["optim"]
        plan = StepPlan(self.strategy.sources(ctx), batch_size=ctx.batch_size, max_steps=ctx.max_steps,
                        seed=ctx.seed, stage=ctx.stage_index, rank=self.world.rank,
                        world_size=self.world.world_size)
        tokenizers = {m: ctx.encoder.tokenizers[t] for m, t in ctx.tokenizer_of.items()}
        batches = StepBatches(plan, ctx.train_sets, tokenizers, start_step=ctx.step)
        workers = int(tr.get("num_workers", 0))
        # its own generator: creating the iterator must not draw from the global RNG, or a resumed
        # run (which creates it mid-stage) would see a different random stream
        loader = torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False, num_workers=workers,
                                             persistent_workers=False,
                                             generator=torch.Generator().manual_seed(ctx.seed))
        trainable = [p for g in ctx.optimizer.param_groups for p in g["params"]]
        every = int(tr.get("checkpoint_every", 50))
        clip = opt_cfg.get("clip_grad")
        use_amp = bool(tr.get("amp")) and ctx.device.type == "cuda"
        desc = f"stage {ctx.stage_index + 1}/{len(ctx.stages)} [{'+'.join(ctx.stage)}]"
        if self.world.is_main:
            self.reporter.start(ctx.max_steps, desc, completed=ctx.step)
        ctx.model.train()
        for batch in loader:
            lr = lr_at(ctx.step, ctx.max_steps, base_lr=base_lr, min_lr=float(opt_cfg["min_lr"]),
                       warmup_fraction=float(opt_cfg["warmup_fraction"]))
            for g in ctx.optimizer.param_groups:
                g["lr"] = lr * g.get("lr_scale", 1.0)
            batch = batch.to(ctx.device)
            with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=use_amp):
                out = self.strategy.loss(ctx, batch)
            if not torch.isfinite(out.loss):
                raise ConfigError(f"stage {ctx.stage_index + 1} step {ctx.step + 1}: the loss is "
                                  f"{float(out.loss)} on a {batch.modality} batch; lower optim.lr "
                                  f"(now {lr:.3g}) or check the data")
            ctx.optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            average_gradients(trainable)
            self.strategy.after_backward(ctx)
            if clip:
                torch.nn.utils.clip_grad_norm_(trainable, float(clip))
            ctx.optimizer.step()
            ctx.step += 1
            metrics = {"loss": float(out.loss.detach()), "lr": lr, **out.metrics}
            self.pending_steps.append({"stage": ctx.stage_index + 1, "step": ctx.step,
                                       "modality": batch.modality, "role": batch.role, **metrics})
            if self.world.is_main:
                self.reporter.update(ctx.step, metrics)
            self.host.emit("step_end", run=info, stage=stage, step=ctx.step, metrics=metrics)
            if ctx.step % every == 0 and ctx.step < ctx.max_steps:
                self.stage_steps[ctx.stage_index] = ctx.step
                self._save(ctx, stage=ctx.stage_index, step=ctx.step)
        if self.world.is_main:
            self.reporter.finish()


def load_config(run_dir: Path) -> dict[str, Any]:
    """The resolved config saved in a run directory."""
    from medkit.config.compose import from_yaml

    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise CheckpointError(f"{run_dir} is not a medkit run directory (no config.yaml)")
    return from_yaml(path.read_text(encoding="utf-8"))


def remove_incomplete(run_dir: Path) -> None:
    """Remove the half-written checkpoint directories a crash left behind."""
    for p in Path(run_dir).glob(".checkpoint-*"):
        shutil.rmtree(p, ignore_errors=True)
