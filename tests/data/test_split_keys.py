"""The held-out split by patient / study / case / folder, with duplicate images joined, everywhere a split is made."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medkit.data.groups import GroupOptions, sample_keys
from medkit.data.split import hash_score
from medkit.engine.datasets import build_datasets
from medkit.registry import create

VAL = 0.3


def _dicom(path: Path, patient: str | None, seed: int, *, uid_seed: str | None = None) -> Path:
    """A small DX DICOM of ``patient`` (``None``: no PatientID) with pixels drawn from ``seed``."""
    import pydicom
    from medkit_plugin_xray.demo import write_dicom

    pixels = (np.random.default_rng(seed).random((64, 64)) * 4000).astype(np.uint16)  # within max_upsample 4
    write_dicom(path, pixels, uid_seed=uid_seed or path.name)
    ds = pydicom.dcmread(path)
    if patient is None:
        del ds.PatientID
    else:
        ds.PatientID = patient
    ds.save_as(path)
    return path


def _split(data: Path, name: str = "xray", options: GroupOptions | None = None, **kwargs: Any) -> dict[str, Any]:
    modality = create("modality", name, **kwargs)
    return build_datasets({name: modality}, {name: str(data)}, val_fraction=VAL, seed=0, groups=options)


def _sides(run: Any, name: str = "xray") -> dict[str, str]:
    """file (sample id without its region) → "train" / "val"."""
    ids = run.train[name].ids
    out = {ids[i].split("#")[0]: "train" for i in run.train_indices[name]}
    for i in run.val_indices[name]:
        assert out.get(ids[i].split("#")[0], "val") == "val", f"{ids[i]} is on both sides"
        out[ids[i].split("#")[0]] = "val"
    return out


def _names_on_both_sides(prefix: str, n: int = 2, suffix: str = ".dcm") -> list[str]:
    """``n`` file names that a split by file name (seed 0) puts on different sides, so a test using
    them fails on a split that does not join them."""
    names = [f"{prefix}{k}{suffix}" for k in range(200)]
    val = [x for x in names if hash_score(x, 0) < VAL]
    train = [x for x in names if hash_score(x, 0) >= VAL]
    return [val[0], *train[:n - 1]]


def test_several_images_of_one_patient_in_separate_files_land_on_one_side(tmp_path: Path) -> None:
    data = tmp_path / "cxr"
    for p in range(8):
        for k in range(3):
            _dicom(data / f"study{k}" / f"img_p{p}_{k}.dcm", f"PAT{p}", 10 * p + k)
    run = _split(data)
    sides = _sides(run)
    by_patient = {p: {sides[f"study{k}/img_p{p}_{k}.dcm"] for k in range(3)} for p in range(8)}
    assert all(len(s) == 1 for s in by_patient.values()), by_patient
    assert {"train", "val"} == {s for v in by_patient.values() for s in v}
    entry = run.split["modalities"]["xray"]
    assert entry["key"] == {"patient": 8}
    assert sorted(entry["groups"]["val"] + entry["groups"]["train"]) == [f"patient:PAT{p}" for p in range(8)]


def test_without_patient_id_the_study_then_the_file_is_the_group(tmp_path: Path) -> None:
    data = tmp_path / "cxr"
    _dicom(data / "a.dcm", None, 1)
    (data / "b.png").parent.mkdir(exist_ok=True)
    from PIL import Image

    Image.fromarray((np.random.default_rng(2).random((64, 64)) * 255).astype(np.uint8)).save(data / "b.png")
    keys = sample_keys(create("modality", "xray").dataset(data, train=True), data)
    assert keys.kinds == ["study", "source"] and keys.keys[0].startswith("study:") and keys.keys[1] == "b.png"


def test_the_same_image_under_two_names_is_never_on_both_sides_and_is_reported(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "cxr"
    first, second = _names_on_both_sides("x")
    # the same SOPInstanceUID, re-labelled with another PatientID and other bytes: a re-export
    _dicom(data / first, "PAT-A", 1, uid_seed="one-image")
    _dicom(data / second, "PAT-B", 2, uid_seed="one-image")
    # the same bytes under two names (a copied PNG: no identifier but its content)
    third, fourth = _names_on_both_sides("copy", suffix=".png")
    _pngs(data, 1)
    shutil.move(data / "im0.png", data / third)
    shutil.copy(data / third, data / fourth)
    for k in range(10):
        _dicom(data / f"other{k}.dcm", f"P{k}", 100 + k)
    with caplog.at_level(logging.WARNING, logger="medkit.engine.datasets"):
        run = _split(data)
    sides = _sides(run)
    assert sides[first] == sides[second] and sides[third] == sides[fourth]
    dups = run.split["modalities"]["xray"]["duplicates"]
    assert {tuple(d["files"]) for d in dups} == {tuple(sorted((first, second))), tuple(sorted((third, fourth)))}
    by_files = {tuple(d["files"]): d for d in dups}
    assert [i.split(":")[0] for i in by_files[tuple(sorted((first, second)))]["identities"]] == ["sop"]
    assert by_files[tuple(sorted((first, second)))]["keys"] == ["patient:PAT-A", "patient:PAT-B"]
    assert [i.split(":")[0] for i in by_files[tuple(sorted((third, fourth)))]["identities"]] == ["sha256"]
    assert sum("duplicate image" in r.getMessage() for r in caplog.records) == 2


def test_a_real_pydicom_file_copied_under_another_name_is_one_group(tmp_path: Path) -> None:
    """pydicom's own CT_small.dcm (PatientID 1CT1) twice, and MR_small.dcm (4MR1) once."""
    from pydicom.data import get_testdata_file

    data = tmp_path / "real"
    data.mkdir()
    ct, mr = get_testdata_file("CT_small.dcm"), get_testdata_file("MR_small.dcm")
    shutil.copy(ct, data / "CT_small.dcm")
    (data / "elsewhere").mkdir()
    shutil.copy(ct, data / "elsewhere" / "renamed.dcm")
    shutil.copy(mr, data / "MR_small.dcm")
    from medkit.data.items import Item, ItemDataset

    names = ["CT_small.dcm", "MR_small.dcm", "elsewhere/renamed.dcm"]  # as a fine-tuning reader lists them
    keys = sample_keys(ItemDataset([Item(n, data / n, 0) for n in names], lambda *a: {}, ["c"]), data)
    assert keys.keys == ["patient:1CT1", "patient:4MR1", "patient:1CT1"] and keys.kinds == ["patient"] * 3
    assert len(keys.duplicates) == 1 and keys.duplicates[0]["files"] == ["CT_small.dcm", "elsewhere/renamed.dcm"]


