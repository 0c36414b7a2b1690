"""X-ray images larger than needed are reduced before their intensity scaling, in float32, and match
the full-resolution path within a stated tolerance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medkit.api import Entry2D
from medkit.data.modality2d import sample_of
from medkit.testing import create
from medkit_plugin_xray.demo import write_dicom
from medkit_plugin_xray.readers import read_grey, reduce_factor, scale_to_unit

#: The tolerance the reduced path is held to against scaling at full resolution (values in [0, 1]):
#: mean |difference| of a view, and its largest pixel difference (noisy 16-bit radiographs; the
#: difference is the noise the box average removes before the bicubic view, not a shift in contrast).
MEAN_TOL, MAX_TOL = 0.01, 0.05


def _radiograph(n: int, seed: int = 0) -> np.ndarray:
    """A noisy uint16 chest-like image (two bright lungs, ribs, a dark background)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:n, 0:n] / n
    img = (20000 + 15000 * np.exp(-((x - .35) ** 2 + (y - .5) ** 2) / .03)
           + 15000 * np.exp(-((x - .65) ** 2 + (y - .5) ** 2) / .03) + 8000 * np.sin(40 * y) * (x > .3) * (x < .7))
    return np.clip(img + rng.normal(0, 1500, img.shape), 0, 65535).astype(np.uint16)


@pytest.mark.parametrize("name", ["r.png", "r.jpg"])
def test_reduced_scaling_matches_full_resolution(tmp_path: Path, name: str) -> None:
    arr = _radiograph(1024)
    path = tmp_path / name
    Image.fromarray(arr if name.endswith(".png") else (arr >> 8).astype(np.uint8)).save(path, quality=90)
    mod = create("modality", "xray", input_size=96)
    assert mod.work_side() == 215  # ceil(96 / sqrt(0.2)): the smallest crop keeps 96 source pixels across
    new = mod.read_image(Entry2D(name, name, path, name, kind="raster"))
    assert min(new.size) >= mod.work_side() and new.size[0] <= 1024 // 2  # really reduced
    old = Image.fromarray(read_grey(path, "raster"))  # the full-resolution path
    assert old.size == (1024, 1024)
    for seed in (None, 1, 2, 3):
        a = sample_of(mod, old, None, name, None, seed)["input"]
        b = sample_of(mod, new, None, name, None, seed)["input"]
        diff = (a - b).abs()
        assert float(diff.mean()) <= MEAN_TOL and float(diff.max()) <= MAX_TOL, (seed, diff.mean(), diff.max())


def test_percentiles_come_from_the_full_image_not_the_averaged_one() -> None:
    full = np.random.default_rng(0).uniform(0.0, 1000.0, (400, 400)).astype(np.float32)
    reduced = np.asarray(Image.fromarray(full).reduce(4))  # averages of 16 pixels: 500 ± 72
    out = scale_to_unit(reduced, intensity="percentile", percentiles=(0.5, 99.5), type_max=None, full=full)
    assert abs(float(out.mean()) - 0.5) < 0.01 and float(out.std()) < 0.1  # the range [5, 995] of the file
    alone = scale_to_unit(reduced, intensity="percentile", percentiles=(0.5, 99.5), type_max=None)
    assert float(alone.std()) > 0.15  # the averaged noise stretched to [0, 1]: another contrast


def test_scaling_runs_in_float32(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.fromarray(_radiograph(256)).save(tmp_path / "r.png")
    seen: list[np.dtype] = []
    real = np.percentile

    def spy(a, q, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(np.asarray(a).dtype)
        return real(a, q, *args, **kwargs)

    monkeypatch.setattr(np, "percentile", spy)
    out = read_grey(tmp_path / "r.png", "raster", min_side=64)
    assert out.dtype == np.float32 and out.shape == (64, 64)
    assert seen == [np.dtype(np.float32)]  # float64 before this change


def test_dicom_is_reduced_after_its_lut_and_cached_per_size(tmp_path: Path) -> None:
    stored = (_radiograph(256) >> 4).astype(np.uint16)
    path = write_dicom(tmp_path / "w.dcm", stored, window=(2000.0, 2000.0))
    full = read_grey(path, "dicom")
    small = read_grey(path, "dicom", min_side=64)
    assert full.shape == (256, 256) and small.shape == (64, 64) and small.dtype == np.float32
    # the window ran on every full-resolution pixel, then 4×4 blocks were averaged
    assert np.allclose(small, full.reshape(64, 4, 64, 4).mean(axis=(1, 3)), atol=1e-5)


def test_reduce_factor_keeps_both_edges_at_least_the_asked_size() -> None:
    assert reduce_factor((2048, 2048), 501) == 4
    assert reduce_factor((3000, 2000), 501) == 3
    assert reduce_factor((300, 200), 501) == 1 and reduce_factor((2048, 2048), None) == 1
