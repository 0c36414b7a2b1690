"""``medkit finetune``: train a task head and the encoder on labelled data (spec §8.1), keep the
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
    checkpoint/            resume state (model, optimizer, RNG, trainer), swapped in atomically
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch

from medkit.storage import files as ck
from medkit.config.compose import config_hash, to_yaml
from medkit.api.batch import Batch, Source
from medkit.engine.plan import StepPlan
from medkit.api.errors import CheckpointError, ConfigError
from medkit.finetune.backbones import build_backbone
from medkit.finetune.config import resolve_data
from medkit.api.progress import LogReporter, Reporter

log = logging.getLogger(__name__)
CHECKPOINT_DIR = "checkpoint"


def poly_lr(step: int, max_steps: int, base_lr: float, power: float = 0.9) -> float:
    """``base_lr · (1 − step / max_steps) ** power`` (spec §8.1; applied per step here)."""
    return base_lr * max(0.0, 1.0 - step / max(max_steps, 1)) ** power


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
        _, indices, aug = self.plan.step(self.start + i)
        samples = [self.dataset.load(j, seed=aug + k) for k, j in enumerate(indices)]
        return self.task.collate(samples, self.backbone)


class FinetuneSession:
    """The task, data splits and model of a fine-tuning config (shared by training and evaluation)."""

    def __init__(self, cfg: dict[str, Any], run_dir: Path, *, pretrained: bool, data: str | None = None,
                 class_names: list[str] | None = None) -> None:
        from medkit.registry import create

        self.cfg, self.run_dir = cfg, Path(run_dir)
        run = cfg["run"]
        self.seed = int(run["seed"])
        torch.manual_seed(self.seed)
        self.task = create("task", run["task"], dims=int(run["dims"]), modality=run["modality"], **cfg["task"])
        self.data = resolve_data(cfg, self.task, data)
        self.splits = self.task.splits(self.data, seed=self.seed)
        found = list(self.splits["train"].class_names or [])
        if class_names is not None and found != list(class_names):
            raise ConfigError(f"{self.data}: its classes {found} differ from the classes {list(class_names)} "
                              f"the run at {run_dir} was trained on")
        self.class_names = list(class_names) if class_names is not None else found
        maps = self.task.backbone_output == "maps"
        backbone = build_backbone(cfg, out_channels=self.task.out_channels(self.class_names), maps=maps,
                                  pretrained=pretrained, assets_dir=None if pretrained else self.run_dir)
        self.device = _device(str(cfg["trainer"].get("device", "auto")))
        self.model = self.task.build_model(backbone, self.class_names).to(self.device)
        self.backbone = backbone
        log.info("%s on %s: %s", run["task"], self.data,
                 ", ".join(f"{k} {len(v)}" for k, v in self.splits.items()))

    def batches(self, split: str) -> Iterator[Batch]:
        ds = self.splits[split]
        limit = self.cfg["trainer"].get("max_eval_samples")
        n = len(ds) if not limit else min(len(ds), int(limit))
        bs = int(self.task.eval_batch_size or self.cfg["trainer"].get("eval_batch_size")
                 or self.cfg["trainer"]["batch_size"])
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


def _floats(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}


class Finetuner:
    """Trains (or resumes) one fine-tuning run directory."""

    def __init__(self, cfg: dict[str, Any], run_dir: Path, *, reporter: Reporter | None = None,
                 resume: bool = False) -> None:
        self.cfg, self.run_dir, self.resume = cfg, Path(run_dir), resume
        self.reporter: Reporter = reporter or LogReporter(int(cfg["trainer"].get("log_every", 10)))
        self.pending: list[dict[str, Any]] = []
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.step = 0

    # -- persistence -------------------------------------------------------------------------
    def _save_checkpoint(self, s: FinetuneSession, opt: torch.optim.Optimizer, finished: bool) -> None:
        tmp = Path(tempfile.mkdtemp(prefix=".checkpoint-", dir=self.run_dir))
        ck.save_tensors(tmp / "model.safetensors", s.model.state_dict())
        ck.save_optimizer(tmp, opt)
        ck.save_tensors(tmp / "rng.safetensors", ck.rng_state())
        ck.atomic_write_json(tmp / "trainer.json", {"step": self.step, "best": self.best, "finished": finished,
                                                    "history": self.history})
        ck.swap_directory(tmp, self.run_dir / CHECKPOINT_DIR)
        metrics = self.run_dir / "metrics"
        metrics.mkdir(exist_ok=True)
        ck.append_jsonl(metrics / "steps.jsonl", self.pending)
        self.pending = []
        ck.atomic_write_text(metrics / "val.jsonl", "".join(json.dumps(h) + "\n" for h in self.history))

    def _restore(self, s: FinetuneSession, opt: torch.optim.Optimizer) -> bool:
        found = ck.recover_directory(self.run_dir / CHECKPOINT_DIR)
        if found is None:
            raise CheckpointError(f"{self.run_dir} has no checkpoint/ to resume from; start it again "
                                  f"without --resume")
        trainer = ck.read_json(found / "trainer.json")
        s.load_weights(found / "model.safetensors")
        ck.load_optimizer(found, opt, s.device)
        ck.set_rng_state(ck.load_tensors(found / "rng.safetensors"))
        self.step, self.best = int(trainer["step"]), trainer.get("best")
        self.history = list(trainer.get("history", []))
        steps = self.run_dir / "metrics" / "steps.jsonl"
        if steps.exists():
            keep = [ln for ln in steps.read_text(encoding="utf-8").splitlines()
                    if ln.strip() and json.loads(ln)["step"] <= self.step]
            ck.atomic_write_text(steps, "".join(k + "\n" for k in keep))
        log.info("resuming %s at step %d", self.run_dir, self.step)
        return bool(trainer.get("finished"))

    def _manifest(self, s: FinetuneSession, finished: bool) -> dict[str, Any]:
        from medkit.engine.engine import package_versions

        files = {rel: ck.sha256_file(self.run_dir / rel) for rel in
                 ("config.yaml", "model.safetensors", "best.safetensors") if (self.run_dir / rel).exists()}
        run = self.cfg["run"]
        return {"format": 1, "kind": "finetune", "task": run["task"], "modality": run["modality"],
                "dims": run["dims"], "backbone": self.cfg["backbone"]["name"], "from": run.get("from"),
                "data": str(s.data), "class_names": s.class_names, "step": self.step,
                "max_steps": int(self.cfg["trainer"]["max_steps"]), "finished": finished,
                "best_step": (self.best or {}).get("step"), "config_hash": config_hash(self.cfg),
                "versions": package_versions(), "files": files}

    # -- the run -------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        cfg, tr, oc = self.cfg, self.cfg["trainer"], self.cfg["optim"]
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if not self.resume:
            if (self.run_dir / "manifest.json").exists():
                raise ConfigError(f"{self.run_dir} already holds a run; use --resume {self.run_dir} to "
                                  f"continue it or choose another --run-dir")
            ck.atomic_write_text(self.run_dir / "config.yaml", to_yaml(cfg))
        s = FinetuneSession(cfg, self.run_dir, pretrained=not self.resume)
        enc = getattr(s.backbone, "encoder", None)
        if enc is not None and not self.resume:
            for name, tok in enc.tokenizers.items():
                if callable(getattr(tok, "save_pretrained", None)):
                    tok.save_pretrained(self.run_dir / "tokenizers" / name)
        params = [p for p in s.model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=float(oc["lr"]), betas=tuple(oc["betas"]),
                                weight_decay=float(oc["weight_decay"]))
        finished = self._restore(s, opt) if self.resume else False
        if not self.resume:
            ck.atomic_write_json(self.run_dir / "manifest.json", self._manifest(s, False))
        max_steps = int(tr["max_steps"])
        if not finished and self.step < max_steps:
            self._train(s, opt, max_steps)
        return self._finish(s, opt)

    def _train(self, s: FinetuneSession, opt: torch.optim.Optimizer, max_steps: int) -> None:
        tr, oc = self.cfg["trainer"], self.cfg["optim"]
        train = s.splits["train"]
        plan = StepPlan([Source("train", list(range(len(train))))], batch_size=int(tr["batch_size"]),
                        max_steps=max_steps, seed=s.seed, stage=0)
        # its own generator: creating the iterator must not draw from the global RNG (DropPath's),
        # or a resumed run would diverge from an uninterrupted one
        loader = torch.utils.data.DataLoader(_Steps(plan, train, s.task, s.backbone, self.step), batch_size=None,
                                             shuffle=False, num_workers=int(tr.get("num_workers", 0)),
                                             generator=torch.Generator().manual_seed(s.seed))
        clip = oc.get("clip_grad")
        val_every, ck_every = int(tr["val_every"]), int(tr["checkpoint_every"])
        self.reporter.start(max_steps, f"finetune [{self.cfg['run']['task']}:{self.cfg['run']['modality']}]",
                            completed=self.step)
        s.model.train()
        for batch in loader:
            lr = poly_lr(self.step, max_steps, float(oc["lr"]), float(oc.get("poly_power", 0.9)))
            for g in opt.param_groups:
                g["lr"] = lr
            out = s.task.loss(s.model, batch.to(s.device))
            if not torch.isfinite(out.loss):
                raise ConfigError(f"finetune step {self.step + 1}: the loss is {float(out.loss)}; lower "
                                  f"optim.lr (now {lr:.3g}) or check the data")
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(s.model.parameters(), float(clip))
            opt.step()
            self.step += 1
            metrics = {"loss": float(out.loss.detach()), "lr": lr, **_floats(out.metrics)}
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
            ck.save_tensors(self.run_dir / "best.safetensors", s.model.state_dict(),
                            metadata={"format": "medkit-finetune-1", "step": str(self.step)})
            self.best = {"step": self.step, "score": score, "metrics": metrics}

    def _finish(self, s: FinetuneSession, opt: torch.optim.Optimizer) -> dict[str, Any]:
        ck.save_tensors(self.run_dir / "model.safetensors", s.model.state_dict(),
                        metadata={"format": "medkit-finetune-1", "step": str(self.step)})
        if self.best is None:
            self._validate(s)
        self._save_checkpoint(s, opt, finished=True)
        s.load_weights(self.run_dir / "best.safetensors")
        test = s.evaluate("test")
        pictures = s.task.pictures(test, self.run_dir / "pictures", s.class_names)
        results = {"task": self.cfg["run"]["task"], "modality": self.cfg["run"]["modality"],
                   "class_names": s.class_names, "best_step": self.best["step"] if self.best else None,
                   "val": self.best["metrics"] if self.best else {}, "test": _floats(test["metrics"]),
                   "test_score": float(test["score"]), "steps": self.step, "history": self.history,
                   "pictures": [str(p.relative_to(self.run_dir)) for p in pictures]}
        ck.atomic_write_json(self.run_dir / "metrics.json", results)
        ck.atomic_write_json(self.run_dir / "manifest.json", self._manifest(s, True))
        log.info("test (best step %s): %s", results["best_step"],
                 " ".join(f"{k}={v:.4g}" for k, v in results["test"].items()))
        return results


def evaluate_run(run_dir: Path, *, data: str | None = None, split: str = "test",
                 weights: str = "best") -> dict[str, Any]:
    """Evaluate a finished fine-tuning run on a split of its data (or of ``data``); writes
    ``metrics/evaluate-<split>.json`` and ``pictures/evaluate-<split>/``."""
    from medkit.engine.engine import load_config

    run_dir = Path(run_dir)
    cfg = load_config(run_dir)
    if "task" not in cfg or "task" not in cfg.get("run", {}):
        raise CheckpointError(f"{run_dir} is not a `medkit finetune` run directory (its config has no task)")
    manifest = ck.read_json(run_dir / "manifest.json")
    path = run_dir / ("best.safetensors" if weights == "best" else "model.safetensors")
    if not path.exists():
        raise CheckpointError(f"{path} is missing; the run has not validated yet (resume it first)")
    s = FinetuneSession(cfg, run_dir, pretrained=False, data=data, class_names=manifest.get("class_names"))
    if split not in s.splits:
        raise ConfigError(f"unknown split {split!r}; choose one of {', '.join(s.splits)}")
    s.load_weights(path)
    result = s.evaluate(split)
    pictures = s.task.pictures(result, run_dir / "pictures" / f"evaluate-{split}", s.class_names)
    out = {"split": split, "data": str(s.data), "weights": path.name, "metrics": _floats(result["metrics"]),
           "score": float(result["score"]), "pictures": [str(p.relative_to(run_dir)) for p in pictures]}
    ck.atomic_write_json(run_dir / "metrics" / f"evaluate-{split}.json", out)
    return out
