"""``medkit evaluate``: a finished fine-tuning run on a split of its data (or of other data)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medkit.api.components import Components
from medkit.api.errors import CheckpointError, ConfigError
from medkit.finetune.trainer import FinetuneSession, _floats
from medkit.storage import files as ck
from medkit.storage.lock import run_lock


def evaluate_run(run_dir: Path, *, data: str | None = None, split: str = "test",
                 weights: str = "best", components: Components) -> dict[str, Any]:
    """Evaluate a finished fine-tuning run on a split of its data (or of ``data``); writes
    ``metrics/evaluate-<split>.json`` and ``pictures/evaluate-<split>/``."""
    from medkit.engine.engine import load_config

    run_dir = Path(run_dir)
    with run_lock(run_dir, "evaluate"):
        return _evaluate_run(run_dir, load_config(run_dir), data=data, split=split, weights=weights,
                             components=components)


def _evaluate_run(run_dir: Path, cfg: dict[str, Any], *, data: str | None, split: str,
                  weights: str, components: Components) -> dict[str, Any]:
    if "task" not in cfg or "task" not in cfg.get("run", {}):
        raise CheckpointError(f"{run_dir} is not a `medkit finetune` run directory (its config has no task)")
    from medkit.config.received import received_manifest

    manifest = received_manifest(run_dir / "manifest.json")
    path = run_dir / ("best.safetensors" if weights == "best" else "model.safetensors")
    if not path.exists():
        raise CheckpointError(f"{path} is missing; the run has not validated yet (resume it first)")
    s = FinetuneSession(cfg, run_dir, pretrained=False, data=data, class_names=manifest.get("class_names"),
                        components=components)
    if split not in s.splits:
        raise ConfigError(f"unknown split {split!r}; choose one of {', '.join(s.splits)}")
    s.load_weights(path)
    result = s.evaluate(split)
    pictures = s.task.pictures(result, run_dir / "pictures" / f"evaluate-{split}", s.class_names)
    out = {"split": split, "data": str(s.data), "weights": path.name, "metrics": _floats(result["metrics"]),
           "score": float(result["score"]), "pictures": [str(p.relative_to(run_dir)) for p in pictures]}
    ck.atomic_write_json(run_dir / "metrics" / f"evaluate-{split}.json", out)
    return out
