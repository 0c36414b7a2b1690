"""The pictures: one panel and one scale per metric, readable degenerate colour bars, n/a cells,
text colour from the cell's own colour, units and split on the figure, honest loss-curve titles."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from medkit.eval.matrices import Matrix
from medkit.eval.plots import heatmap_figure, heatmap_png, loss_curves_figure, loss_curves_png, text_colour

#: MEDKIT_PICTURES=DIR keeps the PNGs to look at (default: the test's tmp_path)
KEEP = os.environ.get("MEDKIT_PICTURES")


def _out(tmp_path: Path, name: str) -> Path:
    folder = Path(KEEP) if KEEP else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def _loss() -> Matrix:
    # MLM cross-entropy (~6) beside MAE MSE (~1): one scale would hide every change in the ct column
    return Matrix("pretext_loss", ["ct", "report"], [1, 2, 3], [["ct"], ["report"], ["xray"]],
                  [[0.95, None], [0.99, 6.1], [1.02, 5.7]], [[False, False], [False, False], [False, False]])


def _texts(ax: object) -> list[str]:
    return [t.get_text() for t in ax.texts]  # type: ignore[attr-defined]


def test_one_panel_per_metric_each_with_its_own_scale(tmp_path: Path) -> None:
    acc = Matrix("knn_acc", ["ct", "report"], [1, 2, 3], [["ct"], ["report"], ["xray"]],
                 [[0.75, 0.5], [0.5, None], [0.25, None]], [[False, False], [False, True], [False, True]])
    objectives = {"ct": "mae", "report": "mlm"}
    fig = heatmap_figure([_loss(), acc], objectives=objectives)
    heatmap_png(_out(tmp_path, "heatmap_loss_and_knn.png"), [_loss(), acc], objectives=objectives)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["pretext loss, run's own decoder (lower is better)",
                                                 "kNN probe accuracy (higher is better)"]
    loss_ax, acc_ax = panels
    # the loss panel is coloured per column (ct's best and worst cells are the colour extremes) ...
    image = loss_ax.images[0].get_array()
    assert image[0, 0] == pytest.approx(1.0) and image[2, 0] == pytest.approx(0.0)
    assert image[2, 1] == pytest.approx(1.0) and image[1, 1] == pytest.approx(0.0)
    bars = [ax for ax in fig.axes if not ax.get_title()]
    assert "per column" in bars[0].get_ylabel()
    # ... with each column's unit and the split on the figure
    labels = [t.get_text() for t in loss_ax.get_xticklabels()]
    assert labels[0].startswith("ct\nMAE") and labels[1].startswith("report\nMLM")
    assert "held-out split" in loss_ax.get_xlabel() and "held-out split" in acc_ax.get_xlabel()
    # the accuracy panel uses the metric's own fixed range, its unit on the colour bar
    assert "fraction correct" in bars[1].get_ylabel()
    assert [t.get_text() for t in bars[1].get_yticklabels()][0] == "0.0"
    # cells without a value say why: n/a (could not be evaluated) vs – (not evaluated at that stage)
    assert _texts(acc_ax).count("n/a") == 2 and _texts(loss_ax).count("–") == 1


def test_a_matrix_with_one_value_gets_a_readable_colour_bar(tmp_path: Path) -> None:
    one = Matrix("knn_acc_custom", ["ct"], [1], [["ct"]], [[0.649289]], [[False]])
    fig = heatmap_figure([one])
    heatmap_png(_out(tmp_path, "heatmap_one_value.png"), one)
    bar = [ax for ax in fig.axes if not ax.get_title()][0]
    ticks = [t.get_text() for t in bar.get_yticklabels()]
    assert ticks == ["0.6493"], ticks  # today: 0.649289000 ... 0.649289001
    assert "all cells equal" in bar.get_ylabel()


def test_text_colour_follows_the_cell_colour_also_on_equal_values(tmp_path: Path) -> None:
    import matplotlib

    equal = Matrix("linear_acc", ["a", "b"], [1, 2], [["a"], ["b"]], [[0.5, 0.5], [0.5, 0.5]],
                   [[False, False], [False, False]])
    fig = heatmap_figure([equal])
    heatmap_png(_out(tmp_path, "heatmap_equal_values.png"), equal)
    ax = [a for a in fig.axes if a.get_title()][0]
    colours = {t.get_color() for t in ax.texts}
    assert len(colours) == 1, "equal values, equal colour, equal text colour"
    # the text contrasts with the cell it sits on (today: black on the darkest colour for equal values)
    assert colours == {text_colour(matplotlib.colormaps["viridis"](0.5))}
    assert text_colour(matplotlib.colormaps["viridis"](0.0)) == "white"
    assert text_colour(matplotlib.colormaps["viridis"](1.0)) == "black"


def test_loss_curves_say_buffer_only_when_there_is_one_and_split_by_unit(tmp_path: Path) -> None:
    steps = [{"stage": s, "step": k, "modality": m, "role": "current", "loss": 1.0 / k}
             for s, m in ((1, "a"), (2, "b")) for k in range(1, 5)]
    fig, styles = loss_curves_figure(steps, objectives={"a": "mae", "b": "mlm"})
    loss_curves_png(_out(tmp_path, "loss_curves_sequential.png"), steps, objectives={"a": "mae", "b": "mlm"})
    assert "buffer" not in fig.axes[0].get_title() and "training batches" in fig.axes[0].get_title()
    assert len(fig.axes) == 2, "MAE and MLM losses never share a y axis"
    assert fig.axes[0].get_ylabel().startswith("MAE") and fig.axes[1].get_ylabel().startswith("MLM")
    rehearsed = steps + [{"stage": 2, "step": k, "modality": "a", "role": "buffer", "loss": 0.5} for k in (2, 4)]
    fig, styles = loss_curves_figure(rehearsed)
    loss_curves_png(_out(tmp_path, "loss_curves_rehearsal.png"), rehearsed)
    assert styles == {"a (current)": "-", "a (buffer)": "--", "b (current)": "-"}
    assert "rehearsal-buffer" in fig.axes[0].get_title()


def test_colour_bar_ticks_are_written_exactly(tmp_path: Path) -> None:
    acc = Matrix("knn_acc", ["ct"], [1], [["ct"]], [[0.75]], [[False]])
    loss = Matrix("pretext_loss", ["ct"], [1, 2], [["ct"], ["mri"]], [[0.6172], [0.6813]], [[False], [False]])
    fig = heatmap_figure([acc, loss])
    heatmap_png(_out(tmp_path, "heatmap_ticks.png"), [acc, loss])
    bars = [ax for ax in fig.axes if not ax.get_title()]
    # accuracy: colour position = value, so every label must equal its tick's position exactly
    # (today's 5 evenly spaced ticks with 1 decimal wrote 0.25 as "0.2" and 0.75 as "0.8")
    labels = [float(t.get_text()) for t in bars[0].get_yticklabels()]
    assert labels == pytest.approx(list(bars[0].get_yticks()), abs=1e-12) and labels[0] == 0.0 and labels[-1] == 1.0
    loss_ticks = [float(t.get_text()) for t in bars[1].get_yticklabels()]
    assert loss_ticks and all(0.6172 <= v <= 0.6813 for v in loss_ticks) and len(set(loss_ticks)) == len(loss_ticks)


def test_per_column_colours_never_hide_the_size_of_a_change(tmp_path: Path) -> None:
    tiny = Matrix("pretext_loss", ["a", "b"], [1, 2], [["a"], ["b"]], [[1.01171, None], [1.01178, 1.0142]],
                  [[False, False], [False, False]])
    fig = heatmap_figure([tiny], objectives={"a": "mae", "b": "mae"})
    heatmap_png(_out(tmp_path, "heatmap_tiny_change.png"), tiny, objectives={"a": "mae", "b": "mae"})
    ax = [a for a in fig.axes if a.get_title()][0]
    texts = _texts(ax)
    # the two values of column a print differently (today both read 1.012 on opposite colours) ...
    assert "1.0117" in texts and "1.0118" in texts
    # ... the column label says how small the stretched span is, and the unseen cell stays uncoloured
    assert ax.get_xticklabels()[0].get_text().endswith("\nspan 7e-05")
    assert ax.images[0].get_array().mask[0, 1] and texts.count("–") == 1