def _pngs(data: Path, n: int) -> list[str]:
    from PIL import Image

    data.mkdir(parents=True, exist_ok=True)
    names = []
    for k in range(n):
        Image.fromarray((np.random.default_rng(k).random((64, 64)) * 255).astype(np.uint8)).save(data / f"im{k}.png")
        names.append(f"im{k}.png")
    return names


def test_a_patient_column_of_a_csv_groups_the_images(tmp_path: Path) -> None:
    data = tmp_path / "cxr"
    names = _pngs(data, 24)
    with open(data / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "subject_id"])
        w.writerows([n, k % 2, f"S{k // 4}"] for k, n in enumerate(names))
    sides = _sides(run := _split(data))
    for s in range(6):
        assert len({sides[f"im{k}.png"] for k in range(4 * s, 4 * s + 4)}) == 1
    assert run.split["modalities"]["xray"]["key"] == {"patient": 6}
    # a column of another name is found when named
    with open(data / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "MRN"])
        w.writerows([n, k % 2, f"M{k // 6}"] for k, n in enumerate(names))
    assert _split(data).split["modalities"]["xray"]["key"] == {"source": 24}
    run = _split(data, options=GroupOptions(patient_column="MRN"))
    assert run.split["modalities"]["xray"]["key"] == {"patient": 4}
    assert run.split["modalities"]["xray"]["key_options"] == {"patient_column": "MRN", "folder_level": None}
    from medkit.api.errors import DataError

    with pytest.raises(DataError, match="trainer.patient_column='nope'"):
        _split(data, options=GroupOptions(patient_column="nope"))


