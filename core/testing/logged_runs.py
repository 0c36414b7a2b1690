"""Real synthetic runs in a ``medkit`` subprocess with one logger plugin installed from its source tree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

#: The smallest encoder and no probes: such a run only has to log its steps, stages and matrices.
SMALL_RUN = ("encoder.depth=1", "encoder.embed_dim=48", "encoder.num_heads=3", "trainer.batch_size=4",
             "trainer.eval_batches=1", "trainer.probe_linear_steps=0", "trainer.probe_knn_k=0")
#: The columns of a ``metrics/steps.jsonl`` row that are not loss terms.
NOT_TERMS = frozenset({"stage", "step", "modality", "role", "loss", "lr", "time_s", "data_s"})


def _dist(root: Path, dist: str, entry_point: str, module: str) -> None:
    """An installed-looking distribution ``dist`` (dist-info only) whose ``medkit`` entry point is ``module``."""
    info = root / f"{dist.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(f"[medkit]\n{entry_point} = {module}\n")


def plugin_run_env(tmp_path: Path, dist: str, entry_point: str, module: str, src: Path, *,
                   drop_prefix: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of a ``medkit`` subprocess with the plugin ``dist`` (its package under ``src``) and
    the synthetic modalities ``synth_a`` / ``synth_b`` installed as entry points in ``tmp_path/site``.

    Args:
        tmp_path: a scratch folder (the site folder and the demo data go there).
        dist: the plugin's distribution name (``medkit-plugin-wandb``).
        entry_point: its ``medkit`` entry point name (``wandb``).
        module: the module the entry point names (``medkit_plugin_wandb``).
        src: the folder that holds the plugin's package (its ``src/``).
        drop_prefix: environment variables starting with this are left out (``WANDB_``: the user's own
            settings never reach the run).
        **extra: more variables (``MEDKIT_TENSORBOARD="0"``).
    """
    site = tmp_path / "site"
    _dist(site, dist, entry_point, module)
    _dist(site, "medkit-synthetic", "synthetic", "medkit.testing.synthetic")
    path = os.pathsep.join([str(site), str(src), os.environ.get("PYTHONPATH", "")])
    base = {k: v for k, v in os.environ.items() if not (drop_prefix and k.startswith(drop_prefix))}
    return {**base, "PYTHONPATH": path, "MEDKIT_DEMO_DIR": str(tmp_path / "demo"), "OMP_NUM_THREADS": "1", **extra}


def run_two_stages(run_dir: Path, env: dict[str, str], *, strategy: str = "sequential", steps: int = 3,
                   extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """``medkit run --modality synth_a,synth_b`` (two stages of ``steps`` steps, :data:`SMALL_RUN`) in a
    subprocess with ``env`` (see :func:`plugin_run_env`)."""
    return subprocess.run([sys.executable, "-m", "medkit.cli.main", "run", "--modality", "synth_a,synth_b",
                           "--strategy", strategy, "--preset", "tiny", "--max-steps", str(steps),
                           "--run-dir", str(run_dir), *SMALL_RUN, *extra], capture_output=True, text=True, env=env,
                          timeout=600)


def step_rows(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of the run's ``metrics/steps.jsonl``."""
    return [json.loads(line) for line in (run_dir / "metrics" / "steps.jsonl").read_text().splitlines()]


def expected_curves(rows: list[dict[str, Any]], steps: int) -> dict[str, dict[int, float]]:
    """``{tag: {global step: value}}`` a logger must have logged for ``rows`` (``steps`` per stage):
    ``train/loss``, ``train/lr`` and ``train/<modality>/<term>`` for the loss and every loss term."""
    out: dict[str, dict[int, float]] = {}
    for r in rows:
        at = (r["stage"] - 1) * steps + r["step"]
        tags = {"train/loss": r["loss"], "train/lr": r["lr"], f"train/{r['modality']}/loss": r["loss"]}
        tags.update({f"train/{r['modality']}/{k}": v for k, v in r.items() if k not in NOT_TERMS})
        for tag, value in tags.items():
            out.setdefault(tag, {})[at] = value
    return out
