"""``medkit data preview``: one row per view (raw, preprocessed, augmented), the file and the transform
under every panel, drawn from the modality's own dataset (the installed plugins, as training uses)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from click.testing import CliRunner

from medkit.eval.preview import ROW_TITLES, ROWS, collect_panels, preview_figure, preview_png

KEEP = os.environ.get("MEDKIT_PICTURES")  # MEDKIT_PICTURES=DIR keeps the PNGs to look at


def _modality(name: str) -> tuple[Any, Path]:
    from medkit.data.demo import demo_root
    from medkit.registry import create

    mod = create("modality", name)
    return mod, mod.demo_data(demo_root() / name)


def _grid(fig: Any) -> list[list[Any]]:
    """The panel axes (not insets) by row, from their subplot positions."""
    axes = [ax for ax in fig.axes if ax.get_subplotspec() is not None]
    rows: dict[int, list[Any]] = {}
    for ax in axes:
        rows.setdefault(ax.get_subplotspec().rowspan.start, []).append(ax)
    return [sorted(r, key=lambda a: a.get_subplotspec().colspan.start) for _, r in sorted(rows.items())]


def test_pathology_tiles_one_row_per_view_with_file_place_and_transform(tmp_path: Path) -> None:
    mod, root = _modality("pathology")
    ds = mod.dataset(root, train=False)
    indices = [0, len(ds) - 1]
    rows = collect_panels(mod, ds, ds.view(True), indices, seed=3, dims=2)
    fig = preview_figure("pathology", 2, rows, source=str(root))
    preview_png(Path(KEEP or tmp_path) / "preview_pathology.png", "pathology", mod, root, samples=3)
    grid = _grid(fig)
    assert len(grid) == len(ROWS) == 3 and all(len(r) == 2 for r in grid)
    assert [r[0].get_ylabel() for r in grid] == [ROW_TITLES[k] for k in ROWS]
    for row in grid:
        for c, ax in enumerate(row):
            label = ax.get_xlabel()
            assert label.startswith(ds.entries[indices[c]].rel), label  # the file under every panel
            assert ax.images, "every view is drawn as an image"
    # tiles say where in the slide they are, and each row names its transform
    assert "px (" in grid[0][0].get_xlabel() and "no transform" in grid[0][0].get_xlabel()
    assert "resized to" in grid[1][0].get_xlabel() and "RandomResizedCrop" in grid[2][0].get_xlabel()
    assert "seed=3" in grid[2][0].get_xlabel() and "seed=4" in grid[2][1].get_xlabel()
    # the augmented view is the training view's own (a different crop), the preprocessed one the load's
    pre, aug = rows[1][0].array, rows[2][0].array
    assert pre is not None and aug is not None and pre.shape == aug.shape and not np.allclose(pre, aug)
    assert np.allclose(pre, np.moveaxis(ds.load(indices[0], seed=None)["input"].numpy(), 0, -1))


def test_volumes_are_three_orthogonal_slices_and_reports_text_panels(tmp_path: Path) -> None:
    mod, root = _modality("mri")
    ds = mod.dataset(root, train=False)
    rows = collect_panels(mod, ds, ds.view(True), [0], seed=0, dims=3)
    fig = preview_figure("mri", 3, rows, source=str(root))
    grid = _grid(fig)
    assert len(grid) == 3
    for row in grid:
        insets = row[0].child_axes
        assert [a.get_title().split()[0] for a in insets] == ["slice", "row", "column"]
        assert ds.volumes[0].id in row[0].get_xlabel()
    assert "reoriented to" in grid[0][0].get_xlabel() and "window" in grid[0][0].get_xlabel()
    assert rows[0][0].array is not None and rows[0][0].array.ndim == 3  # the raw volume, before resizing
    mod, root = _modality("report")
    ds = mod.dataset(root, train=False)
    rows = collect_panels(mod, ds, ds.view(True), [0], seed=0, dims=1)
    fig = preview_figure("report", 1, rows, source=str(root))
    text = ds.load(0)["input"].split()[0]
    for row in _grid(fig):
        assert row[0].texts and text in row[0].texts[0].get_text() and ds.ids[0] in row[0].get_xlabel()


def test_cli_writes_one_png_per_modality(tmp_path: Path) -> None:
    from medkit.cli.main import cli

    result = CliRunner().invoke(cli, ["data", "preview", "--modality", "xray", "--modality", "report",
                                      "--samples", "2", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for m in ("xray", "report"):
        assert (tmp_path / f"preview_{m}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = CliRunner().invoke(cli, ["data", "preview", "--modality", "xray", "--data", "a", "--data", "b"])
    assert bad.exit_code != 0 and "one folder per modality" in bad.output


def test_report_previews_every_trained_modality(tmp_path: Path) -> None:
    from medkit.eval.report import write_report
    from medkit.testing.synthetic import run_synthetic, use_synthetic_host

    run = run_synthetic(tmp_path / "run", "sequential", max_steps=2, demo_dir=tmp_path / "demo")
    out = write_report(run, components=use_synthetic_host())
    md = (out / "report.md").read_text()
    for m in ("synth_a", "synth_b"):
        assert f"![{m} preview](preview_{m}.png)" in md
        assert (out / f"preview_{m}.png").read_bytes()[:4] == b"\x89PNG"
