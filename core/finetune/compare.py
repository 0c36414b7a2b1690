"""``medkit compare`` of fine-tuning runs: one row per backbone, one column group per dataset (ACC, AUC,
F1 or Dice, HD95 of the test split), "×" where the backbone cannot take the dataset's dimension — the
layout of supplement Table 2."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from medkit.api.components import Components
from medkit.api.errors import CheckpointError

#: Test metrics shown per task, in order; the ``%`` ones are scaled by 100 as in the paper.
COLUMNS = {"classification": ("acc", "auc", "f1"), "segmentation": ("dice", "hd95")}
PERCENT = {"acc", "auc", "f1", "dice"}
INCOMPATIBLE, MISSING = "×", "–"


def is_finetune_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` is a ``medkit finetune`` run directory (its manifest says so)."""
    from medkit.config.received import received_manifest

    path = Path(run_dir) / "manifest.json"
    try:
        return path.is_file() and received_manifest(path).get("kind") == "finetune"
    except Exception:  # noqa: BLE001 - an unreadable manifest is reported by the pre-training comparison
        return False


def backbone_label(cfg: dict[str, Any], components: Components) -> str:
    """The row name of a run: a released model's title, ``medkit (<pre-trained run>)`` or ``(scratch)``,
    or the timm / MONAI name."""
    from medkit.finetune.external import family, parse_spec

    name = str(cfg.get("backbone", {}).get("name") or "medkit")
    parsed = parse_spec(name, components)
    if parsed is not None:
        return family(parsed[0], components).title + ("" if parsed[1] else " (random init)")
    if name == "medkit":
        source = cfg["run"].get("from")
        return f"medkit ({Path(source).name})" if source else "medkit (scratch)"
    return name


def _dataset(cfg: dict[str, Any]) -> str:
    run = cfg["run"]
    return str(run.get("recipe") or f"{run['task']}:{run['modality']}")


def _dims_ok(label_spec: str, dims: int, components: Components) -> bool:
    from medkit.finetune.external import family, parse_spec

    parsed = parse_spec(label_spec, components)
    if parsed is not None:
        return int(dims) in family(parsed[0], components).dims
    return not (label_spec.startswith("timm:") and int(dims) != 2)


def read_run(run_dir: Path, components: Components) -> dict[str, Any]:
    """Backbone, dataset, task, dims and test metrics of a finished fine-tuning run."""
    from medkit.engine.engine import load_config
    from medkit.storage.files import read_json

    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        raise CheckpointError(f"{run_dir} has no metrics.json: the fine-tuning run has not finished; resume it "
                              f"(medkit finetune --resume {run_dir}) before comparing it")
    cfg = load_config(run_dir)
    metrics = read_json(metrics_path)
    return {"run": str(run_dir), "backbone": backbone_label(cfg, components),
            "spec": str(cfg["backbone"].get("name") or "medkit"),
            "dataset": _dataset(cfg), "task": cfg["run"]["task"], "dims": int(cfg["run"]["dims"]),
            "test": {k: float(v) for k, v in metrics.get("test", {}).items() if isinstance(v, (int, float))}}


def _fmt(key: str, values: Sequence[float]) -> str:
    good = [v for v in values if not math.isnan(v)]
    if not good:
        return MISSING
    mean = sum(good) / len(good)
    return f"{mean * 100:.2f}" if key in PERCENT else f"{mean:.2f}"


def compare_finetune(run_dirs: Sequence[Path], components: Components) -> dict[str, Any]:
    """The Table 2 comparison of ``run_dirs`` (``components``: the plugin host, which names the released
    backbones).

    Returns:
        ``{"header", "rows", "runs", "datasets"}``: ``header``/``rows`` are the table (several runs of one
        backbone on one dataset, e.g. seeds, are averaged); ``runs`` every run's test metrics.
    """
    runs = [read_run(Path(d), components) for d in run_dirs]
    datasets: dict[str, dict[str, Any]] = {}
    backbones: dict[str, str] = {}
    for r in runs:
        datasets.setdefault(r["dataset"], {"task": r["task"], "dims": r["dims"]})
        backbones.setdefault(r["backbone"], r["spec"])
    header = ["backbone"]
    for name, info in datasets.items():
        header += [f"{name} {k.upper()}" for k in COLUMNS.get(info["task"], ())]
    rows = []
    for label, spec in backbones.items():
        row = [label]
        for name, info in datasets.items():
            keys = COLUMNS.get(info["task"], ())
            mine = [r for r in runs if r["backbone"] == label and r["dataset"] == name]
            if not mine:
                row += [MISSING if _dims_ok(spec, info["dims"], components) else INCOMPATIBLE] * len(keys)
                continue
            row += [_fmt(k, [r["test"].get(k, math.nan) for r in mine]) for k in keys]
        rows.append(row)
    return {"header": header, "rows": rows, "runs": runs, "datasets": datasets}


def finetune_kinds(run_dirs: Sequence[Path]) -> list[bool]:
    """Which of ``run_dirs`` are fine-tuning runs; a mix of both kinds is a :class:`ConfigError`."""
    from medkit.api.errors import ConfigError

    kinds = [is_finetune_run(Path(d)) for d in run_dirs]
    if any(kinds) and not all(kinds):
        raise ConfigError("medkit compare: the runs mix fine-tuning runs (medkit finetune) and pre-training runs "
                          "(medkit run); compare each kind separately")
    return kinds


def write_finetune_comparison(path: Path, table: dict[str, Any]) -> Path:
    """``.json``: every run's test metrics and the table; ``.md``: the table and what × and – mean."""
    from medkit.eval.report import markdown_table
    from medkit.storage.files import atomic_write_json, atomic_write_text

    path = Path(path)
    if path.suffix == ".json":
        atomic_write_json(path, table)
    else:
        note = f"\n\n{INCOMPATIBLE} : the backbone cannot take the dataset's dimension; {MISSING} : not run\n"
        atomic_write_text(path, markdown_table(table["header"], table["rows"]) + note)
    return path
