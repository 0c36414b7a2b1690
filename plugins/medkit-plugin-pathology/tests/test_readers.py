"""Pathology readers: RGB channel order, TIFF pages, odd modes, labels, errors."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medkit.api import ConfigError, DataError
from medkit.testing import create
from medkit_plugin_pathology.readers import to_rgb


def _path(**kw):
    return create("modality", "pathology", **kw)


def _solid(rgb: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> Image.Image:
    return Image.new("RGB", size, rgb)


def test_pure_red_png_is_channel_zero(tmp_path: Path) -> None:
    _solid((255, 0, 0)).save(tmp_path / "red.png")
    x = _path(input_size=32).dataset(tmp_path, train=False).load(0)["input"]
    assert x.shape == (3, 32, 32)
    assert torch.all(x[0] == 1.0) and torch.all(x[1] == 0.0) and torch.all(x[2] == 0.0)


def test_channel_order_known_answer_png_jpeg(tmp_path: Path) -> None:
    colour = (200, 60, 120)
    _solid(colour).save(tmp_path / "c.png")
    _solid(colour).save(tmp_path / "c.jpg", quality=100)
    ds = _path(input_size=16).dataset(tmp_path, train=False)
    want = torch.tensor(colour, dtype=torch.float32) / 255
    assert torch.allclose(ds.load(0)["input"].mean(dim=(1, 2)), want, atol=3 / 255)  # jpg
    assert torch.allclose(ds.load(1)["input"].mean(dim=(1, 2)), want, atol=1e-6)  # png


def test_multi_page_tiff_reads_the_first_page(tmp_path: Path) -> None:
    first, second = _solid((255, 0, 0)), _solid((0, 0, 255), (32, 32))
    first.save(tmp_path / "pyramid.tif", save_all=True, append_images=[second], compression="tiff_deflate")
    x = _path(input_size=16).dataset(tmp_path, train=False).load(0)["input"]
    assert torch.all(x[0] == 1.0) and torch.all(x[2] == 0.0)


def test_large_tiff_is_tiled(tmp_path: Path) -> None:
    _solid((200, 80, 150), (1100, 600)).save(tmp_path / "big.tiff")
    ds = _path().dataset(tmp_path, train=False)
    assert ds.ids == ["big.tiff#x0_y0", "big.tiff#x1_y0"]


def test_rgba_is_composited_on_white_and_16bit_grey_is_scaled() -> None:
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent → white
    assert np.asarray(to_rgb(rgba)).tolist() == [[[255, 255, 255]] * 4] * 4
    half = Image.new("RGBA", (4, 4), (255, 0, 0, 255))
    assert np.asarray(to_rgb(half))[0, 0].tolist() == [255, 0, 0]
    grey16 = Image.fromarray(np.full((4, 4), 65535, np.uint16))
    assert grey16.mode.startswith("I")
    assert np.asarray(to_rgb(grey16))[0, 0].tolist() == [255, 255, 255]
    cmyk = Image.new("CMYK", (2, 2), (0, 255, 255, 0))  # cyan-free, magenta+yellow = red
    assert np.asarray(to_rgb(cmyk))[0, 0].tolist() == [255, 0, 0]


def test_labels_csv_overrides_folders(tmp_path: Path) -> None:
    for rel in ("x/a.png", "y/b.png"):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        _solid((200, 60, 120)).save(tmp_path / rel)
    ds = _path(input_size=16).dataset(tmp_path, train=False)
    assert ds.class_names == ["x", "y"] and ds.labels == [0, 1]
    assert _path(input_size=16, folder_labels=False).dataset(tmp_path, train=False).labels is None
    (tmp_path / "labels.csv").write_text("path,label\nx/a.png,benign\ny/b.png,benign\n")
    ds = _path(input_size=16).dataset(tmp_path, train=False)
    assert ds.class_names == ["benign"] and ds.labels == [0, 0]
    assert ds.load(1)["label"] == 0


def test_normalize_imagenet(tmp_path: Path) -> None:
    _solid((255, 0, 0)).save(tmp_path / "red.png")
    x = _path(input_size=16, normalize="imagenet").dataset(tmp_path, train=False).load(0)["input"]
    assert torch.allclose(x[:, 0, 0], torch.tensor([(1 - 0.485) / 0.229, -0.456 / 0.224, -0.406 / 0.225]))


def test_corrupt_file_raises_or_is_skipped(tmp_path: Path, caplog) -> None:
    _solid((200, 60, 120)).save(tmp_path / "good.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg" * 3)
    with pytest.raises(DataError, match=r"broken\.jpg"):
        _path().dataset(tmp_path, train=False)
    with caplog.at_level(logging.WARNING):
        ds = _path(on_error="skip").dataset(tmp_path, train=False)
    assert ds.ids == ["good.png#x0_y0"] and ds.skipped[0][0] == "broken.jpg"
    assert "broken.jpg" in caplog.text


def test_truncated_png_is_caught_by_the_tissue_thumbnail(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 255, (256, 256, 3)).astype(np.uint8)
    Image.fromarray(noise).save(tmp_path / "cut.png")
    data = (tmp_path / "cut.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.png"):
        _path().dataset(tmp_path, train=False)


def test_volume_is_not_a_2d_image(tmp_path: Path) -> None:
    nib = pytest.importorskip("nibabel")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)), str(tmp_path / "vol.nii.gz"))
    with pytest.raises(DataError, match=r"vol\.nii\.gz.*expected a 2D image"):
        _path().dataset(tmp_path, train=False)


def test_empty_folders_and_no_tissue(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="empty"):
        _path().dataset(tmp_path, train=False)
    (tmp_path / "notes.txt").write_text("nothing")
    with pytest.raises(DataError, match="empty of"):
        _path().dataset(tmp_path, train=False)
    _solid((250, 250, 250)).save(tmp_path / "blank.png")
    with pytest.raises(DataError, match="no tissue tile"):
        _path().dataset(tmp_path, train=False)


def test_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="min_tissue"):
        _path(min_tissue=1.5)
    with pytest.raises(ConfigError, match="normalize"):
        _path(normalize="bgr")
    with pytest.raises(ConfigError, match="max_tiles_per_patient"):
        _path(max_tiles_per_patient=-1)
