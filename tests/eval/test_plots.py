"""The pictures: one panel and one scale per metric, readable degenerate colour bars, n/a cells,
text colour from the cell's own colour, units and split on the figure, honest loss-curve titles."""

from __future__ import annotations

import os
from pathlib import Path


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


def test_one_panel_per_metric_each_on_a_fixed_change_scale(tmp_path: Path) -> None:
    acc = Matrix("knn_acc", ["ct", "report"], [1, 2, 3], [["ct"], ["report"], ["xray"]],
                 [[0.75, 0.5], [0.5, None], [0.25, None]], [[False, False], [False, True], [False, True]])
    objectives = {"ct": "mae", "report": "mlm"}
    fig = heatmap_figure([_loss(), acc], objectives=objectives)
    heatmap_png(_out(tmp_path, "heatmap_loss_and_knn.png"), [_loss(), acc], objectives=objectives)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["pretext loss, run's own decoder (lower is better)",
                                                 "kNN probe accuracy (higher is better)"]
    loss_ax, acc_ax = panels
    # the reference cell (right after the modality's own stage) is neutral; ct's loss rising 0.95 → 1.02
    # (+7.4 %) is worse (below 0.5) but not the full colour swing a per-column span gave it
    image = loss_ax.images[0].get_array()
    assert image[0, 0] == 0.5 and image[1, 1] == 0.5
    assert 0.3 < image[2, 0] < 0.5 and image[2, 1] > 0.5  # report's loss fell 6.1 → 5.7: better
    bars = [ax for ax in fig.axes if not ax.get_title()]
    assert "fixed scale" in bars[0].get_ylabel() and "relative" in bars[0].get_ylabel()
    # each column's unit and span, and the split, on the figure
    labels = [t.get_text() for t in loss_ax.get_xticklabels()]
    assert labels[0].startswith("ct\nMAE") and labels[1].startswith("report\nMLM") and "span 0.07" in labels[0]
    assert "held-out split" in loss_ax.get_xlabel() and "held-out split" in acc_ax.get_xlabel()
    # the accuracy panel: absolute change in its unit; a drop of 0.5 saturates the red end
    assert "absolute (fraction correct)" in bars[1].get_ylabel()
    assert acc_ax.images[0].get_array()[2, 0] == 0.0
    # cells without a value say why: n/a (could not be evaluated) vs – (not evaluated at that stage)
    assert _texts(acc_ax).count("n/a") == 2 and _texts(loss_ax).count("–") == 1


def test_a_difference_below_the_threshold_renders_the_same_colour(tmp_path: Path) -> None:
    """The issue's MRI column: 0.83339 vs 0.83338 went from "worst" to "best" on a per-column span."""
    import matplotlib

    def colours(rows: list[list[float | None]]) -> list[tuple[float, ...]]:
        m = Matrix("pretext_loss", ["ct", "mri"], [1, 2, 3], [["ct"], ["mri"], ["xray"]], rows, [])
        fig = heatmap_figure([m], objectives={"ct": "mae", "mri": "mae"})
        ax = [a for a in fig.axes if a.get_title()][0]
        image = ax.images[0]
        return [tuple(image.cmap(image.norm(v))) for v in image.get_array().compressed()]

    a = colours([[0.71, None], [0.71001, 0.83339], [0.70999, 0.83338]])
    b = colours([[0.71, None], [0.70999, 0.83338], [0.71001, 0.83339]])
    assert a == b and len(set(a)) == 1, "differences of 1e-5 never change a cell's colour"
    assert a[0] == tuple(matplotlib.colormaps["coolwarm_r"](0.5))  # the "no meaningful change" colour
    tiny = Matrix("pretext_loss", ["ct", "mri"], [1, 2, 3], [["ct"], ["mri"], ["xray"]],
                  [[0.71, None], [0.71001, 0.83339], [0.70999, 0.83338]], [])
    fig = heatmap_figure([tiny], objectives={"ct": "mae", "mri": "mae"})
    heatmap_png(_out(tmp_path, "heatmap_no_meaningful_change.png"), tiny, objectives={"ct": "mae", "mri": "mae"})
    ax = [x for x in fig.axes if x.get_title()][0]
    assert all(t.get_text().endswith("no meaningful change") for t in ax.get_xticklabels())
    bar = [x for x in fig.axes if not x.get_title()][0]
    assert any("no meaningful" in t.get_text() and "1%" in t.get_text() for t in bar.get_yticklabels())