def test_a_folder_level_groups_the_images_below_it(tmp_path: Path) -> None:
    data = tmp_path / "cxr"
    for p in range(6):
        _pngs(data / f"patient{p}" / "visit", 3)
    run = _split(data, options=GroupOptions(folder_level=0))
    sides = _sides(run)
    for p in range(6):
        assert len({sides[f"patient{p}/visit/im{k}.png"] for k in range(3)}) == 1
    assert run.split["modalities"]["xray"]["key"] == {"folder": 6}


def test_two_slides_of_one_tcga_case_are_one_patient(tmp_path: Path) -> None:
    from PIL import Image

    data = tmp_path / "slides"
    data.mkdir()
    cases = [f"TCGA-A2-A{k:03d}" for k in range(6)]
    for k, case in enumerate(cases):
        for slide in ("01Z-00-DX1", "01Z-00-DX2"):
            rgb = (np.random.default_rng(k).random((64, 64, 3)) * 255).astype(np.uint8)
            Image.fromarray(rgb).save(data / f"{case}-{slide}.png")
    run = _split(data, "pathology", tile_size=32, min_tissue=0.0, folder_labels=False)
    sides = _sides(run, "pathology")
    for case in cases:
        assert sides[f"{case}-01Z-00-DX1.png"] == sides[f"{case}-01Z-00-DX2.png"]
    entry = run.split["modalities"]["pathology"]
    assert entry["key"] == {"case": 6} and entry["val"] and set(entry["groups"]["val"]) <= {f"case:{c}" for c in cases}


