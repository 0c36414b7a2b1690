"""Tiling, tissue test and per-patient cap: known answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from medkit.testing import create
from medkit_plugin_pathology.tiling import Tile, cap_per_group, tile_grid, tissue_fractions

PINK = (234, 168, 204)
WHITE = (246, 244, 247)


def _path(**kw):
    return create("modality", "pathology", **kw)


def _canvas(width: int, height: int, tissue_boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    arr = np.empty((height, width, 3), np.uint8)
    arr[...] = WHITE
    for x0, y0, x1, y1 in tissue_boxes:
        arr[y0:y1, x0:x1] = PINK
    return arr


def test_tile_grid_known_answers() -> None:
    assert tile_grid(1100, 600, 512) == [Tile(0, 0, (0, 0, 512, 512)), Tile(1, 0, (512, 0, 1024, 512))]
    assert tile_grid(1100, 1100, 512) == [
        Tile(0, 0, (0, 0, 512, 512)), Tile(1, 0, (512, 0, 1024, 512)),
        Tile(0, 1, (0, 512, 512, 1024)), Tile(1, 1, (512, 512, 1024, 1024))]
    assert tile_grid(300, 200, 512) == [Tile(0, 0, (0, 0, 300, 200))]  # small: the whole image
    assert tile_grid(512, 512, 512) == [Tile(0, 0, (0, 0, 512, 512))]
    assert tile_grid(1100, 300, 512) == [Tile(0, 0, (0, 0, 512, 300)), Tile(1, 0, (512, 0, 1024, 300))]


def test_1100x600_image_tiles_and_skips_the_white_tile(tmp_path: Path) -> None:
    Image.fromarray(_canvas(1100, 600, [(0, 0, 512, 600)])).save(tmp_path / "slide.png")
    ds = _path().dataset(tmp_path, train=False)
    assert ds.ids == ["slide.png#x0_y0"]
    assert ds.stats == {"images": 1, "tiles": 2, "background": 1, "over_cap": 0}
    x = ds.load(0)["input"]
    expected = torch.tensor(PINK, dtype=torch.float32) / 255
    assert torch.allclose(x.mean(dim=(1, 2)), expected, atol=1e-4)
    everything = _path(min_tissue=0.0).dataset(tmp_path, train=False)
    assert everything.ids == ["slide.png#x0_y0", "slide.png#x1_y0"]
    assert torch.allclose(everything.load(1)["input"], torch.tensor(WHITE).view(3, 1, 1) / 255, atol=1e-4)


def test_tissue_fraction_threshold(tmp_path: Path) -> None:
    # tile x0 has 96/512 = 18.75 % tissue, tile x1 has 256/512 = 50 %
    arr = _canvas(1024, 512, [(0, 0, 96, 512), (512, 0, 768, 512)])
    thumb = Image.fromarray(arr).reduce(16)
    fractions = tissue_fractions(thumb, (1024, 512), tile_grid(1024, 512, 512), 0.07)
    assert np.allclose(fractions, [0.1875, 0.5])
    Image.fromarray(arr).save(tmp_path / "s.png")
    assert _path().dataset(tmp_path, train=False).ids == ["s.png#x1_y0"]
    assert _path(min_tissue=0.1).dataset(tmp_path, train=False).ids == ["s.png#x0_y0", "s.png#x1_y0"]


def test_grey_and_black_are_not_tissue(tmp_path: Path) -> None:
    arr = np.zeros((600, 1100, 3), np.uint8)
    arr[:, :512] = 128  # grey (e.g. glass, scanner background): saturation 0
    arr[:, 512:] = PINK
    Image.fromarray(arr).save(tmp_path / "g.png")
    assert _path().dataset(tmp_path, train=False).ids == ["g.png#x1_y0"]


def test_cap_per_group_is_seeded_and_independent_of_other_groups() -> None:
    keys = [f"a.png#x{i}_y0" for i in range(8)] + ["b.png#x0_y0", "b.png#x1_y0"]
    groups = ["A"] * 8 + ["B"] * 2
    kept = cap_per_group(keys, groups, 5, seed=0)
    assert len([i for i in kept if groups[i] == "A"]) == 5 and {8, 9} <= set(kept)
    assert kept == cap_per_group(keys, groups, 5, seed=0)
    assert cap_per_group(keys[:8], groups[:8], 5, seed=0) == [i for i in kept if i < 8]
    assert len({tuple(cap_per_group(keys, groups, 5, seed=s)) for s in range(6)}) > 1
    assert cap_per_group(keys, groups, 0) == list(range(10))


def test_max_tiles_per_patient_from_first_folder_level(tmp_path: Path) -> None:
    big = _canvas(2048, 1024, [(0, 0, 2048, 1024)])  # 4×2 = 8 tissue tiles
    (tmp_path / "A").mkdir()
    (tmp_path / "B").mkdir()
    Image.fromarray(big).save(tmp_path / "A" / "slide.png")
    Image.fromarray(_canvas(1024, 512, [(0, 0, 1024, 512)])).save(tmp_path / "B" / "s1.png")
    Image.fromarray(_canvas(200, 200, [(0, 0, 200, 200)])).save(tmp_path / "B" / "s2.png")
    ds = _path(max_tiles_per_patient=5).dataset(tmp_path, train=False)
    assert ds.patients.count("A") == 5 and ds.patients.count("B") == 3
    assert ds.stats["over_cap"] == 3
    again = _path(max_tiles_per_patient=5).dataset(tmp_path, train=False)
    assert again.ids == ds.ids
    assert len(_path(max_tiles_per_patient=0).dataset(tmp_path, train=False)) == 11
    # patients.csv overrides the folders: all three images one patient → 5 tiles in total
    (tmp_path / "patients.csv").write_text("path,patient\nA/slide.png,P\nB/s1.png,P\nB/s2.png,P\n")
    one = _path(max_tiles_per_patient=5).dataset(tmp_path, train=False)
    assert len(one) == 5 and set(one.patients) == {"P"}


def test_patient_level_for_class_then_patient_folders(tmp_path: Path) -> None:
    tile = _canvas(1024, 512, [(0, 0, 1024, 512)])
    for rel in ("tumor/p1/a.png", "tumor/p1/b.png", "tumor/p2/a.png", "normal/p1/a.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(tile).save(tmp_path / rel)
    ds = _path(patient_level=1, max_tiles_per_patient=3).dataset(tmp_path, train=False)
    assert ds.class_names == ["normal", "tumor"]
    assert sorted(set(ds.patients)) == ["normal/p1", "tumor/p1", "tumor/p2"]
    assert ds.patients.count("tumor/p1") == 3  # 4 tiles capped at 3
    flat = _path(max_tiles_per_patient=3).dataset(tmp_path, train=False)  # level 0: patient = class
    assert sorted(set(flat.patients)) == ["normal", "tumor"] and len(flat) == 5
