"""Known answers for the ct preprocessing: HU window, resampling, window count, flips, options.

The shared window helpers (window_starts, caches) are tested in tests/data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medkit.api import ConfigError
from medkit.testing import read_labels
from medkit_plugin_ct.modality import CTModality, hu_window

nib = pytest.importorskip("nibabel")


def _nifti(path: Path, data: np.ndarray, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> Path:
    nib.save(nib.Nifti1Image(data.astype(np.float32), np.diag([*spacing, 1.0])), path)
    return path


def test_hu_window_known_answer() -> None:
    hu = torch.tensor([-3000.0, -1024.0, -512.0, 0.0, 512.0, 1024.0, 3000.0])
    assert torch.allclose(hu_window(hu, (-1024, 1024)),
                          torch.tensor([-1.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.0]))
    assert torch.allclose(hu_window(torch.tensor([-10.0, 0.0, 25.0, 50.0, 200.0]), (0, 100)),
                          torch.tensor([-1.0, -1.0, -0.5, 0.0, 1.0]))


def test_window_count_and_values_end_to_end(tmp_path: Path) -> None:
    data = np.full((8, 8, 40), -512.0)
    data[:, :, :20] = 2048.0  # clipped to 1024 -> 1.0
    _nifti(tmp_path / "v.nii.gz", data)
    ds = CTModality(max_upsample=None).dataset(tmp_path, train=False)
    assert ds.ids == [f"v.nii.gz#w{k}" for k in range(4)]
    first, last = ds.load(0)["input"], ds.load(3)["input"]
    assert first.shape == last.shape == (1, 16, 192, 192)
    assert torch.allclose(first, torch.ones_like(first), atol=1e-6)  # slices 0..15
    assert torch.allclose(last, torch.full_like(last, -0.5), atol=1e-6)  # slices 24..39


def test_slice_axis_is_resampled_to_spacing(tmp_path: Path) -> None:
    _nifti(tmp_path / "thick.nii", np.zeros((8, 8, 20)), spacing=(0.7, 0.7, 2.0))
    assert len(CTModality(max_upsample=None).dataset(tmp_path, train=False)) == 4  # 20 x 2 mm -> 40 slices
    assert len(CTModality(max_upsample=None, spacing=2.0).dataset(tmp_path, train=False)) == 1  # 20 slices
    assert len(CTModality(max_upsample=None, depth_stride=16).dataset(tmp_path, train=False)) == 2


def test_short_volume_is_padded_with_air(tmp_path: Path) -> None:
    _nifti(tmp_path / "short.nii", np.full((8, 8, 6), 0.0))
    ds = CTModality(max_upsample=None).dataset(tmp_path, train=False)
    x = ds.load(0)["input"]
    assert len(ds) == 1
    assert (x[:, :5] == -1.0).all() and (x[:, 11:] == -1.0).all()
    assert torch.allclose(x[:, 5:11], torch.zeros(1, 6, 192, 192), atol=1e-6)


def test_orientation_is_ras(tmp_path: Path) -> None:
    data = np.full((8, 8, 40), -1024.0)
    data[:, :, :20] = 1024.0  # bright at the start of the file's third axis
    affine = np.diag([1.0, 1.0, -1.0, 1.0])  # ... which points inferior: LPI-like storage
    nib.save(nib.Nifti1Image(data.astype(np.float32), affine), tmp_path / "flipped.nii")
    ds = CTModality(max_upsample=None).dataset(tmp_path, train=False)
    assert float(ds.load(0)["input"].mean()) < -0.9  # after RAS the bright half is superior (last)
    assert float(ds.load(3)["input"].mean()) > 0.9


def test_seeded_flips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    _nifti(tmp_path / "r.nii", rng.uniform(-1000, 1000, (8, 8, 16)))
    plain = CTModality(max_upsample=None).dataset(tmp_path, train=False)
    base = plain.load(0)["input"]
    assert torch.equal(plain.load(0, seed=3)["input"], base)  # train=False never augments
    every = CTModality(max_upsample=None, flip_prob=1.0).dataset(tmp_path, train=True)
    assert torch.equal(every.load(0, seed=3)["input"], torch.flip(base, [1, 2, 3]))
    train = CTModality(max_upsample=None).dataset(tmp_path, train=True)
    assert torch.equal(train.load(0)["input"], base)  # seed=None: un-augmented view
    for seed in range(6):
        draws = torch.rand(3, generator=torch.Generator().manual_seed(seed))
        dims = [d + 1 for d in range(3) if draws[d] < 0.5]
        expected = torch.flip(base, dims) if dims else base
        assert torch.equal(train.load(0, seed=seed)["input"], expected)


def test_input_size_and_cache_bound(tmp_path: Path) -> None:
    for i in range(3):
        _nifti(tmp_path / f"v{i}.nii", np.full((8, 8, 24), 100.0 * i))
    ds = CTModality(max_upsample=None, input_size=(8, 32, 48), cache_size=1).dataset(tmp_path, train=False)
    assert len(ds) == 6
    for i in range(len(ds)):
        assert ds.load(i)["input"].shape == (1, 8, 32, 48)
    assert len(ds._cache) == 1


def test_labels_csv(tmp_path: Path) -> None:
    for name in ("a.nii", "b.nii", "c.nii"):
        _nifti(tmp_path / name, np.zeros((4, 4, 16)))
    (tmp_path / "labels.csv").write_text("id,label\na.nii,tumour\nb.nii,healthy\n")
    ds = CTModality(max_upsample=None).dataset(tmp_path, train=False)
    assert ds.class_names == ["healthy", "tumour"]
    assert ds.labels == [1, 0, -1]
    assert ds.load(0)["label"] == 1
    (tmp_path / "labels.csv").write_text("id,label\na.nii,2\nb.nii,0\n")
    assert read_labels(tmp_path, ["a.nii", "b.nii", "c.nii"]) == ([2, 0, -1], ["0", "1", "2"])


@pytest.mark.parametrize("kwargs", [{"window": (100.0, -100.0)}, {"spacing": 0.0}, {"depth": 0},
                                    {"input_size": (16, 192)}, {"on_error": "ignore"},
                                    {"orientation": "XYZ"}, {"flip_prob": 2.0}])
def test_bad_options_are_config_errors(kwargs: dict) -> None:
    with pytest.raises(ConfigError, match="modality ct"):
        CTModality(**kwargs)


def test_disk_cache_gives_identical_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDKIT_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "data"
    data.mkdir()
    _nifti(data / "v.nii", np.random.default_rng(0).uniform(-1000, 1000, (8, 8, 24)), spacing=(1, 1, 1.5))
    plain = CTModality(max_upsample=None, input_size=(16, 32, 32)).dataset(data, train=False)
    ref = [plain.load(i)["input"] for i in range(len(plain))]
    first = CTModality(max_upsample=None, input_size=(16, 32, 32), disk_cache=True).dataset(data, train=False)
    assert all(torch.equal(first.load(i)["input"], ref[i]) for i in range(len(first)))
    assert len(list((tmp_path / "cache" / "volumes").rglob("*.safetensors"))) == 1
    later = CTModality(max_upsample=None, input_size=(16, 32, 32), disk_cache=True)
    later.prepare = lambda vol: pytest.fail("a disk-cached volume was preprocessed again")
    again = later.dataset(data, train=False)
    assert all(torch.equal(again.load(i)["input"], ref[i]) for i in range(len(again)))
    CTModality(max_upsample=None, input_size=(16, 32, 32), window=(-500.0, 500.0), disk_cache=True).dataset(data, train=False).load(0)
    assert len(list((tmp_path / "cache" / "volumes").rglob("*.safetensors"))) == 2  # other options, other file