def test_a_continued_run_keeps_what_it_trained_on_in_training_when_the_key_joins_groups(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A split.json of an earlier medkit (by file) put one patient on both sides: continuing it, that
    patient stays in training (never held out after training), the others keep their sides."""
    data = tmp_path / "cxr"
    a, b = _names_on_both_sides("p")
    _dicom(data / a, "SPLIT", 1)
    _dicom(data / b, "SPLIT", 2)
    for k in range(10):
        _dicom(data / f"o{k}.dcm", f"P{k}", 10 + k)
    first = _split(data)
    old = json.loads(json.dumps(first.split))
    entry = old["modalities"]["xray"]
    for key in ("key", "key_options", "groups", "duplicates"):
        entry.pop(key)  # the format of an earlier medkit: sources only
    entry["val"], entry["train"] = [a], sorted(set(entry["train"]) | set(entry["val"]) - {a})
    modality = create("modality", "xray")
    with caplog.at_level(logging.WARNING, logger="medkit.engine.datasets"):
        kept = build_datasets({"xray": modality}, {"xray": str(data)}, val_fraction=0.5, seed=9, previous=old)
    assert _sides(kept)[a] == _sides(kept)[b] == "train"
    assert any("both sides" in r.getMessage() for r in caplog.records)
    # the new format is kept as it is (a resume or --from of a run of this medkit)
    again = build_datasets({"xray": modality}, {"xray": str(data)}, val_fraction=0.5, seed=9, previous=kept.split)
    assert again.split == kept.split


def test_finetuning_leakage_check_uses_the_patient_key(tmp_path: Path) -> None:
    """A validation image whose patient pre-training trained on (through another file) is refused."""
    from medkit.api.errors import ConfigError
    from medkit.data.items import Item, ItemDataset
    from medkit.finetune.leakage import check_pretraining_overlap

    data = tmp_path / "cxr"
    for p in range(12):
        for k in range(2):
            _dicom(data / f"p{p}_{k}.dcm", f"PAT{p}", 10 * p + k)
    run = _split(data)
    origin = tmp_path / "pre"
    (origin / "metrics").mkdir(parents=True)
    (origin / "metrics" / "split.json").write_text(json.dumps(run.split))
    entry = run.split["modalities"]["xray"]
    trained = sorted(entry["train"])
    # a patient pre-training trained on, one of whose files a split by file would have held out
    val_file, train_file = next((f"p{p}_1.dcm", f"p{p}_0.dcm") for p in range(12)
                                if hash_score(f"p{p}_1.dcm", 0) < VAL and f"p{p}_0.dcm" in trained)
    # fine-tuning's own split: one file of that patient in val, the other in train

    def ds(*names: str) -> ItemDataset:
        return ItemDataset([Item(n, data / n, 0) for n in names], lambda *a: {}, ["c"])

    held = sorted(entry["val"])
    splits = {"train": ds(train_file), "val": ds(val_file), "test": ds(held[0])}
    with pytest.raises(ConfigError, match="1 val source"):
        check_pretraining_overlap(origin, data, splits)
    ok = check_pretraining_overlap(origin, data, {"train": ds(*trained), "val": ds(held[0]), "test": ds(held[-1])})
    assert ok is not None and ok["checked"] and ok["overlap"] == {}


def test_prepared_data_is_split_by_the_same_keys_as_its_folder(tmp_path: Path) -> None:
    pytest.importorskip("litdata")
    from medkit.data.prepare import prepare

    data = tmp_path / "cxr"
    for p in range(6):
        for k in range(3):
            _dicom(data / f"p{p}_{k}.dcm", f"PAT{p}", 10 * p + k)
    shutil.copy(data / "p0_0.dcm", data / "dup.dcm")
    prepare(create("modality", "xray"), data, tmp_path / "prep", part_size=5)
    folder, prepared = _split(data), _split(tmp_path / "prep")
    want, got = folder.split["modalities"]["xray"], prepared.split["modalities"]["xray"]
    assert want["key"] == {"patient": 6}
    for key in ("key", "groups", "duplicates", "train", "val"):
        assert got[key] == want[key], key
    from medkit.api.errors import ConfigError

    with pytest.raises(ConfigError, match="trainer.group_folder_level=0; prepare it again"):
        _split(tmp_path / "prep", options=GroupOptions(folder_level=0))


def test_ct_series_of_one_patient_and_a_copied_series_stay_on_one_side(tmp_path: Path) -> None:
    """DICOM series (folders of slices of pydicom's CT_small.dcm): two series per patient, and one
    series copied to another folder (same SeriesInstanceUID and SOPInstanceUIDs)."""
    import pydicom
    from pydicom.data import get_testdata_file

    src = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    data = tmp_path / "ct"
    for p in range(6):
        for s in range(2):
            series, folder = pydicom.uid.generate_uid(), data / f"s{p}_{s}"
            folder.mkdir(parents=True)
            for k in range(4):
                ds = src.copy()
                ds.SeriesInstanceUID, ds.PatientID, ds.InstanceNumber = series, f"CT{p}", k + 1
                ds.StudyInstanceUID = pydicom.uid.generate_uid(entropy_srcs=[f"study{p}_{s}"])
                ds.SOPInstanceUID = pydicom.uid.generate_uid()
                ds.ImageOrientationPatient, ds.ImagePositionPatient = [1, 0, 0, 0, 1, 0], [0.0, 0.0, 2.0 * k]
                ds.save_as(folder / f"IM{k}", enforce_file_format=True)
    shutil.copytree(data / "s0_0", data / "copy_of_s0_0")
    ds = pydicom.dcmread(data / "copy_of_s0_0" / "IM0")
    for f in sorted((data / "copy_of_s0_0").iterdir()):
        one = pydicom.dcmread(f)
        one.PatientID = "ANON"  # re-labelled: only the series UID says it is the same
        one.save_as(f)
    run = _split(data, "ct", input_size=[4, 32, 32], depth=4, depth_stride=4)
    sides = _sides(run, "ct")
    assert all(sides[f"s{p}_0"] == sides[f"s{p}_1"] for p in range(6)), sides
    assert sides["copy_of_s0_0"] == sides["s0_0"] and {"train", "val"} == set(sides.values())
    entry = run.split["modalities"]["ct"]
    assert entry["key"] == {"patient": 7}
    assert [d["files"] for d in entry["duplicates"]] == [["copy_of_s0_0", "s0_0"]]
    assert entry["duplicates"][0]["identities"] == [f"series:{ds.SeriesInstanceUID}"]
