"""What every experiment logger records of a run, named the same way in TensorBoard, W&B and MLflow."""

from __future__ import annotations

import importlib
import math
import os
from typing import Any, Callable, Mapping

#: the step record's keys that are not a loss term of one modality (logged once, for the whole step)
RUN_WIDE = ("loss", "lr")


def is_main_rank() -> bool:
    """Rank 0 of a distributed run (or the only process): loggers write on this rank only."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank() == 0
    except ImportError:  # pragma: no cover - torch is a dependency of medkit
        pass
    return int(os.environ.get("RANK", "0") or 0) == 0


def steps_per_stage(run: Any) -> int:
    """The optimizer steps of one stage (``trainer.max_steps``, the same for every stage of a run)."""
    return int(run.config.get("trainer", {}).get("max_steps", 0) or 0)


def global_step(run: Any, stage_index: int, step: int) -> int:
    """The x-axis of every curve: ``stage_index * trainer.max_steps + step`` (the stages side by side;
    stage ``i`` (0-based) covers ``i·max_steps + 1 … (i+1)·max_steps``)."""
    return stage_index * steps_per_stage(run) + step


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def step_scalars(metrics: Mapping[str, Any], modality: str) -> dict[str, float]:
    """The scalars of one optimizer step, by tag.

    ``train/loss`` and ``train/lr`` are the step's total loss and learning rate (whatever the batch);
    every other term is tagged by the modality of the step's batch: ``train/<modality>/<term>``
    (``train/xray/mae``, ``train/report/mlm``, ``train/xray/distill`` for a rehearsed X-ray batch),
    with ``train/<modality>/loss`` the total loss of that modality's steps. One curve per modality
    and loss kind: MLM, MAE and distillation losses never share a curve.

    Args:
        metrics: the step's ``{"loss", "lr", **terms}`` (the ``medkit_on_step_end`` payload).
        modality: the modality of the step's batch.
    """
    out: dict[str, float] = {}
    for name in RUN_WIDE:
        value = _finite(metrics.get(name))
        if value is not None:
            out[f"train/{name}"] = value
    loss = _finite(metrics.get("loss"))
    if loss is not None and modality:
        out[f"train/{modality}/loss"] = loss
    for name, value in metrics.items():
        f = _finite(value)
        if name not in RUN_WIDE and f is not None:
            out[f"train/{modality}/{name}" if modality else f"train/{name}"] = f
    return out


def stage_scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The held-out metrics after a stage, by tag: ``{"ct/pretext_loss": 0.8}`` becomes
    ``{"matrix/pretext_loss/ct": 0.8}`` (one row of the modality × stage matrix; n/a cells left out)."""
    out = {}
    for key, value in metrics.items():
        modality, _, metric = key.partition("/")
        f = _finite(value)
        if f is not None and metric:
            out[f"matrix/{metric}/{modality}"] = f
    return out


def stage_marker(stage: Any) -> dict[str, float]:
    """The scalars that mark a stage boundary: ``stage/index`` (1-based) at the stage's first step."""
    return {"stage/index": float(stage.index + 1)}


def stage_title(run: Any, stage: Any) -> str:
    """One line that names a stage: ``stage 2/3 [xray] (steps 101-200, resumed at 150)``."""
    first = global_step(run, stage.index, 1)
    last = global_step(run, stage.index, stage.max_steps)
    resumed = f", resumed at step {stage.start_step}" if stage.start_step else ""
    return (f"stage {stage.index + 1}/{len(run.stages)} [{'+'.join(stage.modalities)}] "
            f"(global steps {first}-{last}{resumed})")


def flat_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """The run's config as flat ``{"trainer.max_steps": "100", ...}`` strings (experiment trackers'
    parameters); a list is written as its JSON-like text, a missing value as ``"None"``."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_config(value, prefix=f"{name}."))
        else:
            out[name] = str(value)
    return out


def matrix_tables(matrix: Mapping[Any, Mapping[str, Mapping[str, Any]]]
                  ) -> dict[str, tuple[list[int], list[str], list[list[float | None]]]]:
    """``{metric: (stage numbers, modalities, values[row][col])}`` of a run's matrix
    (``{after_stage: {metric: {modality: value}}}``; a cell that was not measured is ``None``)."""
    rows_of = {int(k): v for k, v in matrix.items()}
    out = {}
    for metric in sorted({m for row in rows_of.values() for m in row}):
        rows = sorted(rows_of)
        cols: list[str] = []
        for r in rows:
            cols += [c for c in (rows_of[r].get(metric) or {}) if c not in cols]
        values = [[_finite((rows_of[r].get(metric) or {}).get(c)) for c in cols] for r in rows]
        out[metric] = (rows, cols, values)
    return out


def matrix_markdown(metric: str, rows: list[int], cols: list[str], values: list[list[float | None]]) -> str:
    """One matrix as a Markdown table (rows: after stage i; columns: modality; ``n/a`` cells)."""
    head = f"| {metric}: after stage | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols) + "\n"
    body = "".join(f"| {r} | " + " | ".join("n/a" if v is None else f"{v:.4g}" for v in vals) + " |\n"
                   for r, vals in zip(rows, values))
    return head + body


def observer_hooks(enabled: Callable[[], bool], logger: str) -> tuple[Callable[..., None], ...]:
    """The five run-event hooks of an experiment-logger plugin, each forwarding to the function of the
    same name (``run_start``, ``stage_start``, ``step_end``, ``stage_end``, ``run_end``) in the module
    ``logger`` while ``enabled()``. ``logger`` is imported on the first event only, so loading the
    plugin stays cheap. A plugin's hook module binds them to the hook names::

        (medkit_on_run_start, medkit_on_stage_start, medkit_on_step_end, medkit_on_stage_end,
         medkit_on_run_end) = observer_hooks(enabled, "my_plugin.logger")
    """
    from medkit.api.hookspecs import hookimpl

    def target() -> Any:
        return importlib.import_module(logger)

    @hookimpl
    def medkit_on_run_start(run: Any) -> None:
        if enabled():
            target().run_start(run)

    @hookimpl
    def medkit_on_stage_start(run: Any, stage: Any) -> None:
        if enabled():
            target().stage_start(run, stage)

    @hookimpl
    def medkit_on_step_end(run: Any, stage: Any, step: int, metrics: dict[str, float], modality: str) -> None:
        if enabled():
            target().step_end(run, stage, step, metrics, modality)

    @hookimpl
    def medkit_on_stage_end(run: Any, stage: Any, metrics: dict[str, float]) -> None:
        if enabled():
            target().stage_end(run, stage, metrics)

    @hookimpl
    def medkit_on_run_end(run: Any, results: dict[str, Any]) -> None:
        if enabled():
            target().run_end(run, results)

    return medkit_on_run_start, medkit_on_stage_start, medkit_on_step_end, medkit_on_stage_end, medkit_on_run_end
