"""``medkit finetune``: train a task head and the encoder on labelled data, keep the
checkpoint that scores best on the validation split, test it once, and write metrics and pictures.

Run directory::

    config.yaml            the resolved fine-tuning config (rebuilds everything with the run dir)
    manifest.json          task, data, classes, steps, best step, versions, file hashes
    model.safetensors      the last weights (keys ``backbone.*`` and the head's)
    best.safetensors       the weights that scored best on the validation split
    metrics.json           best validation metrics, test metrics of the best weights, history
    metrics/steps.jsonl    loss and lr of every step; metrics/val.jsonl every validation
    pictures/*.png         confusion matrix (classification) or overlays (segmentation)
    tokenizers/<name>/     tokenizer assets (vocabularies)
    checkpoint/            resume state (model, optimizer, RNG, trainer, best weights), swapped in atomically
    .medkit.lock           held by the one process writing the run (see medkit.storage.lock)

A run killed before its first checkpoint is started over in place (fresh or ``--resume``); ``--resume``
of a finished run changes nothing (docs/run-safety.md).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch

from medkit.api.components import Components
from medkit.storage import files as ck
from medkit.storage.jsonl import append_jsonl, truncate_jsonl
from medkit.storage.leftovers import sweep_leftovers
from medkit.storage.lock import run_lock
from medkit.config.compose import config_hash, to_yaml
from medkit.config.received import received_manifest
from medkit.api.batch import Batch, Source
from medkit.engine.plan import StepPlan
from medkit.engine.schedule import poly_lr
from medkit.engine.step import TrainStep
from medkit.api.errors import CheckpointError, ConfigError
from medkit.finetune.backbones import build_backbone
from medkit.finetune.config import FinetuneSettings, resolve_data
from medkit.finetune.leakage import check_pretraining_overlap
from medkit.finetune.recipes import run_notes
from medkit.api.progress import LogReporter, Reporter

log = logging.getLogger(__name__)
CHECKPOINT_DIR = "checkpoint"
BEST_FILE = "best.safetensors"
BEST_PENDING = ".best-pending.safetensors"


def _device(want: str) -> torch.device:
    if want == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(want)


class _Steps(torch.utils.data.Dataset):
    """Item ``i`` is the whole batch of step ``start + i`` (a pure function of seed and step)."""

    def __init__(self, plan: StepPlan, dataset: Any, task: Any, backbone: Any, start: int) -> None:
        self.plan, self.dataset, self.task, self.backbone, self.start = plan, dataset, task, backbone, start

    def __len__(self) -> int:
        return len(self.plan) - self.start

    def __getitem__(self, i: int) -> Batch:
        _, indices, seeds = self.plan.step(self.start + i)
        samples = [self.dataset.load(j, seed=s) for j, s in zip(indices, seeds)]
        batch = self.task.collate(samples, self.backbone)
        batch.seeds = seeds
        return batch


def _fusion_cnn(cfg: dict[str, Any], backbone: Any, pretrained: bool, components: Components) -> dict[str, Any]:
    """``{"fusion_cnn": DeSD's ResUNet}`` for ``task.fusion=desd:PATH`` (supplement D), else ``{}``."""
    from medkit.finetune.external import build_fusion_cnn, parse_spec

    fusion = cfg["task"].get("fusion")
    if not isinstance(fusion, str) or parse_spec(fusion, components) is None:
        return {}
    return {"fusion_cnn": build_fusion_cnn(fusion, int(cfg["run"]["dims"]), in_channels=int(backbone.in_chans),
                                           out_channels=int(cfg["task"].get("fusion_channels", 32)),
                                           components=components, pretrained=pretrained)}


class FinetuneSession:
    """The task, data splits and model of a fine-tuning config (shared by training and evaluation)."""

    def __init__(self, cfg: dict[str, Any], run_dir: Path, *, pretrained: bool, data: str | None = None,
                 class_names: list[str] | None = None, components: Components) -> None:
        host = components  # the plugin host the caller hands in
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.settings = FinetuneSettings.of(cfg)
        run = cfg["run"]
        self.seed = int(run["seed"])
        torch.manual_seed(self.seed)
        self.task = host.create("task", run["task"], dims=int(run["dims"]), modality=run["modality"], **cfg["task"])
        self.data = resolve_data(cfg, self.task, data)
        self.splits = self.task.splits(self.data, seed=self.seed)
        # the pre-training run's held-out sources stay held out (medkit.finetune.leakage)
        self.overlap = check_pretraining_overlap(
            run.get("from"), self.data, self.splits,
            allow=self.settings.trainer.allow_pretraining_overlap)
        found = list(self.splits["train"].class_names or [])
        if class_names is not None and found != list(class_names):
            raise ConfigError(f"{self.data}: its classes {found} differ from the classes {list(class_names)} "
                              f"the run at {run_dir} was trained on")
        self.class_names = list(class_names) if class_names is not None else found
        maps = self.task.backbone_output == "maps"
        backbone = build_backbone(cfg, out_channels=self.task.out_channels(self.class_names), maps=maps,
                                  pretrained=pretrained, assets_dir=None if pretrained else self.run_dir,
                                  components=host)
        self.device = _device(self.settings.trainer.device)
        fusion = _fusion_cnn(cfg, backbone, pretrained, host)
        self.model = self.task.build_model(backbone, self.class_names, **fusion).to(self.device)
        self.backbone = backbone
        self.notes = run_notes(cfg, self.task, self.class_names, demo=not (data or run.get("data")), host=host)
        log.info("%s on %s: %s", run["task"], self.data,
                 ", ".join(f"{k} {len(v)}" for k, v in self.splits.items()))

    def batches(self, split: str) -> Iterator[Batch]:
        ds = self.splits[split]
        tr = self.settings.trainer
        limit = tr.max_eval_samples
        n = len(ds) if not limit else min(len(ds), int(limit))
        bs = int(self.task.eval_batch_size or tr.eval_batch_size or tr.batch_size)
        for k in range(0, n, bs):
            samples = [ds.load(i, seed=None) for i in range(k, min(k + bs, n))]
            yield self.task.collate(samples, self.backbone).to(self.device)

    def evaluate(self, split: str) -> dict[str, Any]:
        was = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                result = self.task.evaluate(self.model, self.batches(split), self.class_names)
            return {**result, "split": split}  # pictures and reports name the split they show
        finally:
            self.model.train(was)

    def load_weights(self, path: Path) -> None:
        ck.load_state_checked(self.model, ck.load_tensors(path, self.device), source=str(path))


def _weights_record(s: FinetuneSession) -> dict[str, Any] | None:
    """Where a released backbone's weights came from and how its keys mapped (``None`` otherwise)."""
    report = getattr(s.backbone, "key_report", None)
    if report is None:
        return None
    return {"family": report.family, "source": report.source, "released": report.released,
            "converted": len(report.converted), "dropped": len(report.dropped), "coverage": report.coverage}


def _floats(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}


class Finetuner:
    """Trains (or resumes) one fine-tuning run directory."""

    def __init__(self, cfg: dict[str, Any], run_dir: Path, *, reporter: Reporter | None = None,
                 resume: bool = False, components: Components) -> None:
        self.cfg, self.run_dir, self.resume = cfg, Path(run_dir), resume
        self.settings = FinetuneSettings.of(cfg)  # the typed sections (their defaults: medkit.finetune.config)
        self.components = components
        self.reporter: Reporter = reporter or LogReporter(self.settings.trainer.log_every)
        self.pending: list[dict[str, Any]] = []
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.step = 0

    # -- persistence -------------------------------------------------------------------------
    # Order of a checkpoint (crash-consistent): the step log and val.jsonl first (rows past the
    # checkpoint are cut at resume), then checkpoint/ (weights, optimizer, RNG, trainer state and the
    # best weights so far) swapped in as one directory, then best.safetensors linked from it.
    def _save_checkpoint(self, s: FinetuneSession, opt: torch.optim.Optimizer, finished: bool) -> None:
        metrics = self.run_dir / "metrics"
        append_jsonl(metrics / "steps.jsonl", self.pending)
        self.pending = []
        ck.atomic_write_text(metrics / "val.jsonl", "".join(json.dumps(h) + "\n" for h in self.history))
        final = self.run_dir / CHECKPOINT_DIR
        tmp = Path(tempfile.mkdtemp(prefix=".checkpoint-", dir=self.run_dir))
        pending, previous = self.run_dir / BEST_PENDING, ck.recover_directory(final)
        try:
            ck.save_tensors(tmp / "model.safetensors", s.model.state_dict(), metadata=self._metadata())
            ck.save_optimizer(tmp, opt)
            ck.save_tensors(tmp / "rng.safetensors", ck.rng_state())
            if pending.exists():
                ck.atomic_link(pending, tmp / BEST_FILE)
            elif previous is not None and (previous / BEST_FILE).exists():
                ck.atomic_link(previous / BEST_FILE, tmp / BEST_FILE)
            ck.atomic_write_json(tmp / "trainer.json", {"step": self.step, "best": self.best,
                                                        "finished": finished, "history": self.history})
            ck.swap_directory(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # a failed checkpoint (full disk) leaves no staging copy
            raise
        if (final / BEST_FILE).exists():
            ck.atomic_link(final / BEST_FILE, self.run_dir / BEST_FILE)
        pending.unlink(missing_ok=True)

    def _metadata(self) -> dict[str, str]:
        return {"format": "medkit-finetune-1", "step": str(self.step)}

    def _restore(self, s: FinetuneSession, opt: torch.optim.Optimizer) -> bool:
        found = ck.recover_directory(self.run_dir / CHECKPOINT_DIR)
        if found is None:  # run() restarts a run with no checkpoint before it gets here
            raise CheckpointError(f"{self.run_dir} has no checkpoint/ to resume from")
        trainer = ck.read_json(found / "trainer.json")
        s.load_weights(found / "model.safetensors")
        ck.load_optimizer(found, opt, s.device)
        ck.set_rng_state(ck.load_tensors(found / "rng.safetensors"))
        self.step, self.best = int(trainer["step"]), trainer.get("best")
        self.history = list(trainer.get("history", []))
        metrics = self.run_dir / "metrics"
        truncate_jsonl(metrics / "steps.jsonl", lambda r: int(r.get("step", 0)) <= self.step)
        ck.atomic_write_text(metrics / "val.jsonl", "".join(json.dumps(h) + "\n" for h in self.history))
        (self.run_dir / BEST_PENDING).unlink(missing_ok=True)
        if (found / BEST_FILE).exists():  # the best weights as of the checkpoint, not of a later validation
            ck.atomic_link(found / BEST_FILE, self.run_dir / BEST_FILE)
        log.info("resuming %s at step %d", self.run_dir, self.step)
        return bool(trainer.get("finished"))

    def _state(self) -> tuple[str, dict[str, Any]]:
        """What the run directory holds: ``empty``, ``unstarted`` (stopped before its first
        checkpoint), ``checkpointed``, ``finished`` (checkpoint, manifest and metrics all final)."""
        found = ck.recover_directory(self.run_dir / CHECKPOINT_DIR)
        held = [f for f in ("manifest.json", "config.yaml", CHECKPOINT_DIR) if (self.run_dir / f).exists()]
        if held and not self._is_finetune():
            raise ConfigError(f"{self.run_dir} holds {', '.join(held)} of something that is not a `medkit "
                              f"finetune` run; choose another --run-dir (nothing was changed)")
        if found is None or not (found / "trainer.json").exists():
            return ("unstarted" if held else "empty"), {}
        trainer = ck.read_json(found / "trainer.json")
        manifest = self.run_dir / "manifest.json"
        if trainer.get("finished") and manifest.exists() and received_manifest(manifest).get("finished") \
                and (self.run_dir / "metrics.json").exists():
            return "finished", trainer
        return "checkpointed", trainer

    def _is_finetune(self) -> bool:
        manifest = self.run_dir / "manifest.json"
        if manifest.exists():
            return received_manifest(manifest).get("kind") == "finetune"
        if not (self.run_dir / "config.yaml").exists():
            return False  # a checkpoint/ with neither: not ours to clear
        from medkit.engine.engine import load_config

        try:
            return "task" in load_config(self.run_dir).get("run", {})
        except Exception:  # noqa: BLE001 - unreadable: certainly not a fine-tune to start over
            return False

    def _clear(self) -> None:
        """Remove what a run that never reached a checkpoint left (it is started over in place)."""
        for p in self.run_dir.glob(".checkpoint-*"):
            shutil.rmtree(p, ignore_errors=True)
        for rel in ("manifest.json", "metrics.json", "model.safetensors", BEST_FILE, BEST_PENDING,
                    "metrics/steps.jsonl", "metrics/val.jsonl"):
            (self.run_dir / rel).unlink(missing_ok=True)
        for rel in ("pictures", "tokenizers"):
            shutil.rmtree(self.run_dir / rel, ignore_errors=True)

    def _prepare(self) -> tuple[bool, dict[str, Any] | None]:
        """Check the run directory against the mode: ``(fresh, results)`` where ``fresh`` means
        start from step 0 and ``results`` are those of a run that already finished."""
        state, trainer = self._state()
        where = self.run_dir
        if state == "finished" and self.resume:
            log.info("%s already finished at step %s; nothing to resume", where, trainer.get("step"))
            return False, {**ck.read_json(where / "metrics.json"), "already_finished": True}
        if state == "finished":
            raise ConfigError(f"{where} already holds a finished fine-tune; choose another --run-dir (or "
                              f"`medkit evaluate {where}`)")
        if state == "checkpointed" and not self.resume:
            raise ConfigError(f"{where} already holds a fine-tune at step {trainer.get('step')} of "
                              f"{self.settings.trainer.max_steps}; use --resume {where} to continue it or "
                              f"choose another --run-dir")
        if state == "unstarted":
            log.warning("%s holds a fine-tune that stopped before its first checkpoint; starting it over "
                        "in place from step 0%s", where, " with its config.yaml" if self.resume else "")
            self._clear()
        return state != "checkpointed", None

    def _manifest(self, s: FinetuneSession, finished: bool) -> dict[str, Any]:
        from medkit.engine.checkpoint import package_versions

        files = {rel: ck.sha256_file(self.run_dir / rel) for rel in
                 ("config.yaml", "model.safetensors", "best.safetensors") if (self.run_dir / rel).exists()}
        run = self.cfg["run"]
        return {"format": 1, "kind": "finetune", "task": run["task"], "modality": run["modality"],
                "dims": run["dims"], "backbone": self.cfg["backbone"]["name"], "from": run.get("from"),
                "data": str(s.data), "class_names": s.class_names, "step": self.step,
                "max_steps": self.settings.trainer.max_steps, "finished": finished,
                "best_step": (self.best or {}).get("step"), "config_hash": config_hash(self.cfg),
                "backbone_weights": _weights_record(s), "notes": s.notes,
                "versions": package_versions(), "files": files}

    # -- the run -------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Train (or resume) the run; holds the run directory's lock throughout."""
        with run_lock(self.run_dir, "finetune --resume" if self.resume else "finetune"):
            return self._run()

    def _run(self) -> dict[str, Any]:
        cfg, tr, oc = self.cfg, self.settings.trainer, self.settings.optim
        fresh, done = self._prepare()
        if done is None:  # what an interrupted write or checkpoint left (never in a finished run)
            sweep_leftovers(self.run_dir, folders=(r"\.checkpoint-[^/]+",) + (
                (rf"{CHECKPOINT_DIR}\.old",) if (self.run_dir / CHECKPOINT_DIR).is_dir() else ()),
                places=("", "metrics", CHECKPOINT_DIR))
        if done is not None:
            return done
        if fresh:
            ck.atomic_write_text(self.run_dir / "config.yaml", to_yaml(cfg))
        s = FinetuneSession(cfg, self.run_dir, pretrained=fresh, components=self.components)
        enc = getattr(s.backbone, "encoder", None)
        if enc is not None and fresh:
            for name, tok in enc.tokenizers.items():
                if callable(getattr(tok, "save_pretrained", None)):
                    tok.save_pretrained(self.run_dir / "tokenizers" / name)
        params = [p for p in s.model.parameters() if p.requires_grad]
        betas = (float(oc.betas[0]), float(oc.betas[1]))
        opt = torch.optim.AdamW(params, lr=oc.lr, betas=betas, weight_decay=oc.weight_decay)
        finished = False if fresh else self._restore(s, opt)
        if fresh:
            ck.atomic_write_json(self.run_dir / "manifest.json", self._manifest(s, False))
        max_steps = tr.max_steps
        if not finished and self.step < max_steps:
            self._train(s, opt, max_steps)
        return self._finish(s, opt)

    def _train(self, s: FinetuneSession, opt: torch.optim.Optimizer, max_steps: int) -> None:
        tr, oc = self.settings.trainer, self.settings.optim
        train = s.splits["train"]
        plan = StepPlan([Source("train", list(range(len(train))))], batch_size=tr.batch_size,
                        max_steps=max_steps, seed=s.seed, stage=0)
        # its own generator: creating the iterator must not draw from the global RNG (DropPath's),
        # or a resumed run would diverge from an uninterrupted one
        loader = torch.utils.data.DataLoader(_Steps(plan, train, s.task, s.backbone, self.step), batch_size=None,
                                             shuffle=False, num_workers=tr.num_workers,
                                             generator=torch.Generator().manual_seed(s.seed))
        # the one training-step primitive every loop uses (medkit.engine.step)
        step = TrainStep(opt, params=[p for g in opt.param_groups for p in g["params"]], device=s.device,
                         clip_grad=oc.clip_grad, amp=False,  # fine-tuning's trainer has no amp key
                         describe=lambda b: f"finetune batch {', '.join(b.ids[:4])}")
        val_every, ck_every = tr.val_every, tr.checkpoint_every
        self.reporter.start(max_steps, f"finetune [{self.cfg['run']['task']}:{self.cfg['run']['modality']}]",
                            completed=self.step)
        s.model.train()
        for batch in loader:
            lr = poly_lr(self.step, max_steps, oc.lr, oc.poly_power)
            out = step(lambda b: s.task.loss(s.model, b), batch, lr=lr)
            self.step += 1
            values = out.values()  # one host sync per step (the check already ran before backward)
            metrics = {"loss": values.pop("loss"), "lr": lr, **_floats(values)}
            self.pending.append({"step": self.step, **metrics})
            self.reporter.update(self.step, metrics)
            validated = False
            if self.step % val_every == 0 or self.step == max_steps:
                self._validate(s)
                validated = True
            if validated or self.step % ck_every == 0:
                self._save_checkpoint(s, opt, finished=False)
        self.reporter.finish()

    def _validate(self, s: FinetuneSession) -> None:
        result = s.evaluate("val")
        metrics, score = _floats(result["metrics"]), float(result["score"])
        self.history.append({"step": self.step, "score": score, **metrics})
        log.info("step %d: validation %s", self.step, " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        if self.best is None or score > float(self.best["score"]):
            # pending until the next checkpoint takes it in (best.safetensors never runs ahead of it)
            ck.save_tensors(self.run_dir / BEST_PENDING, s.model.state_dict(), metadata=self._metadata())
            self.best = {"step": self.step, "score": score, "metrics": metrics}

    def _finish(self, s: FinetuneSession, opt: torch.optim.Optimizer) -> dict[str, Any]:
        if self.best is None:
            self._validate(s)
        self._save_checkpoint(s, opt, finished=True)
        ck.atomic_link(self.run_dir / CHECKPOINT_DIR / "model.safetensors", self.run_dir / "model.safetensors")
        s.load_weights(self.run_dir / BEST_FILE)
        test = s.evaluate("test")
        pictures = s.task.pictures(test, self.run_dir / "pictures", s.class_names)
        results = {"task": self.cfg["run"]["task"], "modality": self.cfg["run"]["modality"],
                   "class_names": s.class_names, "best_step": self.best["step"] if self.best else None,
                   "val": self.best["metrics"] if self.best else {}, "test": _floats(test["metrics"]),
                   "test_score": float(test["score"]), "steps": self.step, "history": self.history,
                   "pictures": [str(p.relative_to(self.run_dir)) for p in pictures], "notes": s.notes}
        ck.atomic_write_json(self.run_dir / "metrics.json", results)
        ck.atomic_write_json(self.run_dir / "manifest.json", self._manifest(s, True))
        log.info("test (best step %s): %s", results["best_step"],
                 " ".join(f"{k}={v:.4g}" for k, v in results["test"].items()))
        return results
