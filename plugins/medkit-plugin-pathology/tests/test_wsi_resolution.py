"""Whole-slide resolution sanity on openslide-python's test slides: a tile_mpp finer than the slide is
refused with the slide's own µm/px and a setting to use; where the µm/px came from is logged."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from medkit.api import DataError
from medkit_plugin_pathology import wsi
from medkit_plugin_pathology.modality import PathologyModality

openslide = pytest.importorskip("openslide")

FIXTURES = Path(__file__).parent / "fixtures" / "wsi"
BOXES_MPP = 1e4 / 28.346456527709961  # boxes.tiff: 28.35 px/cm in its TIFF tags, 352.8 µm/px


def test_boxes_at_the_default_tile_mpp_is_refused_with_its_own_resolution() -> None:
    with pytest.raises(DataError) as err:
        wsi.slide_tiles(FIXTURES / "boxes.tiff", "boxes.tiff")  # default tile_mpp 0.5
    text = str(err.value)
    assert "boxes.tiff" in text and "tile_mpp=0.5" in text and "352.8 µm/px" in text
    assert "tiff.XResolution" in text and "modality.pathology.tile_mpp=353" in text
    # the suggested setting works: one 300×250 slide gives tiles of its own pixels
    refs, grid = wsi.slide_tiles(FIXTURES / "boxes.tiff", "boxes.tiff", tile_mpp=353, tile_size=64, min_tissue=0)
    assert grid == 12 and len(refs) == 12


def test_a_small_tolerance_accepts_a_rounded_nominal_resolution() -> None:
    info = wsi.slide_info(FIXTURES / "boxes.tiff")
    wsi.check_tile_mpp(FIXTURES / "boxes.tiff", info, BOXES_MPP * 0.95)  # 5 % finer: a rounded value
    with pytest.raises(DataError, match="finer than the slide"):
        wsi.check_tile_mpp(FIXTURES / "boxes.tiff", info, BOXES_MPP * 0.8)


def test_the_mpp_source_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="medkit_plugin_pathology.wsi")
    wsi.slide_info(FIXTURES / "small.svs")
    wsi.slide_info(FIXTURES / "boxes.tiff")
    wsi.slide_info(FIXTURES / "boxes.tiff", slide_mpp=0.5)
    lines = [r.getMessage() for r in caplog.records]
    assert any("small.svs: 0.499 µm per level-0 pixel, from OpenSlide property openslide.mpp-x" in line
               for line in lines)
    assert any("boxes.tiff: 352.8 µm per level-0 pixel, from TIFF tags tiff.XResolution / tiff.ResolutionUnit"
               in line for line in lines)
    assert any("boxes.tiff: 0.5 µm per level-0 pixel, from modality.pathology.slide_mpp" in line for line in lines)


def test_a_folder_of_too_coarse_slides_does_not_blame_min_tissue(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "boxes.tiff", tmp_path / "boxes.tiff")
    with pytest.raises(DataError) as err:
        PathologyModality(on_error="skip").dataset(tmp_path, train=True)
    assert "no tissue tile left" in str(err.value) and "lower modality.pathology.min_tissue" not in str(err.value)
    # a slide smaller than one tile (at a valid tile_mpp): the same
    with pytest.raises(DataError) as err:
        PathologyModality(on_error="skip", tile_mpp=400.0).dataset(tmp_path, train=True)
    assert "lower modality.pathology.min_tissue" not in str(err.value)
