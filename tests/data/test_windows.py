"""Window datasets over fake volumes: window maths, caching (memory and disk), sample values."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from medkit.data.cache import DiskCache, VolumeCache
from medkit.data.volumes import Volume
from medkit.data.windows import WindowDataset, pad_depth, read_labels, resampled_slices, window_starts


def test_window_starts_known_answer() -> None:
    assert window_starts(40, 16, 8) == [0, 8, 16, 24]
    assert window_starts(47, 16, 8) == [0, 8, 16, 24]  # slices 40..46 do not fill a window
    assert window_starts(16, 16, 8) == [0]
    assert window_starts(15, 16, 8) == []


def test_resampled_slices_and_padding_known_answers() -> None:
    assert resampled_slices(20, 2.0, 1.0) == 40
    assert resampled_slices(24, 2.2, 1.0) == 53  # 52.8 rounds half up
    assert resampled_slices(7, 1.5, None) == 7
    x = pad_depth(torch.zeros(1, 3, 2, 2), 6, value=-1.0)
    assert x.shape == (1, 6, 2, 2) and x[0, :, 0, 0].tolist() == [-1, 0, 0, 0, -1, -1]


def test_read_labels_names_and_integers(tmp_path: Path) -> None:
    assert read_labels(tmp_path, ["a"]) == (None, None)
    (tmp_path / "labels.csv").write_text("id,label\na,tumour\nb,healthy\n")
    assert read_labels(tmp_path, ["a", "b", "c"]) == ([1, 0, -1], ["healthy", "tumour"])
    (tmp_path / "labels.csv").write_text("id,label\na,2\nb,0\n")
    assert read_labels(tmp_path, ["a", "b", "c"]) == ([2, 0, -1], ["0", "1", "2"])


class Prep:
    """A fake preprocessing: volume ``k`` is ``[1, 24, 4, 4]`` with value ``100 k + slice``."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, vol: Volume) -> torch.Tensor:
        self.calls.append(vol.id)
        k = int(vol.id[1:])
        return (100.0 * k + torch.arange(24.0)).view(1, 24, 1, 1).expand(1, 24, 4, 4).contiguous()


def _volumes(root: Path, n: int) -> list[Volume]:
    out = []
    for k in range(n):
        (root / f"v{k}.nii").write_bytes(bytes([k]) * 64)  # the disk cache hashes these contents
        out.append(Volume(f"v{k}", "nifti", (str(root / f"v{k}.nii"),), 24, 1.0))
    return out


def _dataset(root: Path, prep: Prep, n: int = 4, **kw) -> WindowDataset:
    kw.setdefault("train", True)
    return WindowDataset("ct", root, _volumes(root, n), [24] * n, depth=8, stride=8, prepare=prep,
                         finish=lambda w: w, flip_prob=0.5, skipped=[], **kw)


def _expected(ds: WindowDataset, i: int) -> torch.Tensor:
    v, start = ds._windows[i]
    return (100.0 * v + torch.arange(start, start + 8.0)).view(1, 8, 1, 1).expand(1, 8, 4, 4)


def test_random_order_prepares_each_volume_once(tmp_path: Path) -> None:
    prep = Prep()
    ds = _dataset(tmp_path, prep, train=False)
    order = [i for _ in range(3) for i in random.Random(0).sample(range(len(ds)), len(ds))]
    for i in order:
        sample = ds.load(i, seed=i)
        assert torch.equal(sample["input"], _expected(ds, i)) and sample["id"] == ds.ids[i]
    assert sorted(prep.calls) == ["v0", "v1", "v2", "v3"]


def test_samples_never_alias_the_cache(tmp_path: Path) -> None:
    ds = _dataset(tmp_path, Prep(), train=False)
    ds.load(0)["input"].fill_(-5.0)
    assert torch.equal(ds.load(0)["input"], _expected(ds, 0))


def test_byte_bound_limits_memory_and_still_gives_the_same_values(tmp_path: Path) -> None:
    prep = Prep()
    one_volume = 24 * 4 * 4 * 4
    cache = VolumeCache(max_bytes=2 * one_volume)
    ds = _dataset(tmp_path, prep, cache=cache)
    for i in range(len(ds)):
        assert torch.equal(ds.load(i)["input"], _expected(ds, i))
    assert len(cache) == 2 and cache.nbytes == 2 * one_volume
    ds.load(0)  # v0 was evicted: prepared again
    assert prep.calls == ["v0", "v1", "v2", "v3", "v0"]


def test_training_and_evaluation_datasets_share_one_cache(tmp_path: Path) -> None:
    prep, cache = Prep(), VolumeCache()
    train, held = _dataset(tmp_path, prep, cache=cache), _dataset(tmp_path, prep, cache=cache, train=False)
    train.load(0, seed=1)
    held.load(1)
    assert prep.calls == ["v0"]
    flips = [torch.equal(train.load(0, seed=s)["input"], _expected(train, 0)) for s in range(8)]
    assert True in flips and False in flips  # training samples are flipped by some seeds


def test_disk_cache_serves_later_processes_without_preprocessing(tmp_path: Path) -> None:
    data, store = tmp_path / "data", tmp_path / "cache"
    data.mkdir()
    first = Prep()
    ds = _dataset(data, first, disk_cache=DiskCache(store, "prep-a"))
    ref = [ds.load(i, seed=i)["input"] for i in range(len(ds))]
    assert len(list(store.rglob("*.safetensors"))) == 4
    later = Prep()  # a new process: empty memory cache, same files on disk
    again = _dataset(data, later, disk_cache=DiskCache(store, "prep-a"))
    assert all(torch.equal(again.load(i, seed=i)["input"], ref[i]) for i in range(len(again)))
    assert later.calls == []
    small = _dataset(data, later, cache=VolumeCache(max_bytes=100), disk_cache=DiskCache(store, "prep-a"))
    assert all(torch.equal(small.load(i)["input"], _expected(small, i)) for i in range(len(small)))
    assert later.calls == [] and len(small._cache) == 0  # windows read from the files in part
    other = Prep()
    _dataset(data, other, disk_cache=DiskCache(store, "prep-b")).load(0)  # other options: other file
    assert other.calls == ["v0"]


def test_disk_cache_is_keyed_by_file_contents_and_survives_damage(tmp_path: Path) -> None:
    data, store = tmp_path / "data", tmp_path / "cache"
    data.mkdir()
    ds = _dataset(data, Prep(), n=1, disk_cache=DiskCache(store, "p"))
    ds.load(0)
    path = ds._disk.path_for(ds.volumes[0].paths)
    path.write_bytes(b"garbage")
    prep = Prep()
    again = _dataset(data, prep, n=1, disk_cache=DiskCache(store, "p"))
    assert torch.equal(again.load(0)["input"], _expected(again, 0)) and prep.calls == ["v0"]
    assert path.stat().st_size > 100  # rebuilt
    (data / "v0.nii").write_bytes(b"changed")
    assert DiskCache(store, "p").path_for(ds.volumes[0].paths) != path


def test_bad_preprocessing_shape_is_a_data_error(tmp_path: Path) -> None:
    from medkit.api.errors import DataError

    ds = WindowDataset("ct", tmp_path, _volumes(tmp_path, 1), [16], depth=8, stride=8, prepare=Prep(),
                       finish=lambda w: w, train=False, flip_prob=0.5, skipped=[])
    with pytest.raises(DataError, match=r"v0\.nii.*expected \[1, 16, H, W\]"):
        ds.load(0)
