"""One label rule on every modality's label reader: ``-1`` or empty is unlabelled; a negative or
non-integer label is a DataError naming the file and the row."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from medkit.api.errors import DataError
from medkit.data.labels import encode_labels, encode_raw, parse_label

VALUES = ["1", "-1", "", "0"]  # per sample, in id order


def test_parse_label_known_answers() -> None:
    assert [parse_label(v, "f row 2") for v in ("2", " 2.0 ", "-1", "", None, " cat ", "-1.0")] == \
        ["2", "2", None, None, None, "cat", None]
    for bad in ("-3", "-7", "3.5", "1e-1"):
        with pytest.raises(DataError, match=r"f row 2: label .* is not a class"):
            parse_label(bad, "f row 2")
    assert encode_labels(["2", "0", None]) == ([2, 0, -1], ["0", "1", "2"])
    assert encode_raw(["dog", "cat", "", "dog"], ["w"] * 4) == ([1, 0, -1, 1], ["cat", "dog"])


# -- one small folder per modality: four samples whose labels are VALUES ---------------------------
def _nifti(root: Path, values: list[str]) -> None:
    import nibabel as nib

    rows = []
    for k, v in enumerate(values):
        arr = np.random.default_rng(k).integers(0, 500, (8, 8, 16)).astype(np.int16)
        nib.save(nib.Nifti1Image(arr, np.eye(4)), str(root / f"v{k}.nii.gz"))
        rows.append(f"v{k}.nii.gz,{v}")
    (root / "labels.csv").write_text("id,label\n" + "\n".join(rows) + "\n")


def _ct(root: Path, values: list[str]) -> Any:
    from medkit_plugin_ct.modality import CTModality

    _nifti(root, values)
    return CTModality(input_size=(16, 16, 16), depth=16, cache_bytes=0).dataset(root, train=False)


def _mri(root: Path, values: list[str]) -> Any:
    from medkit_plugin_mri.modality import MRIModality

    _nifti(root, values)
    return MRIModality(input_size=(16, 16, 16), depth=16, drop_fraction=0.0, cache_bytes=0).dataset(
        root, train=False)


def _pngs(root: Path, values: list[str], colour: tuple[int, int, int]) -> None:
    from PIL import Image

    for k in range(len(values)):
        Image.new("RGB", (32, 32), colour).save(root / f"im{k}.png")
    rows = [f"im{k}.png,{v}" for k, v in enumerate(values)]
    (root / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")


def _xray(root: Path, values: list[str]) -> Any:
    from medkit_plugin_xray.modality import XrayModality

    _pngs(root, values, (90, 90, 90))
    return XrayModality(input_size=16).dataset(root, train=False)


def _pathology(root: Path, values: list[str]) -> Any:
    from medkit_plugin_pathology.modality import PathologyModality

    _pngs(root, values, (220, 120, 190))  # pink: tissue
    return PathologyModality(input_size=16).dataset(root, train=False)


def _report(root: Path, values: list[str]) -> Any:
    from medkit_plugin_report.modality import ReportModality

    rows = [f"findings number {k} are normal and stable,{v}" for k, v in enumerate(values)]
    (root / "reports.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    return ReportModality().dataset(root)


READERS: dict[str, tuple[Callable[[Path, list[str]], Any], str]] = {
    "ct": (_ct, "labels.csv"), "mri": (_mri, "labels.csv"), "xray": (_xray, "labels.csv"),
    "pathology": (_pathology, "labels.csv"), "report": (_report, "reports.csv"),
}


@pytest.mark.parametrize("modality", sorted(READERS))
def test_minus_one_and_empty_are_unlabelled(modality: str, tmp_path: Path) -> None:
    build, _ = READERS[modality]
    ds = build(tmp_path, VALUES)
    assert len(ds) == 4
    assert list(ds.labels) == [1, -1, -1, 0]
    assert ds.class_names == ["0", "1"]  # "-1" is never a class


@pytest.mark.parametrize("bad", ["-3", "-7", "3.5"])
@pytest.mark.parametrize("modality", sorted(READERS))
def test_other_negative_or_fractional_labels_are_errors(modality: str, bad: str, tmp_path: Path) -> None:
    build, file = READERS[modality]
    # label tables name the file line (header = line 1), report rows their row index (as their ids)
    where = {"reports.csv": r"reports[.]csv row 2\b"}.get(file, r"labels[.]csv line 4\b")
    with pytest.raises(DataError, match=rf"{where}.*'{bad.replace('.', '[.]')}'"):
        build(tmp_path, ["1", "0", bad, "0"])


def test_classification_rows_follow_the_rule(tmp_path: Path) -> None:
    from medkit_plugin_classification.readers import ReaderOptions, read_classification

    rows = "\n".join(f"sentence number {k},{v}" for k, v in enumerate(["0", "1", "0", "1", "-1", "1"]))
    (tmp_path / "data.csv").write_text("text,label\n" + rows + "\n")
    opts = ReaderOptions(dims=1, on_error="skip")
    splits = read_classification(tmp_path / "data.csv", opts)
    assert sum(len(s) for s in splits.values()) == 5 and splits["train"].class_names == ["0", "1"]
    assert opts.skipped and "data.csv:6" in opts.skipped[0][0]
    (tmp_path / "data.csv").write_text("text,label\n" + rows.replace(",-1", ",-3") + "\n")
    with pytest.raises(DataError, match=r"data\.csv:6: label '-3'"):
        read_classification(tmp_path / "data.csv", ReaderOptions(dims=1, on_error="skip"))
