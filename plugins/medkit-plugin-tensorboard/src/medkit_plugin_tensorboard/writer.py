"""One TensorBoard ``SummaryWriter`` per run directory, fed by the event hooks (rank 0 only)."""

from __future__ import annotations

import atexit
import logging
from pathlib import Path
from typing import Any

from medkit.api import flat_config, matrix_markdown, matrix_tables, stage_marker, stage_scalars, stage_title
from medkit.api import global_step as _global_step
from medkit.api import is_main_rank as _is_main_rank
from medkit.api import step_scalars

log = logging.getLogger(__name__)
SUBDIR = "tensorboard"
_WRITERS: dict[Path, Any] = {}


def is_main_rank() -> bool:
    """Rank 0 of a distributed run (or the only process); the others write nothing."""
    return _is_main_rank()


def steps_per_stage(run: Any) -> int:
    """The optimizer steps of one stage (``trainer.max_steps``, the same for every stage of a run)."""
    return int(run.config.get("trainer", {}).get("max_steps", 0) or 0)


def global_step(run: Any, stage_index: int, step: int) -> int:
    """The x-axis of every curve: ``stage_index * trainer.max_steps + step`` (stages side by side)."""
    return _global_step(run, stage_index, step)


def _open(run: Any, purge_step: int | None = None) -> Any:
    key = Path(run.run_dir)
    if key in _WRITERS:
        return _WRITERS[key]
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(key / SUBDIR), purge_step=purge_step, flush_secs=10)
    _WRITERS[key] = writer
    log.info("tensorboard: writing events to %s (tensorboard --logdir %s)", key / SUBDIR, key / SUBDIR)
    return writer


def _get(run: Any) -> Any | None:
    return _WRITERS.get(Path(run.run_dir))


def run_start(run: Any) -> None:
    if not is_main_rank() or run.resumed:  # a resumed run opens at its first stage, to purge
        return
    writer = _open(run)
    modalities = run.config.get("run", {}).get("modalities", [])
    stages = " → ".join("+".join(s) for s in run.stages)
    writer.add_text("run/config", f"strategy `{run.config.get('run', {}).get('strategy')}`, "
                                  f"modalities {', '.join(modalities)}, stages {stages}, "
                                  f"{steps_per_stage(run)} steps per stage", 0)
    params = flat_config(run.config)
    writer.add_text("run/params", "| key | value |\n|---|---|\n"
                    + "".join(f"| `{k}` | `{v}` |\n" for k, v in sorted(params.items())), 0)


def stage_start(run: Any, stage: Any) -> None:
    if not is_main_rank():
        return
    writer = _get(run)
    if writer is None:
        # a resumed run: drop the steps logged after the checkpoint it resumes from (they are re-run)
        writer = _open(run, purge_step=global_step(run, stage.index, stage.start_step) + 1)
    at = global_step(run, stage.index, stage.start_step + 1)
    for tag, value in stage_marker(stage).items():  # the stage boundaries, on the same x-axis
        writer.add_scalar(tag, value, at)
    writer.add_text("run/stages", stage_title(run, stage), at)


def step_end(run: Any, stage: Any, step: int, metrics: dict[str, float], modality: str = "") -> None:
    """``train/loss``, ``train/lr`` and ``train/<modality>/<term>`` (:func:`medkit.api.step_scalars`)."""
    writer = _get(run) if is_main_rank() else None
    if writer is None:
        return
    at = global_step(run, stage.index, step)
    for tag, value in step_scalars(metrics, modality).items():
        writer.add_scalar(tag, value, at)


def stage_end(run: Any, stage: Any, metrics: dict[str, float]) -> None:
    """Held-out metrics after a stage: ``matrix/<metric>/<modality>`` (one matrix row per stage)."""
    writer = _get(run) if is_main_rank() else None
    if writer is None:
        return
    at = global_step(run, stage.index + 1, 0)
    for tag, value in stage_scalars(metrics).items():
        writer.add_scalar(tag, value, at)
    writer.flush()


def run_end(run: Any, results: dict[str, Any]) -> None:
    """The final matrices as images and Markdown tables; then the writer is closed."""
    writer = _WRITERS.pop(Path(run.run_dir), None) if is_main_rank() else None
    if writer is None:
        return
    try:
        at = global_step(run, len(run.stages), 0)
        for metric, (rows, cols, values) in matrix_tables(results.get("matrix") or {}).items():
            writer.add_text(f"matrix/{metric}", matrix_markdown(metric, rows, cols, values), at)
            image = _heatmap(metric, rows, cols, values)
            if image is not None:
                writer.add_image(f"matrix/{metric}", image, at, dataformats="HWC")
    finally:
        writer.close()


def _heatmap(metric: str, rows: list[int], cols: list[str], values: list[list[float | None]]) -> Any:
    """An RGB ``[H, W, 3]`` uint8 heat-map with its own colour scale and the value in every cell."""
    try:
        import numpy as np
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - dependencies
        return None
    data = np.array([[np.nan if v is None else v for v in vals] for vals in values], dtype=float)
    finite = data[np.isfinite(data)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if hi - lo < 1e-12 * max(1.0, abs(hi)):  # one value: a readable scale around it
        lo, hi = lo - 0.5 * max(abs(lo), 1.0) * 0.1, hi + 0.5 * max(abs(hi), 1.0) * 0.1
    fig = Figure(figsize=(1.2 + 0.9 * len(cols), 1.0 + 0.5 * len(rows)), dpi=80)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(np.ma.masked_invalid(data), cmap="viridis", vmin=lo, vmax=hi, aspect="auto")
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), [f"after {r}" for r in rows])
    ax.set_title(metric, fontsize=9)
    for i in range(len(rows)):
        for j in range(len(cols)):
            v = data[i, j]
            text = "n/a" if not np.isfinite(v) else f"{v:.3g}"
            light = np.isfinite(v) and (v - lo) / (hi - lo) < 0.5
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if light else "black")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


@atexit.register
def _close_all() -> None:
    """A run that ends in an error still leaves complete event files."""
    for writer in list(_WRITERS.values()):
        try:
            writer.close()
        except Exception:  # noqa: BLE001 - exiting anyway
            pass
    _WRITERS.clear()
