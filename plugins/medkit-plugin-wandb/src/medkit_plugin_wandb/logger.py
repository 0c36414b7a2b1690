"""One W&B run per medkit run directory, fed by the event hooks (rank 0 only)."""

from __future__ import annotations

import atexit
import json
import logging
import netrc
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medkit.api import (atomic_write_text, global_step, is_main_rank, matrix_tables, stage_marker, stage_scalars,
                        stage_title, step_scalars)

log = logging.getLogger(__name__)
#: the W&B run id of a medkit run, kept in the run directory so ``--resume`` continues the same W&B run
RECORD = "wandb.json"
#: every curve's x-axis (a W&B metric of its own, so stages of a resumed run land where they belong)
STEP = "global_step"


@dataclass
class _Open:
    run: Any
    matrix: dict[int, dict[str, dict[str, float]]] = field(default_factory=dict)


_RUNS: dict[Path, _Open] = {}


def has_api_key() -> bool:
    """Whether this machine can reach W&B as someone: ``WANDB_API_KEY`` or a ``~/.netrc`` entry
    (what ``wandb login`` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        entries = netrc.netrc().hosts
    except (OSError, netrc.NetrcParseError):
        return False
    return any("wandb" in host for host in entries)


def mode() -> str:
    """``WANDB_MODE`` when set; else ``online`` with an API key and ``offline`` without one (the run
    is kept in ``RUN/wandb/`` for ``wandb sync``), so a run never stops to ask for a login."""
    return os.environ.get("WANDB_MODE") or ("online" if has_api_key() else "offline")


def run_start(run: Any) -> None:
    """Start the W&B run (or continue the one this run directory recorded) with the config."""
    if not is_main_rank():
        return
    import wandb

    key = Path(run.run_dir)
    record = key / RECORD
    saved = json.loads(record.read_text(encoding="utf-8")) if run.resumed and record.is_file() else {}
    stages = " → ".join("+".join(s) for s in run.stages)
    wb = wandb.init(project=os.environ.get("WANDB_PROJECT") or "medkit", dir=str(key), name=key.name,
                    id=saved.get("id"), resume="allow" if saved else None, mode=mode(),  # type: ignore[arg-type]
                    config=dict(run.config), notes=f"medkit run {key.resolve()}: stages {stages}",
                    tags=[str(run.config.get("run", {}).get("strategy"))], reinit="create_new")
    wb.define_metric(STEP)
    wb.define_metric("*", step_metric=STEP)
    if not saved:
        atomic_write_text(record, json.dumps({"id": wb.id, "project": wb.project}, indent=2) + "\n")
    _RUNS[key] = _Open(wb)
    log.info("wandb: logging run %s (%s mode) under %s", wb.id, mode(), key / "wandb")


def _log(opened: _Open, scalars: dict[str, Any], at: int) -> None:
    opened.run.log({**scalars, STEP: at})


def stage_start(run: Any, stage: Any) -> None:
    """A stage boundary: ``stage/index`` at the stage's first global step, and its title in the summary."""
    opened = _RUNS.get(Path(run.run_dir)) if is_main_rank() else None
    if opened is None:
        return
    _log(opened, stage_marker(stage), global_step(run, stage.index, stage.start_step + 1))
    opened.run.summary[f"stage/{stage.index + 1}"] = stage_title(run, stage)


def step_end(run: Any, stage: Any, step: int, metrics: dict[str, float], modality: str) -> None:
    """``train/loss``, ``train/lr`` and ``train/<modality>/<term>`` at the global step."""
    opened = _RUNS.get(Path(run.run_dir)) if is_main_rank() else None
    if opened is not None:
        _log(opened, step_scalars(metrics, modality), global_step(run, stage.index, step))


def _tables(matrix: dict[Any, Any]) -> dict[str, Any]:
    import wandb

    out = {}
    for metric, (rows, cols, values) in matrix_tables(matrix).items():
        out[f"matrix/{metric}"] = wandb.Table(columns=["after stage", *cols],
                                              data=[[r, *vals] for r, vals in zip(rows, values)])
    return out


def stage_end(run: Any, stage: Any, metrics: dict[str, float]) -> None:
    """The held-out metrics after the stage (``matrix/<metric>/<modality>``) and the matrices so far
    as tables (``matrix/<metric>``)."""
    opened = _RUNS.get(Path(run.run_dir)) if is_main_rank() else None
    if opened is None:
        return
    row = opened.matrix.setdefault(stage.index + 1, {})
    for key, value in metrics.items():
        modality, _, metric = key.partition("/")
        row.setdefault(metric, {})[modality] = value
    _log(opened, {**stage_scalars(metrics), **_tables(opened.matrix)}, global_step(run, stage.index + 1, 0))


def run_end(run: Any, results: dict[str, Any]) -> None:
    """The final matrices as tables (and in the summary); the W&B run is finished."""
    opened = _RUNS.pop(Path(run.run_dir), None) if is_main_rank() else None
    if opened is None:
        return
    try:
        matrix = results.get("matrix") or {}
        _log(opened, _tables(matrix), global_step(run, len(run.stages), 0))
        opened.run.summary["matrix"] = {str(k): v for k, v in matrix.items()}
    finally:
        opened.run.finish()


@atexit.register
def _close_all() -> None:
    """A run that ends in an error: the W&B run is finished as failed, with what was logged."""
    for opened in list(_RUNS.values()):
        try:
            opened.run.finish(exit_code=1)
        except Exception:  # exiting anyway
            log.debug("wandb: could not finish run", exc_info=True)
    _RUNS.clear()
