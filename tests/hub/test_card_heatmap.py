"""The Hub card's heat map is the report's fixed-scale rendering: two runs whose values differ by 1e-5
get the same cell colours in the PNG the card embeds (a per-column scale swapped best and worst)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image

from medkit.eval.matrices import Matrix
from medkit.eval.plots import CMAP, heatmap_figure
from medkit.hub.card import render_heatmap

OBJECTIVES = {"ct": "mae", "mri": "mae"}


def _matrices(rows: list[list[float | None]]) -> dict[str, Matrix]:
    return {"pretext_loss": Matrix("pretext_loss", ["ct", "mri"], [1, 2, 3], [["ct"], ["mri"], ["xray"]], rows, [])}


def _cell_pixels(matrices: dict[str, Matrix], png: Path) -> list[tuple[int, ...]]:
    """The PNG's colour near the top-left corner of every valued cell (away from its text)."""
    fig = heatmap_figure(list(matrices.values()), objectives=OBJECTIVES)  # the same layout as the file
    fig.canvas.draw()
    ax = [a for a in fig.axes if a.get_title()][0]
    image = np.asarray(Image.open(png).convert("RGB"))
    out = []
    for i, row in enumerate(matrices["pretext_loss"].rows):
        for j, v in enumerate(row):
            if v is not None:
                x, y = ax.transData.transform((j - 0.3, i - 0.3))
                out.append(tuple(int(c) for c in image[image.shape[0] - int(round(y)), int(round(x))]))
    return out


def test_card_heatmap_cells_do_not_change_colour_for_a_1e5_difference(tmp_path: Path) -> None:
    a = _matrices([[0.71, None], [0.71001, 0.83339], [0.70999, 0.83338]])
    b = _matrices([[0.71, None], [0.70999, 0.83338], [0.71001, 0.83339]])
    pa = _cell_pixels(a, render_heatmap(a, tmp_path / "a" / "matrix.png", objectives=OBJECTIVES))
    pb = _cell_pixels(b, render_heatmap(b, tmp_path / "b" / "matrix.png", objectives=OBJECTIVES))
    neutral = tuple(int(round(c * 255)) for c in matplotlib.colormaps[CMAP](0.5)[:3])
    assert pa == pb and all(max(abs(p - q) for p, q in zip(px, neutral)) <= 2 for px in pa), (pa, neutral)
    # a real change (ct's loss up by 10 %) does show, on the card's picture too
    c = _matrices([[0.71, None], [0.781, 0.83339], [0.781, 0.83338]])
    pc = _cell_pixels(c, render_heatmap(c, tmp_path / "c" / "matrix.png", objectives=OBJECTIVES))
    assert pc[1] != pa[1] and pc[1][0] > pc[1][2], "worse is red"
