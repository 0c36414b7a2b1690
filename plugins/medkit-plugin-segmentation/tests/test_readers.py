"""Reader tests for every segmentation layout, and one clear DataError per kind of bad data."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medkit.api import ConfigError, DataError
from medkit_plugin_segmentation.readers import SegReaderOptions, crop_pad, read_segmentation


def _png(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8)).save(path)


def _nifti(path: Path, arr: np.ndarray) -> None:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(nib.Nifti1Image(arr, np.eye(4)).to_bytes()))


def _pairs(root: Path, n: int = 5, size: int = 32, mask_suffix: str = "") -> None:
    for i in range(n):
        img = np.full((size, size), 30 + i, dtype=np.uint8)
        mask = np.zeros((size, size), dtype=np.uint8)
        mask[4:12, 4:12] = 255
        img[4:12, 4:12] = 200
        _png(root / "images" / f"c{i}.png", img)
        _png(root / "masks" / f"c{i}{mask_suffix}.png", mask)


def test_paired_png_folders(tmp_path: Path) -> None:
    _pairs(tmp_path, mask_suffix="_mask")
    splits = read_segmentation(tmp_path, SegReaderOptions(dims=2))
    assert splits["train"].class_names == ["background", "foreground"]
    s = splits["val"].load(0)
    assert s["input"].shape == (1, 32, 32) and s["mask"].shape == (32, 32)
    assert set(s["mask"].unique().tolist()) == {0, 1}  # 255 -> 1
    assert abs(float(s["input"].mean())) < 1e-4  # z-score


def test_split_folders_and_training_crop(tmp_path: Path) -> None:
    for split in ("train", "val", "test"):
        _pairs(tmp_path / split, n=2, size=40)
    opts = SegReaderOptions(dims=2, patch_size=(16, 16), fg_fraction=1.0)
    splits = read_segmentation(tmp_path, opts)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [2, 2, 2]
    crop = splits["train"].load(0, seed=3)
    assert crop["input"].shape == (1, 16, 16) and bool((crop["mask"] > 0).any())  # centred on foreground
    assert splits["val"].load(0)["input"].shape == (1, 40, 40)  # evaluation sees the whole image
    assert torch.equal(splits["train"].load(1, seed=9)["input"], splits["train"].load(1, seed=9)["input"])


def test_crop_pad_pads_small_images() -> None:
    x, m = torch.arange(100.0).reshape(1, 10, 10), torch.ones(10, 10, dtype=torch.long)
    cx, cm = crop_pad(x, m, (16, 16), torch.Generator().manual_seed(0), 0.0)
    assert cx.shape == (1, 16, 16) and int(cm.sum()) == 100 and float(cx.min()) == 0.0


def test_msd_dataset_json_3d(tmp_path: Path) -> None:
    training = []
    for i in range(4):
        img = np.random.default_rng(i).normal(size=(32, 32, 16)).astype(np.float32)
        seg = np.zeros((32, 32, 16), dtype=np.uint8)
        seg[8:16, 8:16, 4:8] = 1
        seg[10:12, 10:12, 5:6] = 2
        _nifti(tmp_path / "imagesTr" / f"liver_{i}.nii.gz", img)
        _nifti(tmp_path / "labelsTr" / f"liver_{i}.nii.gz", seg)
        training.append({"image": f"./imagesTr/liver_{i}.nii.gz", "label": f"./labelsTr/liver_{i}.nii.gz"})
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "liver", "2": "tumour"},
                                                       "training": training, "test": []}))
    splits = read_segmentation(tmp_path, SegReaderOptions(dims=3))
    assert splits["train"].class_names == ["background", "liver", "tumour"]
    s = splits["train"].load(0)
    assert s["input"].shape == (1, 16, 32, 32) and s["mask"].shape == (16, 32, 32)
    assert int(s["mask"].max()) == 2
    with pytest.raises(ConfigError, match="task.num_classes is 2"):
        read_segmentation(tmp_path, SegReaderOptions(dims=3, num_classes=2))


def test_nnunet_v2_layout(tmp_path: Path) -> None:
    for i in range(3):
        _nifti(tmp_path / "imagesTr" / f"case_{i:03d}_0000.nii.gz", np.zeros((16, 16, 16), np.float32))
        _nifti(tmp_path / "labelsTr" / f"case_{i:03d}.nii.gz", np.zeros((16, 16, 16), np.uint8))
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "tumour": 1},
                                                       "file_ending": ".nii.gz"}))
    splits = read_segmentation(tmp_path, SegReaderOptions(dims=3))
    assert splits["test"].class_names == ["background", "tumour"] and len(splits["train"]) == 1


def test_mask_shape_mismatch_names_the_file(tmp_path: Path) -> None:
    _pairs(tmp_path)
    _png(tmp_path / "masks" / "c2.png", np.zeros((30, 32)))
    with pytest.raises(DataError, match=r"masks/c2.png: mask shape \[30, 32\] differs from its image"):
        read_segmentation(tmp_path, SegReaderOptions(dims=2))
    splits = read_segmentation(tmp_path, SegReaderOptions(dims=2, on_error="skip"))
    assert sum(len(s) for s in splits.values()) == 4 and "c2.png" in splits["train"].skipped[0][0]


def test_label_outside_class_list_names_the_mask(tmp_path: Path) -> None:
    _pairs(tmp_path)
    bad = np.zeros((32, 32), dtype=np.uint8)
    bad[0, 0] = 3
    for i in range(5):
        _png(tmp_path / "masks" / f"c{i}.png", bad)
    splits = read_segmentation(tmp_path, SegReaderOptions(dims=2, num_classes=2))
    with pytest.raises(DataError, match=r"masks/c\d.png: label value 3 is outside the class list"):
        splits["train"].load(0)


def test_missing_mask_empty_folder_and_empty_split(tmp_path: Path) -> None:
    _pairs(tmp_path / "a")
    (tmp_path / "a" / "masks" / "c1.png").unlink()
    with pytest.raises(DataError, match=r"images/c1.png: no mask named c1"):
        read_segmentation(tmp_path / "a", SegReaderOptions(dims=2))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        read_segmentation(tmp_path / "empty", SegReaderOptions(dims=2))
    for split in ("train", "val", "test"):
        _pairs(tmp_path / "b" / split, n=1 if split != "test" else 0)
    (tmp_path / "b" / "test" / "masks").mkdir(parents=True, exist_ok=True)
    (tmp_path / "b" / "test" / "images").mkdir(parents=True, exist_ok=True)
    with pytest.raises(DataError, match=r"test/images: the 'test' split is empty"):
        read_segmentation(tmp_path / "b", SegReaderOptions(dims=2))
