"""The pathology modality passes the shared modality contract; its demo data exercise the readers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from medkit.testing import ModalityContract, create


class TestPathologyContract(ModalityContract):
    name = "pathology"


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return create("modality", "pathology").demo_data(tmp_path_factory.mktemp("pathology-demo"))


def test_demo_tiles_slides_drops_background_and_reads_patients(demo_root: Path) -> None:
    ds = create("modality", "pathology").dataset(demo_root, train=False)
    assert ds.class_names == ["normal", "tumor"] and sorted(set(ds.labels)) == [0, 1]
    assert all(re.fullmatch(r".+\.(png|jpg|tif)#x\d+_y\d+", i) for i in ds.ids)
    assert sorted(set(ds.patients)) == ["N01", "N02", "T01", "T02"]  # from patients.csv
    # every 1024² slide is a 2×2 grid of 512 tiles with one empty quadrant dropped
    for slide in ("normal/N01_slide.png", "normal/N02_slide.tif", "tumor/T01_slide.png", "tumor/T02_slide.tif"):
        assert len([i for i in ds.ids if i.startswith(slide + "#")]) == 3, slide
    assert not any(i.startswith("normal/N01_blank.png") for i in ds.ids)
    assert ds.stats == {"images": 17, "tiles": 29, "background": 5, "over_cap": 0}
    assert ds.skipped == []


def test_demo_samples_are_rgb_tiles_in_unit_range(demo_root: Path) -> None:
    ds = create("modality", "pathology").dataset(demo_root, train=False)
    for i in (0, len(ds) - 1):
        x = ds.load(i)["input"]
        assert x.shape == (3, 224, 224) and x.dtype == torch.float32
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
        # H&E: red channel above green (eosin pink, haematoxylin purple), never BGR-swapped
        assert float(x[0].mean()) > float(x[1].mean())


def test_seeded_augmentation_stays_inside_the_tile(demo_root: Path) -> None:
    train = create("modality", "pathology").dataset(demo_root, train=True)
    a, b = train.load(2, seed=5)["input"], train.load(2, seed=5)["input"]
    assert torch.equal(a, b)
    assert not torch.equal(a, train.load(2, seed=6)["input"])
    assert not torch.equal(a, train.load(2)["input"])
    evaluation = create("modality", "pathology").dataset(demo_root, train=False)
    assert torch.equal(evaluation.load(2, seed=5)["input"], train.load(2)["input"])
