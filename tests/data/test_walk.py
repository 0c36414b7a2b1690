"""The one folder walker and the skip/raise policy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medkit.api.errors import ConfigError, DataError
from medkit.data.walk import OnError, relative_id, walk


def test_walk_sorts_filters_and_hides(tmp_path: Path) -> None:
    for rel in ("b/2.PNG", "a.nii.gz", "b/1.png", ".hidden.png", ".cache/x.png", "labels.csv", "notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    base, files = walk(tmp_path)
    assert base == tmp_path
    assert [relative_id(p, base) for p in files] == ["a.nii.gz", "b/1.png", "b/2.PNG", "labels.csv", "notes.txt"]
    _, files = walk(tmp_path, (".png", ".nii.gz"), exclude=("a.nii.gz",))
    assert [relative_id(p, tmp_path) for p in files] == ["b/1.png", "b/2.PNG"]
    assert [p.name for p in walk(tmp_path, recursive=False)[1]] == ["a.nii.gz", "labels.csv", "notes.txt"]
    assert walk(tmp_path / "notes.txt") == (tmp_path, [tmp_path / "notes.txt"])
    with pytest.raises(DataError, match="no such file"):
        walk(tmp_path / "missing")


def test_on_error_raises_or_records() -> None:
    def bad() -> None:
        raise DataError("x.png: broken")

    with pytest.raises(DataError, match="broken"):
        OnError("raise", "modality demo").run("x.png", bad)
    with pytest.raises(DataError, match="y.png: no mask; set on_error=skip"):
        OnError("raise", "task demo", "set on_error=skip").bad("y.png", "no mask")
    errors = OnError("skip", "modality demo")
    assert errors.run("x.png", bad) is None and errors.run("z.png", lambda: 3) == 3
    errors.bad("y.png", "no mask")
    assert errors.skipped == [("x.png", "x.png: broken"), ("y.png", "no mask")]
    with pytest.raises(ConfigError, match="on_error"):
        OnError("ignore", "modality demo")


def test_xray_sources_are_patients_when_metadata_has_them(tmp_path: Path) -> None:
    from PIL import Image

    from medkit_plugin_xray.modality import XrayModality

    for k in range(4):
        Image.fromarray(np.full((8, 8), 40 * k, np.uint8)).save(tmp_path / f"im{k}.png")
    ds = XrayModality(input_size=8).dataset(tmp_path, train=False)
    assert ds.sources == ds.ids  # without metadata each image is its own source
    (tmp_path / "metadata.csv").write_text("path,PatientID,ViewPosition\nim0.png,p1,PA\nim1.png,p1,AP\n"
                                           "im2.png,p2,PA\n")
    ds = XrayModality(input_size=8).dataset(tmp_path, train=False)
    assert ds.sources == ["p1", "p1", "p2", "im3.png"]
