"""Known answers for the mri preprocessing: percentile clip + z-score, trimming, windows, flips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medkit.api import ConfigError
from medkit.testing import window_starts
from medkit_plugin_mri.modality import MRIModality, clip_zscore

nib = pytest.importorskip("nibabel")


def _nifti(path: Path, data: np.ndarray, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> Path:
    nib.save(nib.Nifti1Image(data.astype(np.float32), np.diag([*spacing, 1.0])), path)
    return path


def test_clip_zscore_known_answer() -> None:
    x = torch.arange(10, dtype=torch.float32)
    # 10th/90th percentiles (linear) are 0.9 and 8.1; clipped mean 4.5, population std sqrt(6.792)
    out = clip_zscore(x, (10.0, 90.0))
    std = 6.792 ** 0.5
    expected = (torch.tensor([0.9, 1, 2, 3, 4, 5, 6, 7, 8, 8.1], dtype=torch.float64) - 4.5) / std
    assert torch.allclose(out.double(), expected, atol=1e-6)
    assert torch.equal(clip_zscore(torch.full((4, 4), 7.0), (0.2, 99.8)), torch.zeros(4, 4))


def test_outlier_is_clipped_at_the_high_percentile() -> None:
    x = torch.randn(1, 16, 32, 32, generator=torch.Generator().manual_seed(0))
    x[0, 0, 0, 0] = 1e6
    out = clip_zscore(x, (0.2, 99.8))
    assert float(out.max()) < 5.0  # the spike no longer dominates the scale
    assert abs(float(out.mean())) < 1e-5 and abs(float(out.std(unbiased=False)) - 1) < 1e-4


def test_trim_and_window_count_known_answer(tmp_path: Path) -> None:
    data = np.zeros((8, 8, 50))
    data[:, :, :5] = 1000.0  # the 10 % dropped at the bottom
    data[:, :, 5:] = np.arange(45)[None, None, :]
    _nifti(tmp_path / "v.nii", data)
    ds = MRIModality(max_upsample=None).dataset(tmp_path, train=False)
    # 50 slices, 5 dropped at each end -> 40 -> windows 0, 8, 16, 24
    assert ds.ids == [f"v.nii#w{k}" for k in range(4)]
    vol = ds.volume(0)
    assert vol.shape == (1, 40, 192, 192)
    assert torch.allclose(vol[0, :, 0, 0], torch.arange(40, dtype=torch.float32), atol=1e-4)
    assert window_starts(40, 16, 8) == [0, 8, 16, 24]


def test_spacing_option_resamples_the_slice_axis(tmp_path: Path) -> None:
    _nifti(tmp_path / "v.nii", np.random.default_rng(0).normal(size=(8, 8, 20)), spacing=(1, 1, 2.0))
    assert len(MRIModality(max_upsample=None, drop_fraction=0.0).dataset(tmp_path, train=False)) == 1  # 20 native
    assert len(MRIModality(max_upsample=None, drop_fraction=0.0, spacing=1.0).dataset(tmp_path, train=False)) == 4  # 40


def test_volume_normalisation_shares_one_scale(tmp_path: Path) -> None:
    data = np.random.default_rng(1).normal(100.0, 10.0, (8, 8, 40))
    data[:, :, 20:] += 500.0
    _nifti(tmp_path / "v.nii", data)
    per_volume = MRIModality(max_upsample=None, drop_fraction=0.0, normalize="volume").dataset(tmp_path, train=False)
    per_window = MRIModality(max_upsample=None, drop_fraction=0.0).dataset(tmp_path, train=False)
    assert float(per_volume.load(0)["input"].mean()) < -0.5 < 0.5 < float(per_volume.load(3)["input"].mean())
    for i in (0, 3):
        assert abs(float(per_window.load(i)["input"].mean())) < 1e-4


def test_seeded_flips(tmp_path: Path) -> None:
    _nifti(tmp_path / "r.nii", np.random.default_rng(0).normal(size=(8, 8, 20)))
    base = MRIModality(max_upsample=None, drop_fraction=0.0).dataset(tmp_path, train=False).load(0)["input"]
    train = MRIModality(max_upsample=None, drop_fraction=0.0).dataset(tmp_path, train=True)
    for seed in range(5):
        draws = torch.rand(3, generator=torch.Generator().manual_seed(seed))
        dims = [d + 1 for d in range(3) if draws[d] < 0.5]
        got = train.load(0, seed=seed)["input"]
        assert torch.equal(got, torch.flip(base, dims) if dims else base)
        assert torch.equal(got, train.load(0, seed=seed)["input"])


@pytest.mark.parametrize("kwargs", [{"percentiles": (99.0, 1.0)}, {"drop_fraction": 0.5},
                                    {"normalize": "global"}, {"spacing": -1.0},
                                    {"input_size": (16, 0, 192)}, {"on_error": "warn"}])
def test_bad_options_are_config_errors(kwargs: dict) -> None:
    with pytest.raises(ConfigError, match="modality mri"):
        MRIModality(**kwargs)
