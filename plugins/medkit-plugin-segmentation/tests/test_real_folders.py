"""Segmentation on real folders: ``imagesTr/labelsTr`` and ``images/labels`` without ``dataset.json``
(nnU-Net channel suffix), label values found and reported, a default patch for volumes of different
sizes, and progress lines during sliding-window evaluation."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from medkit_plugin_segmentation.patching import default_patch
from medkit_plugin_segmentation.progress import window_count
from medkit_plugin_segmentation.readers import SegReaderOptions, read_segmentation

SIZES = [(40, 36, 20), (70, 44, 24), (36, 40, 36), (44, 60, 22), (52, 48, 40)]


def _nifti(path: Path, arr: np.ndarray) -> None:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(nib.Nifti1Image(arr, np.eye(4)).to_bytes()))


def _volumes(root: Path, images: str = "imagesTr", labels: str = "labelsTr", channel: str = "_0000") -> dict[int, int]:
    """Volumes of different sizes, labels 0/1/2; returns the voxel count of every label value."""
    counts: dict[int, int] = {}
    for i, size in enumerate(SIZES):
        img = np.random.default_rng(i).normal(size=size).astype(np.float32)
        seg = np.zeros(size, np.uint8)
        seg[5:15, 5:15, 4:10] = 1
        seg[8:10, 8:10 + i, 5:7] = 2
        _nifti(root / images / f"case_{i:03d}{channel}.nii.gz", img)
        _nifti(root / labels / f"case_{i:03d}.nii.gz", seg)
        for v, n in zip(*np.unique(seg, return_counts=True)):
            counts[int(v)] = counts.get(int(v), 0) + int(n)
    return counts


def test_images_tr_labels_tr_without_dataset_json(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    counts = _volumes(tmp_path)
    opts = SegReaderOptions(dims=3)
    with caplog.at_level(logging.INFO):
        splits = read_segmentation(tmp_path, opts)
    assert sum(len(s) for s in splits.values()) == len(SIZES)
    assert splits["train"].class_names == ["background", "class1", "class2"]
    assert opts.labels is not None and opts.labels.counts == counts
    line = next(r.getMessage() for r in caplog.records if "label values in the 5 masks" in r.getMessage())
    assert f"2 (class2): {counts[2]} voxels" in line and f"1 (class1): {counts[1]} voxels" in line
    sample = splits["train"].load(0)
    assert sample["mask"].shape == sample["input"].shape[1:] and int(sample["mask"].max()) == 2


def test_images_labels_folder_with_channel_suffix_and_extra_channels(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    _volumes(tmp_path, images="images", labels="labels")
    _nifti(tmp_path / "images" / "case_000_0001.nii.gz", np.zeros(SIZES[0], np.float32))  # a 2nd channel
    with caplog.at_level(logging.WARNING):
        splits = read_segmentation(tmp_path, SegReaderOptions(dims=3))
    ids = sorted(it.id for s in splits.values() for it in s.items)
    assert ids == [f"images/case_{i:03d}_0000.nii.gz" for i in range(len(SIZES))]
    assert any("case_000_0001.nii.gz" in r.getMessage() and "channel" in r.getMessage() for r in caplog.records)


def test_default_patch_is_the_base_size_clipped_to_the_smallest_image() -> None:
    assert default_patch([(20, 40, 36), (26, 52, 48)], (16, 192, 192)) == (16, 32, 32)
    assert default_patch([(300, 280), (512, 512)], (224, 224)) == (224, 224)
    assert default_patch([(10, 70), (12, 90)], (224, 224)) == (16, 64)  # smaller than 16: padded


def test_window_count_matches_the_inferer() -> None:
    from monai.inferers import sliding_window_inference

    calls: list[int] = []

    def net(x: torch.Tensor) -> torch.Tensor:
        calls.append(int(x.shape[0]))
        return x

    for size, roi, overlap in [((37, 50), (16, 16), 0.5), ((20, 33, 47), (16, 32, 32), 0.25), ((8, 8), (16, 16), 0.5)]:
        calls.clear()
        sliding_window_inference(torch.zeros(1, 1, *size), roi, 3, net, overlap=overlap)
        assert sum(calls) == window_count(size, roi, overlap), (size, roi, overlap)


def test_sliding_window_evaluation_logs_progress(caplog: pytest.LogCaptureFixture) -> None:
    from medkit.api import Batch
    from medkit_plugin_segmentation.task import SegmentationTask

    task = SegmentationTask(dims=3, modality="ct", num_classes=2, patch_size=[16, 16, 16])
    task.progress_every_s = 0.0
    model = torch.nn.Conv3d(1, 2, 1)
    batches = [Batch(modality="ct", inputs=torch.randn(1, 1, 24, 40, 36), labels=torch.zeros(1, 24, 40, 36,
                                                                                              dtype=torch.long),
                     ids=[f"v{k}"]) for k in range(2)]
    with caplog.at_level(logging.INFO, logger="medkit_plugin_segmentation.progress"):
        task.evaluate(model, batches, ["background", "organ"])
    lines = [r.getMessage() for r in caplog.records if r.name == "medkit_plugin_segmentation.progress"]
    total = window_count((24, 40, 36), (16, 16, 16), 0.5)
    assert any(f"image 2/2 (v1), window {total}/{total}" in ln for ln in lines), lines
    assert all("windows/s" in ln for ln in lines) and any("left for this image" in ln for ln in lines)
    assert f"{2 * total} windows in" in lines[-1]
