"""``medkit prepare`` and training from prepared data: the same samples, split and resume as the folder path."""

from __future__ import annotations

import json
import os
import signal
import traceback
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("litdata")

from medkit.api.errors import ConfigError
from medkit.data.prepare import content_hash, finalize, prepare
from medkit.data.prepared import read_manifest
from medkit.registry import create

CT = {"input_size": [16, 32, 32]}  # small windows keep the 3D tests fast


def _modality(name: str, **kwargs: Any) -> Any:
    return create("modality", name, **{**(CT if name == "ct" else {}), **kwargs})


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("prep-demo")
    from medkit.registry import get_host, reset_host

    reset_host()
    out = {m: Path(_modality(m).demo_data(root / m)) for m in ("xray", "ct")}
    assert get_host() is not None
    return out


def _fork(fn: Callable[[], None]) -> int:
    """Run ``fn`` in a forked child (torch and medkit already imported); return its wait status."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            torch.set_num_threads(1)
            fn()
            code = 0
        except BaseException:  # noqa: BLE001 - report and leave the child, never return into pytest
            traceback.print_exc()
        finally:
            os._exit(code)
    return os.waitpid(pid, 0)[1]


@pytest.mark.parametrize("name", ["xray", "ct"])
def test_prepared_float32_samples_equal_the_folder_path_bit_for_bit(demo, tmp_path, name):
    """One data path: stored with --store float32 (2D: --canvas region), a prepared sample is the
    folder path's sample, augmented or not, for the same seed."""
    mod = _modality(name)
    prepare(mod, demo[name], tmp_path / "p", part_size=16, store="float32", canvas="region")
    from medkit.data.prepared_dataset import open_prepared

    folder, prep = mod.dataset(demo[name], train=True), open_prepared(mod, tmp_path / "p", train=True)
    assert prep.ids == folder.ids and prep.sources == [str(s) for s in folder.sources]
    assert prep.labels == folder.labels and prep.class_names == folder.class_names
    for i in (0, 5, len(prep) - 1):
        for seed in (None, 7, 123456):
            a, b = folder.load(i, seed=seed), prep.load(i, seed=seed)
            assert a["id"] == b["id"] and a.get("label") == b.get("label")
            assert a["input"].dtype == b["input"].dtype == torch.float32
            assert torch.equal(a["input"], b["input"]), f"{name} sample {i} seed {seed} differs"
    assert not torch.equal(prep.load(0, seed=7)["input"], prep.load(0, seed=8)["input"]), \
        "augmentation still happens at load time"
    assert torch.equal(prep.view(train=False).load(3, seed=7)["input"], folder.view(train=False).load(3)["input"])


def test_auto_storage_is_small_and_close(demo, tmp_path):
    """``auto`` keeps [0, 1] grey as uint16 and 3D windows as float16, within their rounding (2D
    with --canvas region, where training crops the stored region as the folder path crops the file)."""
    from litdata import StreamingDataset

    from medkit.data.prepared_dataset import open_prepared

    for name, dtype, tol in (("xray", np.uint16, 1e-4), ("ct", np.float16, 1e-3)):
        mod = _modality(name)
        prepare(mod, demo[name], tmp_path / name, part_size=64, canvas="region")
        part = read_manifest(tmp_path / name)["parts"][0]["dir"]
        assert StreamingDataset(str(tmp_path / name / part))[0]["x"].dtype == dtype
        folder, prep = mod.dataset(demo[name], train=True), open_prepared(mod, tmp_path / name, train=True)
        for i in (0, 9):
            diff = (folder.load(i, seed=3)["input"] - prep.load(i, seed=3)["input"]).abs().max()
            assert float(diff) < tol, f"{name}: {float(diff)}"


def test_prepare_then_train_keeps_the_held_out_split_by_source(demo, tmp_path):
    from medkit.engine.datasets import build_datasets

    mods = {m: _modality(m) for m in ("xray", "ct")}
    paths = {}
    for m, mod in mods.items():
        prepare(mod, demo[m], tmp_path / m, part_size=10)
        paths[m] = str(tmp_path / m)
    folder = build_datasets(mods, {m: str(p) for m, p in demo.items()}, val_fraction=0.25, seed=3)
    prepared = build_datasets(mods, paths, val_fraction=0.25, seed=3)
    for m in mods:
        want, got = folder.split["modalities"][m], prepared.split["modalities"][m]
        assert got["val"] and got["val"] == want["val"] and got["train"] == want["train"]
        ids_f, ids_p = folder.train[m].ids, prepared.train[m].ids
        assert [ids_p[i] for i in prepared.val_indices[m]] == [ids_f[i] for i in folder.val_indices[m]]
    manifest = read_manifest(tmp_path / "xray")
    assert manifest["filtered"] and "frontal" in manifest["filtered"][0][1], "the dropped lateral is listed"
    assert len(manifest["preprocessing_sha256"]) == 64 and len(manifest["inputs_sha256"]) == 64
    assert manifest["medkit_version"] and manifest["labels"] is not None


