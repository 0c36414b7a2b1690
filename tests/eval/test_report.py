"""Probes in a real engine run, then ``medkit report`` and ``medkit compare`` on the runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from medkit.eval.matrices import read_matrix


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from medkit.testing.synthetic import run_synthetic

    root = tmp_path_factory.mktemp("runs")
    return {s: run_synthetic(root / s, s, max_steps=2, demo_dir=root / "demo",
                             overrides=("trainer.probe_unseen=true",)) for s in ("sequential", "joint")}


def test_engine_writes_probe_matrices_in_unit_range(runs: dict[str, Path]) -> None:
    for metric in ("knn_acc", "linear_acc"):
        mods, rows = read_matrix(runs["sequential"] / "metrics" / f"matrix_{metric}.csv")
        assert mods == ["synth_a", "synth_b"]
        assert len(rows) == 2
        # the probes also run on synth_b before its own stage (forward transfer needs it)
        assert all(v is not None and 0.0 <= v <= 1.0 for row in rows for v in row)
    mods, rows = read_matrix(runs["sequential"] / "metrics" / "matrix.csv")
    assert rows[0][1] is None  # the pretext loss stays seen-only


def test_report_writes_pngs_and_markdown(runs: dict[str, Path]) -> None:
    from medkit.cli.main import cli

    result = CliRunner().invoke(cli, ["report", str(runs["sequential"])])
    assert result.exit_code == 0, result.output
    out = runs["sequential"] / "report"
    for name in ("matrix_pretext_loss.png", "matrix_knn_acc.png", "matrix_linear_acc.png", "loss_curves.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    md = (out / "report.md").read_text()
    assert "| 2 | synth_b |" in md
    assert "| after stage | trained on | synth_a | synth_b |" in md
    assert "forgetting (first)" in md and "BWT" in md
    # a preset run names its resolved encoder (today: "depth None, width None")
    assert "None" not in md and "| encoder | depth 2, width 48, 3 heads |" in md
    metrics = json.loads((out / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c}"))
    # both synthetic modalities are MAE: their losses share a unit, so the means exist
    assert metrics["pretext_loss"]["stages"] == 2 and metrics["pretext_loss"]["bwt"] is not None
    # the command opens with a short summary of what changed, the report.md with the same lines
    lines = result.output.splitlines()
    assert lines[0].startswith("sequential run ") and "synth_a → synth_b" in lines[0]
    assert any(line.startswith("pretext loss, run's own decoder (lower is better): synth_a ") and "→" in line for line in lines[1:3])
    assert md.index("## What changed") < md.index("## Configuration")
    # the pictures are files like report.md: one mode for all, that of a plain open() (today PNGs were 0600)
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir() if p.is_file()}
    assert len(set(modes.values())) == 1, modes
    keep = os.environ.get("MEDKIT_PICTURES")
    if keep:
        import shutil

        for png in out.glob("*.png"):
            shutil.copy(png, Path(keep) / f"report_{png.name}")


def test_compare_prints_both_strategies(runs: dict[str, Path], tmp_path: Path) -> None:
    from medkit.cli.main import cli

    out = tmp_path / "cmp.json"
    result = CliRunner().invoke(cli, ["compare", str(runs["sequential"]), str(runs["joint"]),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:3] == ["run", "strategy", "stages"]
    assert any(line.split()[:3] == ["sequential", "sequential", "2"] for line in lines)
    assert any(line.split()[:3] == ["joint", "joint", "1"] for line in lines)
    data = json.loads(out.read_text())
    joint = next(r for r in data["runs"] if r["strategy"] == "joint")
    assert joint["metrics"]["pretext_loss"]["forgetting_first"] is None
    assert "one stage" in joint["metrics"]["pretext_loss"]["reasons"]["forgetting"]


def test_compare_flags_runs_with_identical_matrices(runs: dict[str, Path], tmp_path: Path) -> None:
    """Two runs that trained the same (e.g. rehearsal whose buffer never got a step, and sequential)
    are flagged instead of shown as a silent tie; different runs are not."""
    import shutil

    from medkit.cli.main import cli

    twin = tmp_path / "twin"
    shutil.copytree(runs["sequential"], twin, symlinks=True)
    result = CliRunner().invoke(cli, ["compare", str(runs["sequential"]), str(twin), str(runs["joint"])])
    assert result.exit_code == 0, result.output
    flagged = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(flagged) == 1 and "sequential, twin have identical matrices" in flagged[0]
    clean = CliRunner().invoke(cli, ["compare", str(runs["sequential"]), str(runs["joint"])])
    assert "identical" not in clean.output


def test_compare_rejects_unknown_out_suffix(runs: dict[str, Path], tmp_path: Path) -> None:
    from medkit.cli.main import cli

    result = CliRunner().invoke(cli, ["compare", str(runs["joint"]), "--out", str(tmp_path / "x.txt")])
    assert result.exit_code != 0 and ".md or .json" in result.output


def test_loss_curves_distinguish_buffer_role(tmp_path: Path) -> None:
    from medkit.eval.plots import loss_curves_png as plot_losses

    steps = [{"stage": s, "step": k, "modality": m, "role": "current", "loss": 1.0 / k}
             for s, m in ((1, "a"), (2, "b")) for k in range(1, 5)]
    steps += [{"stage": 2, "step": k, "modality": "a", "role": "buffer", "loss": 0.5} for k in (2, 4)]
    styles = plot_losses(tmp_path / "loss.png", steps)
    assert styles == {"a (current)": "-", "a (buffer)": "--", "b (current)": "-"}
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_probe_cells_record_and_show_their_sample_count(runs: dict[str, Path]) -> None:
    from medkit.eval.matrices import run_matrices
    from medkit.eval.plots import heatmap_figure

    records = json.loads((runs["sequential"] / "metrics" / "eval.json").read_text())
    for record in records:
        for metric in ("knn_acc", "linear_acc"):
            counts = record["counts"][metric]
            assert set(counts) == set(record["metrics"][metric]) and all(n > 0 for n in counts.values())
    acc = run_matrices(runs["sequential"])["knn_acc"]
    assert all(n is not None and n > 0 for row in acc.counts for n in row)
    ax = [a for a in heatmap_figure([acc]).axes if a.get_title()][0]
    cells = [t.get_text() for t in ax.texts]
    assert len(cells) == 4 and all("\nn=" in c for c in cells)
    from medkit.eval.matrices import matrix_markdown

    assert matrix_markdown(acc).count(" (n=") == 4  # report.md's table says it too
