"""Every classification data layout has a reader test; bad data give one clear DataError."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from medkit.api import ConfigError, DataError
from medkit_plugin_classification.readers import ReaderOptions, read_classification


def _png(path: Path, value: int, size: int = 32, rgb: bool = False) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((size, size, 3) if rgb else (size, size), value, dtype=np.uint8)
    arr[: size // 2] = 255 - value
    Image.fromarray(arr).save(path)


def _nifti(path: Path, shape: tuple[int, int, int] = (32, 32, 16)) -> None:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    path.write_bytes(gzip.compress(nib.Nifti1Image(data, np.eye(4)).to_bytes()))


def test_class_per_folder_png(tmp_path: Path) -> None:
    for cls in ("normal", "pneumonia"):
        for i in range(5):
            _png(tmp_path / cls / f"{i}.png", 40 * i, rgb=cls == "normal")
    (tmp_path / "notes.txt").write_text("ignored")
    splits = read_classification(tmp_path, ReaderOptions(dims=2, input_size=(16, 16)))
    assert splits["train"].class_names == ["normal", "pneumonia"]
    assert sum(len(s) for s in splits.values()) == 10
    sample = splits["val"].load(0)
    assert sample["input"].shape[1:] == (16, 16) and sample["input"].dtype == torch.float32
    assert 0.0 <= float(sample["input"].min()) and float(sample["input"].max()) <= 1.0  # unit: /255
    assert sample["label"] in (0, 1) and sample["id"].endswith(".png")


def test_official_split_folders(tmp_path: Path) -> None:
    for split in ("train", "val", "test"):
        for cls in ("a", "b"):
            _png(tmp_path / split / cls / "x.png", 10)
    splits = read_classification(tmp_path, ReaderOptions(dims=2))
    assert [len(splits[s]) for s in ("train", "val", "test")] == [2, 2, 2]
    assert splits["test"].ids == ["test/a/x.png", "test/b/x.png"]


def test_unseen_label_in_split_names_the_folder(tmp_path: Path) -> None:
    for split in ("train", "val", "test"):
        _png(tmp_path / split / "a" / "x.png", 10)
        _png(tmp_path / split / "b" / "x.png", 10)
    _png(tmp_path / "val" / "zebra" / "x.png", 10)
    with pytest.raises(DataError, match=r"val/zebra.*'zebra' is not in the class list"):
        read_classification(tmp_path, ReaderOptions(dims=2))


def test_nifti_folders_3d(tmp_path: Path) -> None:
    for cls in ("covid", "normal"):
        for i in range(3):
            _nifti(tmp_path / cls / f"case{i}.nii.gz")
    splits = read_classification(tmp_path, ReaderOptions(dims=3, normalize="zscore"))
    x = splits["train"].load(0)["input"]
    assert x.shape == (1, 16, 32, 32)  # NIfTI (x, y, z) -> [C, Z, X, Y]
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std(unbiased=False)) - 1) < 1e-3


def test_csv_path_label_with_split_column(tmp_path: Path) -> None:
    rows = ["path,label,split"]
    for i, split in enumerate(["train", "train", "valid", "test", "train"]):
        _png(tmp_path / "img" / f"{i}.png", 20 * i)
        rows.append(f"img/{i}.png,{'yes' if i % 2 else 'no'},{split}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    splits = read_classification(tmp_path, ReaderOptions(dims=2))
    assert [len(splits[s]) for s in ("train", "val", "test")] == [3, 1, 1]
    assert splits["train"].class_names == ["no", "yes"]
    assert splits["val"].labels == [0]


def test_csv_missing_image_and_bad_label(tmp_path: Path) -> None:
    _png(tmp_path / "a.png", 1)
    (tmp_path / "data.csv").write_text("path,label\na.png,x\nmissing.png,y\n")
    with pytest.raises(DataError, match=r"data.csv:3: image 'missing.png' does not exist"):
        read_classification(tmp_path, ReaderOptions(dims=2))
    for i in range(4):
        _png(tmp_path / f"{i}.png", i)
    (tmp_path / "data.csv").write_text("path,label\n" + "".join(f"{i}.png,{i % 2}\n" for i in range(4))
                                       + "a.png,7\n")
    with pytest.raises(DataError, match=r"data.csv:6: label '7' is not in the class list \[0, 1\]"):
        read_classification(tmp_path, ReaderOptions(dims=2, class_names=["0", "1"]))


def test_text_csv(tmp_path: Path) -> None:
    body = "".join(f'"sentence number {i}, with a comma",{"pos" if i % 2 else "neg"}\n' for i in range(10))
    (tmp_path / "train.csv").write_text("text,label\n" + body)
    (tmp_path / "val.csv").write_text("text,label\nfine,pos\n")
    (tmp_path / "test.csv").write_text("text,label\nbad,neg\n")
    splits = read_classification(tmp_path, ReaderOptions(dims=1))
    assert splits["train"].load(1)["input"] == "sentence number 1, with a comma"
    assert splits["train"].load(1)["label"] == 1 and splits["val"].ids == ["val.csv#row1"]


def test_pubmed_rct_format(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("###111\nBACKGROUND\tAsthma is common .\nMETHODS\tWe randomised .\n\n"
                                        "###112\nRESULTS\tIt worked .\nCONCLUSIONS\tGood .\n")
    (tmp_path / "dev.txt").write_text("###211\nMETHODS\tA trial .\n")
    (tmp_path / "test.txt").write_text("###311\nRESULTS\tFine .\n")
    splits = read_classification(tmp_path, ReaderOptions(dims=1))
    assert splits["train"].class_names == ["BACKGROUND", "CONCLUSIONS", "METHODS", "RESULTS"]
    assert splits["train"].ids == ["train.txt:111#0", "train.txt:111#1", "train.txt:112#0", "train.txt:112#1"]
    assert splits["val"].load(0) == {"id": "dev.txt:211#0", "label": 2, "input": "A trial ."}


def test_pubmed_errors_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("###1\nMETHODS\tx .\nRESULTS\ty .\n")
    (tmp_path / "dev.txt").write_text("")
    (tmp_path / "test.txt").write_text("###3\nRESULTS\tz .\n")
    with pytest.raises(DataError, match=r"dev.txt: the 'val' split is empty"):
        read_classification(tmp_path, ReaderOptions(dims=1))
    (tmp_path / "dev.txt").write_text("###2\nMETHODS no tab here\n")
    with pytest.raises(DataError, match=r"dev.txt:2: expected 'LABEL<TAB>sentence'"):
        read_classification(tmp_path, ReaderOptions(dims=1))
    (tmp_path / "dev.txt").write_text("###2\nOBJECTIVE\tunknown role .\n")
    with pytest.raises(DataError, match=r"dev.txt:2: label 'OBJECTIVE' is not in the class list"):
        read_classification(tmp_path, ReaderOptions(dims=1))


def test_empty_folder_and_num_classes(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="empty"):
        read_classification(empty, ReaderOptions(dims=2))
    for cls in ("a", "b"):
        for i in range(3):
            _png(tmp_path / "d" / cls / f"{i}.png", i)
    with pytest.raises(ConfigError, match="task.num_classes is 3"):
        read_classification(tmp_path / "d", ReaderOptions(dims=2, num_classes=3))


def test_wrong_dimension_image(tmp_path: Path) -> None:
    for cls in ("a", "b"):
        for i in range(3):
            _png(tmp_path / cls / f"{i}.png", i)
    splits = read_classification(tmp_path, ReaderOptions(dims=2))
    item = splits["train"].items[0]
    _nifti(Path(str(item.source) + ".nii.gz"))
    item.source = Path(str(item.source) + ".nii.gz")
    with pytest.raises(DataError, match=r"\.nii\.gz: the image is 3D but this task reads 2D"):
        splits["train"].load(0)