def test_probe_cells_say_how_many_queries_they_rest_on(tmp_path: Path) -> None:
    acc = Matrix("knn_acc", ["ct"], [1, 2], [["ct"], ["mri"]], [[0.125], [0.0]], [], counts=[[8], [8]])
    fig = heatmap_figure([acc])
    heatmap_png(_out(tmp_path, "heatmap_probe_counts.png"), acc)
    ax = [a for a in fig.axes if a.get_title()][0]
    assert _texts(ax) == ["0.125\nn=8", "0.000\nn=8"]


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


def _medcoss_steps() -> list[dict[str, object]]:
    """A MedCoSS-like log: stage 2's buffer steps carry a distillation loss, not the MLM loss."""
    steps: list[dict[str, object]] = [{"stage": s, "step": k, "modality": m, "role": "current", "loss": v / k,
                                       o: v / k} for s, m, o, v in ((1, "report", "mlm", 6.6), (2, "xray", "mae", 1.0))
                                      for k in range(1, 9)]
    steps += [{"stage": 2, "step": k, "modality": "report", "role": "buffer", "loss": 0.0016, "distill": 0.0016}
              for k in (3, 6)]
    steps += [{"stage": 2, "step": 7, "modality": "xray", "role": "buffer", "loss": 0.3, "mae": 0.3}]
    return steps


def test_distillation_losses_get_their_own_labelled_axis(tmp_path: Path) -> None:
    objectives = {"report": "mlm", "xray": "mae"}
    fig, styles = loss_curves_figure(_medcoss_steps(), objectives=objectives)
    loss_curves_png(_out(tmp_path, "loss_curves_distill.png"), _medcoss_steps(), objectives=objectives)
    by_label = {ax.get_ylabel().split("\n")[0]: ax for ax in fig.axes}
    assert set(by_label) == {"MAE loss (MSE, normalised pixels)", "MLM loss (cross-entropy, nats)",
                             "feature distillation loss"}
    names = {k: [line.get_label() for line in ax.lines if not line.get_label().startswith("_")]
             for k, ax in by_label.items()}
    # the distillation loss is never drawn on the MLM axis (today: "report (buffer)" flat at 0 there)
    assert names["feature distillation loss"] == ["report (buffer, distill)"]
    assert names["MLM loss (cross-entropy, nats)"] == ["report (current)"]
    assert styles["report (buffer, distill)"] == "--"
    # a buffer series of one step is drawn as a marker and says so in the legend
    single = [line for line in by_label["MAE loss (MSE, normalised pixels)"].lines if "1 step" in line.get_label()]
    assert len(single) == 1 and single[0].get_marker() == "o" and len(single[0].get_xdata()) == 1
    # every legend sits outside its panel's data area (to the right of the axes)
    fig.canvas.draw()
    for ax in fig.axes:
        legend = ax.get_legend()
        assert legend is not None
        assert legend.get_window_extent().x0 >= ax.get_window_extent().x1


def test_tiny_changes_print_apart_and_say_they_are_not_meaningful(tmp_path: Path) -> None:
    tiny = Matrix("pretext_loss", ["a", "b"], [1, 2], [["a"], ["b"]], [[1.01171, None], [1.01178, 1.0142]],
                  [[False, False], [False, False]])
    fig = heatmap_figure([tiny], objectives={"a": "mae", "b": "mae"})
    heatmap_png(_out(tmp_path, "heatmap_tiny_change.png"), tiny, objectives={"a": "mae", "b": "mae"})
    ax = [a for a in fig.axes if a.get_title()][0]
    texts = _texts(ax)
    # the two values of column a print differently, on one and the same colour ...
    assert "1.0117" in texts and "1.0118" in texts
    image = ax.images[0].get_array()
    assert image[0, 0] == image[1, 0] == 0.5
    # ... the column label gives the span and says it is below the threshold; the unseen cell stays uncoloured
    assert ax.get_xticklabels()[0].get_text().endswith("\nspan 7e-05\nno meaningful change")
    assert image.mask[0, 1] and texts.count("–") == 1
