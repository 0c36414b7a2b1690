"""One data path: a volume stored RAS and the same volume stored LPS give identical pre-training
samples, embeddings and fine-tuning inputs (fine-tuning once read nibabel's raw array, flipped)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

nib = pytest.importorskip("nibabel")

SHAPE = (20, 24, 18)  # (x, y, z)
SPACING = (2.0, 1.5, 1.0)


def _ras_affine() -> np.ndarray:
    affine = np.diag([*SPACING, 1.0])
    affine[:3, 3] = [-10.0, 4.0, 30.0]
    return affine


def _to_lps(arr: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same image stored with x and y reversed (an LPS file): flip the array and the affine
    together, so that every voxel keeps its world position."""
    flip = np.eye(4)
    for axis in (0, 1):
        flip[axis, axis] = -1.0
        flip[axis, 3] = arr.shape[axis] - 1
    return np.ascontiguousarray(arr[::-1, ::-1]), affine @ flip


def _save(path: Path, arr: np.ndarray, affine: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(arr, affine)
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))


def _volume(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)  # no symmetry: any flip changes it
    return rng.integers(-1000, 1500, SHAPE).astype(np.int16)


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``ras`` and ``lps`` roots holding the same volumes (pre-training folder, classification
    class folders, segmentation images/ + masks/), stored in the two orientations."""
    base = tmp_path_factory.mktemp("orientation")
    out = {}
    for name in ("ras", "lps"):
        root = base / name
        for k in range(6):
            arr, mask = _volume(k), (_volume(k) > 600).astype(np.uint8)
            affine = _ras_affine()
            if name == "lps":
                (arr, affine), (mask, _) = _to_lps(arr, affine), _to_lps(mask, affine)
                assert nib.aff2axcodes(affine) == ("L", "P", "S")
            else:
                assert nib.aff2axcodes(affine) == ("R", "A", "S")
            _save(root / "pretrain" / f"v{k}.nii.gz", arr, affine)
            _save(root / "cls" / ("a" if k % 2 else "b") / f"v{k}.nii.gz", arr, affine)
            _save(root / "seg" / "images" / f"v{k}.nii.gz", arr, affine)
            _save(root / "seg" / "masks" / f"v{k}.nii.gz", mask, affine)
        out[name] = root
    return out


def _ct():
    from medkit_plugin_ct.modality import CTModality

    return CTModality(input_size=(16, 32, 32), depth=16, depth_stride=8, cache_bytes=0)


def _samples(ds) -> list[torch.Tensor]:
    return [ds.load(i, seed=None)["input"] for i in range(len(ds))]


def test_pretraining_samples_are_the_same(roots: dict[str, Path]) -> None:
    a, b = (_ct().dataset(roots[n] / "pretrain", train=False) for n in ("ras", "lps"))
    assert a.ids == b.ids and len(a) > 0
    for x, y in zip(_samples(a), _samples(b)):
        assert torch.equal(x, y)


def test_embeddings_are_the_same(roots: dict[str, Path]) -> None:
    from medkit.finetune.embed import pooled_features
    from medkit.testing.tasks import tiny_backbone

    torch.manual_seed(0)
    encoder = tiny_backbone(3).encoder.eval()
    feats = []
    for name in ("ras", "lps"):
        ds = _ct().dataset(roots[name] / "pretrain", train=False)
        feats.append(pooled_features(encoder, "ct", "patch_3d", ds, list(range(len(ds)))))
    assert feats[0].shape[0] > 0 and torch.equal(feats[0], feats[1])


def test_classification_inputs_are_the_same(roots: dict[str, Path]) -> None:
    from medkit_plugin_classification.task import ClassificationTask

    task = ClassificationTask(dims=3, modality="ct", normalize="none")
    a, b = (task.splits(roots[n] / "cls", seed=0) for n in ("ras", "lps"))
    for split in ("train", "val", "test"):
        assert a[split].ids == b[split].ids
        for x, y in zip(_samples(a[split]), _samples(b[split])):
            assert torch.equal(x, y)
    # and it is what pre-training reads: the RAS array as [C, Z, X, Y]
    first = a["train"].items[0]
    raw = np.asarray(nib.load(str(roots["ras"] / "cls" / first.id)).dataobj)
    assert torch.equal(a["train"].load(0)["input"], torch.from_numpy(raw.transpose(2, 0, 1)[None].astype(np.float32)))


def test_segmentation_inputs_and_masks_are_the_same(roots: dict[str, Path]) -> None:
    from medkit_plugin_segmentation.task import SegmentationTask

    task = SegmentationTask(dims=3, modality="ct", normalize="none", num_classes=2)
    a, b = (task.splits(roots[n] / "seg", seed=0) for n in ("ras", "lps"))
    for split in ("train", "val", "test"):
        assert a[split].ids == b[split].ids
        for i in range(len(a[split])):
            x, y = a[split].load(i, seed=None), b[split].load(i, seed=None)
            assert torch.equal(x["input"], y["input"]) and torch.equal(x["mask"], y["mask"])


def test_fine_tuning_spacing_resamples_both_orientations_alike(roots: dict[str, Path]) -> None:
    from medkit_plugin_classification.task import ClassificationTask
    from medkit_plugin_segmentation.task import SegmentationTask

    cls = ClassificationTask(dims=3, modality="ct", normalize="none", spacing=[1.0, 1.0, 1.0])
    a, b = (cls.splits(roots[n] / "cls", seed=0) for n in ("ras", "lps"))
    x, y = a["train"].load(0)["input"], b["train"].load(0)["input"]
    # [C, Z, X, Y]: x at 2 mm and y at 1.5 mm become 1 mm; z is already 1 mm
    assert x.shape[1] == SHAPE[2] and abs(x.shape[2] - 2 * SHAPE[0]) <= 1 and abs(x.shape[3] - 1.5 * SHAPE[1]) <= 1
    assert torch.allclose(x, y, atol=1e-3)
    seg = SegmentationTask(dims=3, modality="ct", normalize="none", num_classes=2, spacing=[1.0, 1.0, 1.0])
    a, b = (seg.splits(roots[n] / "seg", seed=0) for n in ("ras", "lps"))
    s, t = a["train"].load(0, seed=None), b["train"].load(0, seed=None)
    assert s["mask"].shape == s["input"].shape[1:] == x.shape[1:]
    assert set(s["mask"].unique().tolist()) <= {0, 1} and torch.equal(s["mask"], t["mask"])
