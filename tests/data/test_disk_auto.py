"""disk_cache=auto: a shuffled archive larger than the memory cache prepares each volume once."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from medkit.data import disk_auto
from medkit.data.cache import DiskCache, VolumeCache
from medkit.data.volumes import Volume
from medkit.data.windows import WindowDataset

ONE_VOLUME = 4 * 24 * 4 * 4  # float32 bytes of one prepared fake volume


class Prep:
    """A fake preprocessing that counts its calls: volume ``k`` is ``100 k + slice``, ``[1, 24, 4, 4]``."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, vol: Volume) -> torch.Tensor:
        self.calls.append(vol.id)
        k = int(vol.id[1:])
        return (100.0 * k + torch.arange(24.0)).view(1, 24, 1, 1).expand(1, 24, 4, 4).contiguous()


def _dataset(root: Path, prep: Prep, cache: VolumeCache, auto: Any, n: int = 5) -> WindowDataset:
    vols = []
    for k in range(n):
        (root / f"v{k}.nii").write_bytes(bytes([k]) * 64)
        vols.append(Volume(f"v{k}", "nifti", (str(root / f"v{k}.nii"),), 24, 1.0))
    return WindowDataset("ct", root, vols, [24] * n, depth=8, stride=4, prepare=prep, finish=lambda w: w,
                         flip_prob=0.5, skipped=[], train=False, cache=cache, auto_disk_cache=auto)


def _epochs(ds: WindowDataset, epochs: int) -> None:
    for e in range(epochs):  # the step plan's order: a permutation of every window, per epoch
        for i in random.Random(e).sample(range(len(ds)), len(ds)):
            v, start = ds._windows[i]
            expected = (100.0 * v + torch.arange(start, start + 8.0)).view(1, 8, 1, 1).expand(1, 8, 4, 4)
            assert torch.equal(ds.load(i)["input"], expected)


@pytest.mark.parametrize("cache", [VolumeCache(max_bytes=2 * ONE_VOLUME), VolumeCache(max_bytes=0),
                                   VolumeCache(max_items=1)], ids=["two-of-five", "disabled", "one-item"])
def test_each_volume_is_prepared_once_when_the_archive_exceeds_the_cache(tmp_path: Path, cache: VolumeCache) -> None:
    data, store = tmp_path / "data", tmp_path / "cache"
    data.mkdir()
    prep = Prep()
    ds = _dataset(data, prep, cache, lambda: DiskCache(store, "p"))
    _epochs(ds, 3)
    assert sorted(prep.calls) == ["v0", "v1", "v2", "v3", "v4"]  # at most once per volume, every epoch
    assert len(list(store.rglob("*.safetensors"))) == 5


def test_without_it_a_shuffled_archive_prepares_volumes_again(tmp_path: Path) -> None:
    prep = Prep()
    _epochs(_dataset(tmp_path, prep, VolumeCache(max_bytes=2 * ONE_VOLUME), None), 1)
    assert len(prep.calls) > 5  # what disk_cache=auto prevents (the issue measured 0.77 windows/s)


def test_an_archive_that_fits_stays_in_memory_only(tmp_path: Path) -> None:
    data, store = tmp_path / "data", tmp_path / "cache"
    data.mkdir()
    prep = Prep()
    _epochs(_dataset(data, prep, VolumeCache(max_bytes=5 * ONE_VOLUME), lambda: DiskCache(store, "p")), 2)
    assert sorted(prep.calls) == ["v0", "v1", "v2", "v3", "v4"] and not store.exists()


def test_too_little_free_space_keeps_it_off_with_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(disk_auto, "_free_bytes", lambda folder: ONE_VOLUME)
    with caplog.at_level(logging.WARNING, logger="medkit.data.disk_auto"):
        got = disk_auto.auto_disk_cache("ct", [24] * 5, (1, 24, 4, 4), VolumeCache(max_bytes=0),
                                        lambda: DiskCache(tmp_path, "p"))
    assert got is None and "has only" in caplog.text and "medkit prepare" in caplog.text


@pytest.mark.slow
def test_ct_defaults_to_auto_and_prepares_each_demo_volume_once(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from medkit.testing import create

    monkeypatch.setenv("MEDKIT_CACHE_DIR", str(tmp_path / "cache"))
    ct = create("modality", "ct", input_size=(16, 32, 32), depth=16, depth_stride=4, cache_bytes=1)
    assert ct.disk_cache == "auto"
    data = ct.demo_data(tmp_path / "demo")
    calls: list[str] = []
    real = type(ct).prepare

    def counting(self: Any, vol: Volume) -> torch.Tensor:
        calls.append(vol.id)
        return real(self, vol)

    monkeypatch.setattr(type(ct), "prepare", counting)
    ds = ct.dataset(data, train=True)
    assert len(ds) > len(ds.volumes)  # several windows per volume
    for i in random.Random(0).sample(range(len(ds)), len(ds)):
        ds.load(i, seed=i)
    assert sorted(calls) == sorted(v.id for v in ds.volumes)
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) == len(ds.volumes)
