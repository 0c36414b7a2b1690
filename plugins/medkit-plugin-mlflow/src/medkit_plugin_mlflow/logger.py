"""One MLflow run per medkit run directory, fed by the event hooks (rank 0 only)."""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medkit.api import (atomic_write_text, flat_config, global_step, is_main_rank, matrix_markdown, matrix_tables,
                        stage_marker, stage_scalars, stage_title, step_scalars)

log = logging.getLogger(__name__)
#: where the MLflow run of a medkit run is recorded (its tracking URI and run id), for ``--resume``
RECORD = "mlflow.json"
#: the local store used when no ``MLFLOW_TRACKING_URI`` is set
LOCAL_STORE = "mlruns"
#: metrics are sent in batches of at most this many (MLflow's own limit per ``log_batch``)
BATCH = 1000
_PARAM_KEY = re.compile(r"[^\w\-. /:]")


@dataclass
class _Open:
    client: Any
    run_id: str
    pending: list[Any] = field(default_factory=list)
    matrix: dict[int, dict[str, dict[str, float]]] = field(default_factory=dict)


_RUNS: dict[Path, _Open] = {}


def tracking_uri(run_dir: Path) -> str:
    """``MLFLOW_TRACKING_URI`` when set (a tracking server, a database), else a file store in
    ``RUN/mlruns`` (MLflow's file store is in maintenance mode: the plugin opts in to it for this
    local default only, through ``MLFLOW_ALLOW_FILE_STORE``)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return (Path(run_dir).resolve() / LOCAL_STORE).as_uri()


def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _experiment(client: Any) -> str:
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "medkit"
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found is not None else client.create_experiment(name)


def _params(config: dict[str, Any]) -> list[Any]:
    from mlflow.entities import Param
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    return [Param(_PARAM_KEY.sub("_", k)[:250], v[:MAX_PARAM_VAL_LENGTH]) for k, v in flat_config(config).items()]


def run_start(run: Any) -> None:
    """Create the MLflow run (or, on ``--resume``, reopen the one this run directory recorded) and
    log the config as its parameters."""
    if not is_main_rank():
        return
    key = Path(run.run_dir)
    record = key / RECORD
    if run.resumed and record.is_file():
        saved = json.loads(record.read_text(encoding="utf-8"))
        client = _client(str(saved["tracking_uri"]))
        client.update_run(str(saved["run_id"]), status="RUNNING")
        _RUNS[key] = _Open(client, str(saved["run_id"]))
        log.info("mlflow: resuming run %s at %s", saved["run_id"], saved["tracking_uri"])
        return
    uri = tracking_uri(key)
    client = _client(uri)
    stages = " → ".join("+".join(s) for s in run.stages)
    created = client.create_run(_experiment(client), run_name=key.name,
                                tags={"medkit.run_dir": str(key.resolve()), "medkit.stages": stages,
                                      "medkit.strategy": str(run.config.get("run", {}).get("strategy"))})
    run_id = created.info.run_id
    params = _params(run.config)
    for i in range(0, len(params), 100):  # MLflow takes at most 100 parameters per batch
        client.log_batch(run_id, params=params[i:i + 100])
    atomic_write_text(record, json.dumps({"tracking_uri": uri, "run_id": run_id}, indent=2) + "\n")
    _RUNS[key] = _Open(client, run_id)
    log.info("mlflow: logging run %s to %s", run_id, uri)


def _metrics(opened: _Open, scalars: dict[str, float], step: int) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    opened.pending += [Metric(tag, value, now, step) for tag, value in scalars.items()]
    if len(opened.pending) >= BATCH:
        _flush(opened)


def _flush(opened: _Open) -> None:
    while opened.pending:
        chunk, opened.pending = opened.pending[:BATCH], opened.pending[BATCH:]
        opened.client.log_batch(opened.run_id, metrics=chunk)


def stage_start(run: Any, stage: Any) -> None:
    """A stage boundary: ``stage/index`` at the stage's first global step, and a tag naming it."""
    opened = _RUNS.get(Path(run.run_dir)) if is_main_rank() else None
    if opened is None:
        return
    _metrics(opened, stage_marker(stage), global_step(run, stage.index, stage.start_step + 1))
    opened.client.set_tag(opened.run_id, f"medkit.stage.{stage.index + 1}", stage_title(run, stage))


def step_end(run: Any, stage: Any, step: int, metrics: dict[str, float], modality: str) -> None:
    """``train/loss``, ``train/lr`` and ``train/<modality>/<term>`` at the global step."""
    opened = _RUNS.get(Path(run.run_dir)) if is_main_rank() else None
    if opened is not None:
        _metrics(opened, step_scalars(metrics, modality), global_step(run, stage.index, step))


def stage_end(run: Any, stage: Any, metrics: dict[str, float]) -> None:
    """The held-out metrics after the stage (``matrix/<metric>/<modality>``) and the matrices so far
    as Markdown artifacts (``matrix/<metric>.md``)."""
    opened = _RUNS.get(Path(run.run_dir)) if is_main_rank() else None
    if opened is None:
        return
    _metrics(opened, stage_scalars(metrics), global_step(run, stage.index + 1, 0))
    _flush(opened)
    row = opened.matrix.setdefault(stage.index + 1, {})
    for key, value in metrics.items():
        modality, _, metric = key.partition("/")
        row.setdefault(metric, {})[modality] = value
    _tables(opened, opened.matrix)


def _tables(opened: _Open, matrix: dict[Any, Any]) -> None:
    for metric, (rows, cols, values) in matrix_tables(matrix).items():
        opened.client.log_text(opened.run_id, matrix_markdown(metric, rows, cols, values), f"matrix/{metric}.md")


def run_end(run: Any, results: dict[str, Any]) -> None:
    """The final matrices (Markdown and JSON artifacts); the run is marked finished."""
    opened = _RUNS.pop(Path(run.run_dir), None) if is_main_rank() else None
    if opened is None:
        return
    try:
        _flush(opened)
        matrix = results.get("matrix") or {}
        _tables(opened, matrix)
        opened.client.log_dict(opened.run_id, {str(k): v for k, v in matrix.items()}, "matrix/matrix.json")
    finally:
        opened.client.set_terminated(opened.run_id, status="FINISHED")


@atexit.register
def _close_all() -> None:
    """A run that ends in an error: what was logged is sent, and the MLflow run is marked failed."""
    for opened in list(_RUNS.values()):
        try:
            _flush(opened)
            opened.client.set_terminated(opened.run_id, status="FAILED")
        except Exception:  # exiting anyway; the tracking server may be gone
            log.debug("mlflow: could not close run %s", opened.run_id, exc_info=True)
    _RUNS.clear()