def test_a_killed_prepare_resumes_and_writes_the_same_shards(demo, tmp_path):
    """SIGKILL at file-system operations of a prepare (inside a part, at its commit), rerun: only
    the missing parts are written and the content hash equals an uninterrupted prepare's."""
    from medkit.testing.faults import CommitPoints

    mod = _modality("ct")
    ref = tmp_path / "ref"
    log_file = tmp_path / "ops.jsonl"

    def run(out: Path, kill_at: int | None = None, log: Path | None = None) -> Callable[[], None]:
        def go() -> None:
            points = CommitPoints(out, kill_at=kill_at, log_file=log).install()
            prepare(mod, demo["ct"], out, part_size=8)
            points.uninstall()
        return go

    assert _fork(run(ref, log=log_file)) == 0
    want = content_hash(ref)
    ops = [json.loads(x) for x in log_file.read_text().splitlines()]
    commits = [o["n"] for o in ops if o["op"] == "replace" and "part-00002" in o.get("path", "") + str(o)]
    assert commits, ops[:5]
    for n in (commits[-1], len(ops) // 2, len(ops)):  # at the 3rd part's commit, mid-way, the manifest
        out = tmp_path / f"kill-{n}"
        status = _fork(run(out, kill_at=n))
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        assert not (out / "manifest.json").exists()
        summary = prepare(mod, demo["ct"], out, part_size=8)
        assert 0 < summary.reused and (summary.written > 0 or n == len(ops)), (n, summary)
        assert summary.content_sha256 == want
        assert not list((out / "parts").glob(".*")), "no staging folder is left behind"


def test_shards_prepared_apart_merge_into_one_dataset(demo, tmp_path):
    mod = _modality("xray")
    whole = prepare(mod, demo["xray"], tmp_path / "whole", part_size=8)
    first = prepare(mod, demo["xray"], tmp_path / "a", part_size=8, shard=(0, 2))
    assert not first.finished and not (tmp_path / "a" / "manifest.json").exists()
    prepare(mod, demo["xray"], tmp_path / "b", part_size=8, shard=(1, 2), workers=2)
    with pytest.raises(Exception, match="missing or stale"):
        finalize(tmp_path / "a")
    merged = finalize(tmp_path / "a", [tmp_path / "b"])
    assert merged.finished and merged.content_sha256 == whole.content_sha256


def test_a_run_refuses_prepared_data_of_another_preprocessing_config_in_one_line(demo, tmp_path):
    from medkit.data.prepared_dataset import open_prepared

    prepare(_modality("ct"), demo["ct"], tmp_path / "ct", part_size=64)
    with pytest.raises(ConfigError) as err:
        open_prepared(_modality("ct", window=[-500.0, 500.0]), tmp_path / "ct", train=True)
    msg = str(err.value)
    assert "\n" not in msg and "modality.ct.window=" in msg and "[-1024.0, 1024.0]" in msg
    open_prepared(_modality("ct", flip_prob=0.2), tmp_path / "ct", train=True)  # load-time: accepted
    prepare(_modality("xray"), demo["xray"], tmp_path / "x", part_size=64)
    with pytest.raises(ConfigError, match="modality.xray.intensity="):
        open_prepared(_modality("xray", intensity="minmax"), tmp_path / "x", train=True)


def test_a_part_declaring_pickle_is_refused(demo, tmp_path):
    from medkit.api.errors import DataError
    from medkit.data.prepared_dataset import open_prepared

    mod = _modality("xray")
    prepare(mod, demo["xray"], tmp_path / "x", part_size=64)
    index = tmp_path / "x" / read_manifest(tmp_path / "x")["parts"][0]["dir"] / "index.json"
    body = json.loads(index.read_text())
    body["config"]["data_format"] = ["pickle", "numpy"]
    index.write_text(json.dumps(body))
    with pytest.raises(DataError, match="pickle"):
        open_prepared(mod, tmp_path / "x", train=True).load(0, seed=1)


@pytest.mark.slow
def test_cli_prepare_lists_skips_then_a_run_with_another_config_fails_in_one_line(demo, tmp_path):
    from tests.conftest import run_cli

    out = run_cli("prepare", "--modality", "xray", "--data", str(demo["xray"]), "--out", str(tmp_path / "x"),
                  "--part-size", "16", "--workers", "2")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "samples: 42 in 3 parts" in out.stdout and "lateral_ll.dcm: view 'LL' is not frontal" in out.stdout
    again = run_cli("prepare", "--modality", "xray", "--data", str(demo["xray"]), "--out", str(tmp_path / "x"),
                    "--part-size", "16")
    assert "parts written: 0, reused: 3" in again.stdout
    shown = run_cli("data", "inspect", "--modality", "xray", "--data", str(tmp_path / "x"))
    assert "samples: 42" in shown.stdout and "prepared by medkit" in shown.stdout, shown.stderr[-2000:]
    run = run_cli("run", "--modality", "xray", "--preset", "tiny", "--max-steps", "1", "--data",
                  f"xray={tmp_path / 'x'}", "--run-dir", str(tmp_path / "r"), "modality.xray.frontal_only=false")
    assert run.returncode == 1
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "modality.xray.frontal_only=true" in errors[0], run.stderr[-2000:]


def test_max_side_stores_2d_images_smaller_and_is_part_of_the_part_key(demo, tmp_path):
    from litdata import StreamingDataset

    from medkit.api.errors import MedkitError
    from medkit.data.prepared_dataset import open_prepared

    mod = _modality("xray", input_size=32)
    prepare(mod, demo["xray"], tmp_path / "x", part_size=64, canvas="region")
    small = prepare(mod, demo["xray"], tmp_path / "x", part_size=64, canvas="region", max_side=48)
    assert small.written == 1 and small.reused == 0, "another max_side writes the parts again"
    part = tmp_path / "x" / read_manifest(tmp_path / "x")["parts"][0]["dir"]
    assert max(StreamingDataset(str(part))[0]["x"].shape) == 48
    assert read_manifest(tmp_path / "x")["storage"]["max_side"] == 48
    ds, folder = open_prepared(mod, tmp_path / "x", train=True), mod.dataset(demo["xray"], train=False)
    x = ds.load(2, seed=5)["input"]
    assert x.shape == (3, 32, 32) and torch.equal(x, ds.load(2, seed=5)["input"])
    plain = ds.view(train=False).load(2)["input"]  # the whole image from the 48-pixel canvas
    assert float((plain - folder.load(2)["input"]).abs().mean()) < 0.02
    with pytest.raises(MedkitError, match="--max-side resizes 2D images"):
        prepare(_modality("ct"), demo["ct"], tmp_path / "c", max_side=48)
    with pytest.raises(MedkitError, match="--canvas region"):
        prepare(mod, demo["xray"], tmp_path / "v", max_side=48)  # the default view canvas has its own size


def test_unreadable_inputs_are_listed_with_reasons_never_dropped_silently(demo, tmp_path):
    import shutil

    data = tmp_path / "xray"
    shutil.copytree(demo["xray"], data)
    (data / "images" / "garbage.png").write_bytes(b"not an image at all")
    good = (data / "images" / "cxr_000.png").read_bytes()
    (data / "images" / "truncated.png").write_bytes(good[: len(good) // 3])  # a header, half the pixels
    summary = prepare(_modality("xray", on_error="skip"), data, tmp_path / "p", part_size=64)
    manifest = read_manifest(tmp_path / "p")
    listed = {name: reason for name, reason in manifest["skipped"]}
    assert {"images/garbage.png", "images/truncated.png"} <= set(listed), listed
    assert all(reason for reason in listed.values())
    assert listed["images/truncated.png"].startswith("unreadable:"), "found when its pixels were read"
    assert set(dict(summary.skipped)) == set(listed)
    assert "images/truncated.png" not in manifest["ids"] and "images/cxr_000.png" in manifest["ids"]
    assert manifest["num_samples"] == len(manifest["ids"]) == 42


def test_prepare_preprocesses_each_volume_once_even_without_a_cache(demo, tmp_path):
    mod = _modality("ct", cache_bytes=0, disk_cache=False)
    calls: list[str] = []
    real = mod.prepare
    mod.prepare = lambda vol: (calls.append(vol.id), real(vol))[1]
    summary = prepare(mod, demo["ct"], tmp_path / "p", part_size=8)
    assert summary.samples == 48 and sorted(calls) == sorted(set(calls)) and len(calls) == 6
