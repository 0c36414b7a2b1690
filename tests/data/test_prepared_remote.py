"""Prepared data at a URL (``--data M=s3://…``, ``local:…``): passed to litdata, never opened as a local path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("litdata")

from medkit.api.errors import DataError
from medkit.data import remote
from medkit.data.prepare import prepare
from medkit.data.prepared import read_manifest
from medkit.data.prepared_dataset import open_prepared
from medkit.registry import create


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("prep-remote")
    mod = create("modality", "xray", on_error="skip")
    prepare(mod, Path(mod.demo_data(root / "demo")), root / "prepared", part_size=16, canvas="region", max_side=64)
    return root / "prepared"


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MEDKIT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_urls_are_recognised_and_file_urls_are_local_paths(tmp_path):
    assert remote.is_url("s3://bucket/cxr") and remote.is_url("gs://b/x") and remote.is_url("local:/data/x")
    assert not remote.is_url("/data/x") and not remote.is_url("file:///data/x") and not remote.is_url("data/s3:x")
    assert remote.normalise("s3://bucket/cxr/") == "s3://bucket/cxr"
    assert remote.normalise(f"file://{tmp_path}") == str(tmp_path.resolve())
    assert remote.join("s3://bucket/cxr", "parts/part-00000") == "s3://bucket/cxr/parts/part-00000"


def test_a_local_url_streams_the_same_samples_through_litdata(prepared, _cache):
    mod = create("modality", "xray")
    url = f"local:{prepared}"
    here, there = open_prepared(mod, prepared, train=True), open_prepared(mod, url, train=True)
    assert there.ids == here.ids and there.sources == here.sources
    assert there.chunk_sizes == here.chunk_sizes and sum(here.chunk_sizes) == len(here)
    for i in (0, len(here) // 2, len(here) - 1):
        assert torch.equal(there.load(i, seed=5)["input"], here.load(i, seed=5)["input"])
    assert any(_cache.rglob("*.bin")), "litdata copied the chunks into the URL's cache, it did not read in place"


def test_the_run_passes_a_url_to_litdata_and_splits_as_for_the_folder(prepared):
    from medkit.engine.datasets import build_datasets, data_paths

    mods = {"xray": create("modality", "xray")}
    url = f"local:{prepared}/"
    cfg = {"run": {"data": {"xray": url}}}
    paths = data_paths(cfg, mods, is_main=True)
    assert paths == {"xray": url.rstrip("/")}, "a URL is passed through, not resolved as a local path"
    got = build_datasets(mods, paths, val_fraction=0.25, seed=3)
    want = build_datasets(mods, {"xray": str(prepared)}, val_fraction=0.25, seed=3)
    assert got.split["modalities"]["xray"]["val"] == want.split["modalities"]["xray"]["val"]
    assert got.train["xray"].ids == want.train["xray"].ids


def test_a_missing_client_library_names_the_url_and_the_package(monkeypatch):
    import litdata.streaming.downloader as dl

    class NeedsClient(dl.Downloader):
        def __init__(self, *args, **kwargs):
            raise ModuleNotFoundError("No module named 'google.cloud.storage'")

        def download_file(self, remote_filepath: str, local_filepath: str) -> None:
            raise AssertionError("never reached")

    monkeypatch.setitem(dl._DOWNLOADERS, "gs://", NeedsClient)
    with pytest.raises(DataError) as err:
        read_manifest("gs://bucket/cxr-prepared")
    msg = str(err.value)
    assert "gs://bucket/cxr-prepared" in msg and "pip install google-cloud-storage" in msg and "\n" not in msg


def test_a_url_without_a_manifest_is_refused_naming_the_file(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"local:.*empty/manifest\.json: cannot read the prepared-data manifest"):
        read_manifest(f"local:{tmp_path / 'empty'}")


def test_a_remote_manifest_is_read_fresh_each_time(prepared, tmp_path):
    """Prepared again at the same URL: the new manifest is read, not a cached copy of the old."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(prepared, copy)
    url = f"local:{copy}"
    assert read_manifest(url)["num_samples"] > 0
    body = json.loads((copy / "manifest.json").read_text())
    body["medkit_version"] = "changed"
    (copy / "manifest.json").write_text(json.dumps(body))
    assert read_manifest(url)["medkit_version"] == "changed"


@pytest.mark.slow
def test_a_run_trains_from_a_url(prepared, tmp_path):
    """``medkit run --data xray=local:…`` end to end: it trains, and records the URL as its data."""
    from medkit.api.progress import NullReporter
    from medkit.config.compose import Selection, compose
    from medkit.engine.engine import Engine
    from medkit.registry import get_host

    host = get_host()
    url = f"local:{prepared}"
    cfg = compose(Selection(modalities=["xray"], strategy="sequential", preset="tiny", data={"xray": url},
                            max_steps=2, overrides=["encoder.depth=1", "encoder.embed_dim=24", "encoder.num_heads=2",
                                                    "trainer.batch_size=2", "trainer.eval_batches=1",
                                                    "trainer.probe_linear_steps=0", "trainer.probe_knn_k=0",
                                                    "modality.xray.input_size=32"]), host=host)
    Engine(cfg, tmp_path / "run", components=host, reporter=NullReporter()).run()
    split = json.loads((tmp_path / "run" / "metrics" / "split.json").read_text())
    assert split["modalities"]["xray"]["data"] == url
    steps = (tmp_path / "run" / "metrics" / "steps.jsonl").read_text().splitlines()
    assert len(steps) == 2


def test_the_manifest_records_each_parts_chunks_as_its_index_does(prepared):
    """The step plan's chunk sizes come from the manifest (one file for a remote dataset), equal to
    what litdata's index of every part says."""
    from medkit.data.prepared import PartReader

    manifest = read_manifest(prepared)
    for part in manifest["parts"]:
        assert part["chunk_sizes"] == PartReader.chunk_sizes_of(str(prepared / part["dir"]), part["count"])
    older = [{k: v for k, v in p.items() if k != "chunk_sizes"} for p in manifest["parts"]]
    assert PartReader(prepared, older).chunk_sizes == PartReader(prepared, manifest["parts"]).chunk_sizes
