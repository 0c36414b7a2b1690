"""Inert weight files (regular files only, sane header, finite values) and writes that fail naming the
path, the error and what was kept."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest
import torch

from medkit.api.errors import CheckpointError
from medkit.storage import files
from medkit.storage.files import (atomic_link, atomic_write_json, atomic_write_text, check_tensors_file,
                                  load_state_checked, load_tensors, save_tensors, scan_tensors_file)

from ..conftest import finishes




@pytest.mark.parametrize("check", [load_tensors, check_tensors_file, scan_tensors_file])
def test_a_fifo_as_weights_is_refused_at_once(tmp_path: Path, check) -> None:
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    t0 = time.perf_counter()
    exc = finishes(lambda: check(fifo), 20.0, "still runs after 20 s (it blocks on the file)")
    assert isinstance(exc, CheckpointError) and "is a FIFO" in str(exc) and str(fifo) in str(exc)
    assert time.perf_counter() - t0 < 20


def test_a_link_to_dev_zero_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "model.safetensors"
    link.symlink_to("/dev/zero")
    exc = finishes(lambda: load_tensors(link), 20.0, "still runs after 20 s (it blocks on the file)")
    assert isinstance(exc, CheckpointError) and "outside" in str(exc) and "/dev/zero" in str(exc)
    # even when the root allows it, a character device is not a weight file
    exc = finishes(lambda: load_tensors(link, root=Path("/")), 20.0, "still runs after 20 s (it blocks on the file)")
    assert isinstance(exc, CheckpointError) and "character device" in str(exc)


def test_links_inside_the_root_and_the_hub_cache_layout_are_followed(tmp_path: Path) -> None:
    outside = tmp_path / "secret.safetensors"
    save_tensors(outside, {"w": torch.ones(2)})
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.safetensors").symlink_to(outside)
    with pytest.raises(CheckpointError, match="outside"):
        load_tensors(run / "model.safetensors")
    (run / "sub").mkdir()
    save_tensors(run / "sub" / "real.safetensors", {"w": torch.ones(2)})
    (run / "sub" / "link.safetensors").symlink_to("real.safetensors")
    assert torch.equal(load_tensors(run / "sub" / "link.safetensors")["w"], torch.ones(2))
    repo = tmp_path / "hub" / "models--alice--m"  # huggingface_hub's cache: snapshots link to blobs
    (repo / "blobs").mkdir(parents=True)
    (repo / "snapshots" / "abc").mkdir(parents=True)
    save_tensors(repo / "blobs" / "0123", {"w": torch.full((3,), 2.0)})
    (repo / "snapshots" / "abc" / "model.safetensors").symlink_to("../../blobs/0123")
    assert torch.equal(load_tensors(repo / "snapshots" / "abc" / "model.safetensors")["w"], torch.full((3,), 2.0))


@pytest.mark.parametrize("length, reason", [(1 << 40, "more than the 100 MB"), (5000, "has only")])
def test_an_insane_header_length_is_refused_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         length: int, reason: str) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(length.to_bytes(8, "little") + b"{}" + b"\0" * 100)
    reads: list[int] = []
    real = os.pread
    monkeypatch.setattr(os, "pread", lambda fd, n, off: reads.append(n) or real(fd, n, off))
    for check in (load_tensors, check_tensors_file):
        with pytest.raises(CheckpointError, match=reason):
            check(path)
    assert reads and max(reads) == 8, "nothing but the 8-byte length was read"


def test_short_and_out_of_range_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x01\x02")
    with pytest.raises(CheckpointError, match="too few for a safetensors file"):
        load_tensors(path)
    header = b'{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16000]}}'
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 16)
    with pytest.raises(CheckpointError, match="tensor w spans bytes 0..16000"):
        check_tensors_file(path)


def test_a_nan_tensor_is_refused_naming_it(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["1.weight"][0, 1] = float("nan")
    state["1.bias"][0] = float("inf")
    path = tmp_path / "model.safetensors"
    save_tensors(path, state)
    before = model.state_dict()["1.weight"].clone()
    with pytest.raises(CheckpointError, match=r"tensor 1\.weight holds 1 non-finite value"):
        load_state_checked(model, load_tensors(path), source=str(path))
    assert torch.equal(model.state_dict()["1.weight"], before), "nothing was loaded"
    with pytest.raises(CheckpointError, match=rf"{path}: tensor 1\.(weight|bias) holds"):
        scan_tensors_file(path)


CODES = [errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EDQUOT]


@pytest.mark.parametrize("code", CODES, ids=[errno.errorcode[c] for c in CODES])
def test_a_failed_write_names_path_error_and_what_was_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          code: int) -> None:
    path = tmp_path / "manifest.json"
    atomic_write_json(path, {"finished": False})
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(files.os, "replace", fail)
    with pytest.raises(CheckpointError) as err:
        atomic_write_json(path, {"finished": True})
    msg = str(err.value)
    assert str(path) in msg and os.strerror(code) in msg and errno.errorcode[code] in msg
    assert "the previous version of manifest.json is intact" in msg and "\n" not in msg
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"], "no temp file is left behind"
    with pytest.raises(CheckpointError, match="no new.txt was written"):
        atomic_write_text(tmp_path / "new.txt", "x")
    with pytest.raises(CheckpointError, match=f"cannot write {tmp_path / 'link.json'}"):
        atomic_link(path, tmp_path / "link.json")


def test_a_failed_temp_file_is_named_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args, **kwargs):
        raise OSError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(files.tempfile, "mkstemp", fail)
    with pytest.raises(CheckpointError, match=f"cannot write {tmp_path / 'x.json'}: Permission denied.*"
                                              f"check the permissions of {tmp_path}"):
        atomic_write_json(tmp_path / "x.json", {})
