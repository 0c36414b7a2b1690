"""The bad-input corpus: every case asserts its class — a clear one-line error naming the file, a
documented skip (listed with its reason), or accepted — so that nothing is accepted silently. Add a row
to ``CASES`` to grow it.

Each case builds its folder in ``tmp_path`` (nothing is stored: the generators are the corpus) and
names the file the message must mention. ``how`` is ``inspect`` (``medkit data inspect --on-error
raise``), ``inspect-skip`` (its default ``--on-error skip``: still non-zero for NaN/Inf), ``run``
(a 1-step tiny run) or ``skip`` (a 1-step tiny run with ``modality.<m>.on_error=skip`` that must finish
and warn about the file), ``listed`` (``data inspect`` finishes and lists the file as skipped, with
its reason), ``accept`` (``data inspect --on-error raise`` finishes, skipping nothing), ``task`` /
``task-listed`` / ``task-accept`` (a fine-tuning task indexes the folder and loads every sample: no
training) and ``received`` / ``received-accept`` (a medkit command on a copy of a finished tiny run
whose ``config.yaml``, ``config.json`` or ``manifest.json`` the case crafted).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

nib = pytest.importorskip("nibabel")
pydicom = pytest.importorskip("pydicom")

SMALL = ["encoder.depth=2", "encoder.embed_dim=48", "encoder.num_heads=3", "trainer.batch_size=2",
         "trainer.eval_batches=1"]
WSI = Path(__file__).parents[3] / "plugins" / "medkit-plugin-pathology" / "tests" / "fixtures" / "wsi"
PINK = (234, 168, 204)
# -- builders ----------------------------------------------------------------------------------
def nifti(path: Path, data: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return path


def good_volume(root: Path, name: str = "good.nii.gz") -> Path:
    rng = np.random.default_rng(0)
    return nifti(root / name, rng.normal(size=(24, 24, 24)).astype(np.float32) * 100)


def truncate(path: Path, keep: int) -> Path:
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(gzip.decompress(data)[:keep]))
    else:
        path.write_bytes(data[:keep])
    return path


def with_nonfinite(value: float) -> np.ndarray:
    vol = np.ones((24, 24, 24), np.float32)
    vol[3, 4, 5] = value
    return vol


_DCM = {"ct": "CT", "mri": "MR"}  # the DICOM Modality code of each medkit modality


def series(folder: Path, n: int, gaps: list[float] | None = None, same: bool = False, modality: str = "CT") -> Path:
    from pydicom.data import get_testdata_file

    src = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    folder.mkdir(parents=True, exist_ok=True)
    uid = pydicom.uid.generate_uid()
    z = np.cumsum([0.0] + (gaps if gaps is not None else [2.0] * (n - 1)))
    for k in range(n):
        ds = src.copy()
        ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.InstanceNumber = uid, pydicom.uid.generate_uid(), k + 1
        ds.Modality = modality  # the DICOM Modality the case's medkit modality reads
        ds.ImagePositionPatient = [0.0, 0.0, 0.0 if same else float(z[k])]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.save_as(folder / f"IM{k:03d}.dcm", enforce_file_format=True)
    return folder


def png(path: Path, size: tuple[int, int] = (64, 64), colour=PINK, mode: str = "RGB") -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour if mode == "RGB" else colour[0]).save(path)
    return path


def float_tiff(path: Path, value: float) -> Path:
    from PIL import Image

    arr = np.full((64, 64), 0.5, np.float32)  # 64 px: within xray's max_upsample of 4 for 224
    arr[3, 3] = value
    Image.fromarray(arr, mode="F").save(path)
    return path


def xray_dicom(path: Path, **kw) -> Path:
    from medkit_plugin_xray.demo import write_dicom

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.arange(64 * 64 * kw.get("frames", 1), dtype=np.uint16).reshape(-1, 64, 64) * 3
    return write_dicom(path, pixels if kw.get("frames", 1) > 1 else pixels[0], **kw)


def text(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def nifti_header(path: Path, **fields: object) -> Path:
    """A good volume whose stored header is then patched (``pixdim`` = the three voxel sizes, or any
    header field): nibabel itself would refuse to write, or silently repair, such a header. An
    existing file keeps its data."""
    raw_path = path.with_name(path.name.removesuffix(".gz"))
    if path.name.endswith(".gz") and path.exists():
        raw_path.write_bytes(gzip.decompress(path.read_bytes()))
    elif not path.exists():
        nifti(raw_path, np.ones((24, 24, 24), np.float32))
    raw = bytearray(raw_path.read_bytes())
    with open(raw_path, "rb") as fh:
        header = nib.Nifti1Header.from_fileobj(fh, check=False)
    for key, value in fields.items():
        if key == "pixdim":
            header["pixdim"][1:4] = value
        else:
            header[key] = value
    block = header.binaryblock
    raw[:len(block)] = block
    if path.name.endswith(".gz"):
        raw_path.unlink()
        path.write_bytes(gzip.compress(bytes(raw)))
    else:
        path.write_bytes(bytes(raw))
    return path


def without(folder: Path, *tags: str) -> Path:
    """Every DICOM file of ``folder`` with ``tags`` deleted from its header."""
    for f in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(f)
        for tag in tags:
            if tag in ds:
                delattr(ds, tag)
        ds.save_as(f, enforce_file_format=True)
    return folder


def fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def dangling(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(path.parent / "no-such-file", path)
    return path


def grey(path: Path, values: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint8), mode="L").save(path)
    return path


def seg2d(root: Path, n: int = 5, mask_values: tuple[int, ...] = (0, 1), bad: str | None = None) -> Path:
    """``images/`` + ``masks/`` of ``n`` 32×32 cases; mask ``bad`` (a case name) holds ``mask_values``."""
    for k in range(n):
        grey(root / "images" / f"c{k}.png", np.full((32, 32), 40 * k + 10))
        mask = np.zeros((32, 32))
        mask[8:24, 8:24] = 1
        if bad == f"c{k}":
            mask = np.resize(np.array(mask_values), (32, 32))
        grey(root / "masks" / f"c{k}.png", mask)
    return root


def seg3d(root: Path, n: int = 5, top: int = 1, bad: str | None = None, bad_shape: bool = False) -> Path:
    rng = np.random.default_rng(0)
    for k in range(n):
        nifti(root / "images" / f"c{k}.nii.gz", rng.normal(size=(16, 16, 16)).astype(np.float32))
        mask = np.zeros((16, 16, 16), np.uint8)
        mask[4:12, 4:12, 4:12] = 1
        if bad == f"c{k}":
            mask = np.zeros((16, 16, 8), np.uint8) if bad_shape else mask * top
        nifti(root / "masks" / f"c{k}.nii.gz", mask)
    return root


def cls2d(root: Path, n: int = 5) -> Path:
    for cls in ("a", "b"):
        for k in range(n):
            grey(root / cls / f"{cls}{k}.png", np.full((32, 32), 20 * k + (0 if cls == "a" else 100)))
    return root


def cls_csv(root: Path, rows: str) -> Path:
    cls2d(root)
    return text(root / "labels.csv", ("path,label\n" + rows).encode())


def cls3d(root: Path, n: int = 5) -> Path:
    rng = np.random.default_rng(1)
    for cls in ("a", "b"):
        for k in range(n):
            nifti(root / cls / f"{cls}{k}.nii.gz", rng.normal(size=(16, 16, 16)).astype(np.float32))
    return root


def cls1d(root: Path, n: int = 30) -> Path:
    rows = "".join(f"lungs clear case {k} without effusion,{k % 2}\n" for k in range(n))
    return text(root / "sentences.csv", ("text,label\n" + rows).encode())


# received run directories: the case edits a copy of a finished tiny run (the copy is ``data``)
def edit_json(name: str, change: Callable[[dict], object]) -> Callable[[Path], None]:
    def build(run: Path) -> None:
        path = run / name
        doc = json.loads(path.read_text())
        out = change(doc)
        path.write_text(json.dumps(doc if out is None else out))
    return build


def edit_yaml(old: str, new: str) -> Callable[[Path], None]:
    def build(run: Path) -> None:
        text_ = (run / "config.yaml").read_text()
        assert old in text_, old
        (run / "config.yaml").write_text(text_.replace(old, new, 1))
    return build


def drop(name: str, then: Callable[[Path], None]) -> Callable[[Path], None]:
    def build(run: Path) -> None:
        (run / name).unlink()
        then(run)
    return build


REPORT = b"FINDINGS: the lungs are clear without focal consolidation. IMPRESSION: no acute disease.\n"


def reports(root: Path, n: int = 4) -> None:
    for k in range(n):
        text(root / f"r{k}.txt", REPORT)


def xrays(root: Path, n: int = 3) -> None:
    for k in range(n):
        png(root / f"x{k}.png", colour=(40 * k, 40 * k, 40 * k))


def tiles(root: Path, n: int = 3) -> None:
    for k in range(n):
        png(root / f"t{k}.png")


def slide(root: Path, name: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(WSI / name, root / name))


def labels(root: Path, rows: str, header: str = "id,label") -> Path:
    return text(root / "labels.csv", (header + "\n" + rows).encode())


# -- the table ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    id: str
    modality: str
    build: Callable[[Path], object]
    names: str  # the file (or folder) the message must name
    how: str = "inspect"
    overrides: tuple[str, ...] = ()
    marks: tuple = field(default=())
    more: tuple[str, ...] = ()  # further text the message must hold (the second row, the key)
    task: str | None = None  # task cases: the task, and its options
    options: tuple[tuple[str, object], ...] = ()

    @property
    def expect(self) -> str:
        """The class the case asserts: ``error`` (one line naming the file), ``skip`` (finishes and
        names the file as skipped, with its reason) or ``accepted``."""
        if self.how in ("skip", "listed", "task-listed"):
            return "skip"
        return "accepted" if self.how.endswith("accept") else "error"


def _c(id, modality, build, names, how="inspect", overrides=(), xfail: str | None = None, more=(),
       task=None, **options) -> Case:
    marks = (pytest.mark.xfail(reason=xfail, strict=False),) if xfail else ()
    return Case(id, modality, build, names, how, tuple(overrides), marks, tuple(more), task,
                tuple(sorted(options.items())))


def _task(id, task, modality, build, names, how="task", more=(), **options) -> Case:
    return _c(id, modality, build, names, how, more=more, task=task, **options)


#: received cases: the command (``{run}``: the crafted copy, ``{tmp}``: a scratch folder)
RESUME = ("run", "--resume", "{run}")
FROM = ("run", "--from", "{run}", "--modality", "xray", "--max-steps", "1", "--run-dir", "{tmp}/next",
        "trainer.batch_size=2", "trainer.eval_batches=1")
FINETUNE_FROM = ("finetune", "--from", "{run}", "--task", "classification", "--modality", "report", "--show")
REPORT_CMD = ("report", "{run}")
PULL = ("pull", "{run}", "--to", "{tmp}/pulled")
EMBED = ("embed", "{run}", "--modality", "report", "--max-samples", "4", "--out", "{tmp}/embed.png")


def _r(id, build, names, command, more=(), how="received") -> Case:
    return _c(id, "received", build, names, how, overrides=command, more=more)


CASES = [
    # -- CT / MRI volumes
    *[_c(f"{m}-truncated-nii", m, lambda r: truncate(nifti(r / "cut.nii", with_nonfinite(1.0)), 2000), "cut.nii")
      for m in ("ct", "mri")],
    _c("ct-truncated-niigz", "ct", lambda r: truncate(nifti(r / "cut.nii.gz", with_nonfinite(1.0)), 900), "cut.nii.gz"),
    *[_c(f"{m}-nan-volume", m, lambda r: nifti(r / "nan.nii", with_nonfinite(np.nan)), "nan.nii") for m in ("ct", "mri")],
    _c("ct-inf-volume", "ct", lambda r: nifti(r / "inf.nii.gz", with_nonfinite(np.inf)), "inf.nii.gz"),
    _c("ct-nan-inspect-default", "ct", lambda r: (good_volume(r), nifti(r / "nan.nii", with_nonfinite(np.nan))),
       "nan.nii", how="inspect-skip"),
    *[_c(f"{m}-complex-nifti", m, lambda r: nifti(r / "c.nii", np.ones((24, 24, 24), np.complex64)), "c.nii")
      for m in ("ct", "mri")],
    *[_c(f"{m}-1x1x1", m, lambda r: nifti(r / "dot.nii", np.ones((1, 1, 1), np.float32)), "dot.nii")
      for m in ("ct", "mri")],
    _c("ct-2d-nifti", "ct", lambda r: nifti(r / "flat.nii", np.ones((32, 32), np.float32)), "flat.nii"),
    _c("ct-5d-nifti", "ct", lambda r: nifti(r / "five.nii", np.ones((8, 8, 8, 2, 2), np.float32)), "five.nii"),
    _c("ct-empty-file", "ct", lambda r: text(r / "empty.nii", b""), "empty.nii"),
    _c("ct-garbage-nii", "ct", lambda r: text(r / "junk.nii.gz", b"not a nifti" * 50), "junk.nii.gz"),
    *[_c(f"{m}-uneven-dicom-series", m, lambda r, m=m: series(r / "s1", 5, gaps=[2, 2, 6, 2], modality=_DCM[m]), "s1")
      for m in ("ct", "mri")],
    _c("ct-duplicate-slice-positions", "ct", lambda r: series(r / "dup", 3, same=True), "dup"),
    _c("ct-dicom-truncated-header", "ct", lambda r: truncate(series(r / "s2", 1) / "IM000.dcm", 3000), "IM000.dcm"),
    _c("ct-dicom-truncated-pixels", "ct", lambda r: truncate(series(r / "s3", 1) / "IM000.dcm", 9000), "IM000.dcm",
       how="run"),
    _c("ct-png-in-volume-folder", "ct", lambda r: png(r / "photo.png"), "photo.png"),
    _c("ct-empty-folder", "ct", lambda r: r.mkdir(parents=True, exist_ok=True), "data"),
    _c("ct-empty-labels-csv", "ct", lambda r: (good_volume(r), text(r / "labels.csv", b"")), "labels.csv"),
    _c("ct-labels-negative", "ct", lambda r: (good_volume(r), labels(r, "good.nii.gz,-3\n")), "labels.csv"),
    _c("ct-labels-fraction", "ct", lambda r: (good_volume(r), labels(r, "good.nii.gz,3.5\n")), "labels.csv"),
    _c("ct-truncated-run", "ct", lambda r: (good_volume(r), truncate(nifti(r / "cut.nii", with_nonfinite(1.0)), 2000)),
       "cut.nii", how="run"),
    _c("ct-nan-run", "ct", lambda r: (good_volume(r), nifti(r / "nan.nii", with_nonfinite(np.nan))), "nan.nii", how="run"),
    _c("ct-truncated-skipped", "ct", lambda r: (good_volume(r), good_volume(r, "b.nii.gz"),
                                                truncate(nifti(r / "cut.nii", with_nonfinite(1.0)), 2000)),
       "cut.nii", how="skip"),
    _c("mri-nan-skipped", "mri", lambda r: (good_volume(r), good_volume(r, "b.nii.gz"),
                                            nifti(r / "nan.nii", with_nonfinite(np.nan))), "nan.nii", how="skip"),
    _c("ct-uneven-series-skipped", "ct", lambda r: (good_volume(r), good_volume(r, "b.nii.gz"),
                                                    series(r / "s1", 5, gaps=[2, 2, 6, 2])), "s1", how="skip"),
    # -- X-ray
    _c("xray-1x1-png", "xray", lambda r: png(r / "dot.png", (1, 1)), "dot.png"),
    _c("xray-truncated-png", "xray", lambda r: truncate(png(r / "cut.png", (256, 256), mode="L"), 60), "cut.png", how="run"),
    _c("xray-empty-png", "xray", lambda r: text(r / "empty.png", b""), "empty.png"),
    _c("xray-text-as-png", "xray", lambda r: text(r / "notes.png", b"hello\n" * 20), "notes.png"),
    _c("xray-nan-float-tiff", "xray", lambda r: (r.mkdir(parents=True), float_tiff(r / "nan.tif", np.nan)),
       "nan.tif", how="run"),
    _c("xray-inf-float-tiff", "xray", lambda r: (r.mkdir(parents=True), float_tiff(r / "inf.tif", np.inf)),
       "inf.tif", how="run"),
    _c("xray-truncated-dicom", "xray", lambda r: truncate(xray_dicom(r / "cut.dcm"), 900), "cut.dcm", how="run"),
    _c("xray-multiframe-dicom", "xray", lambda r: xray_dicom(r / "cine.dcm", frames=3), "cine.dcm"),
    _c("xray-nifti-in-folder", "xray", lambda r: nifti(r / "vol.nii.gz", np.ones((24, 24, 24), np.float32)),
       "vol.nii.gz"),
    _c("xray-empty-labels-csv", "xray", lambda r: (xrays(r), text(r / "labels.csv", b"")), "labels.csv"),
    _c("xray-labels-negative", "xray", lambda r: (xrays(r), labels(r, "x0.png,-3\nx1.png,1\n", "path,label")),
       "labels.csv"),
    _c("xray-labels-fraction", "xray", lambda r: (xrays(r), labels(r, "x0.png,3.5\nx1.png,1\n", "path,label")),
       "labels.csv"),
    _c("xray-truncated-skipped", "xray", lambda r: (xrays(r), truncate(png(r / "cut.png", (256, 256), mode="L"), 60)),
       "cut.png", how="skip", overrides=("modality.xray.verify=true",)),
    # -- pathology
    _c("pathology-1x1-png", "pathology", lambda r: png(r / "dot.png", (1, 1)), "dot.png"),
    _c("pathology-truncated-png", "pathology", lambda r: truncate(png(r / "cut.png", (600, 600)), 80), "cut.png"),
    _c("pathology-unreadable-svs", "pathology", lambda r: slide(r, "unreadable.svs"), "unreadable.svs"),
    _c("pathology-unopenable-tiff", "pathology", lambda r: slide(r, "unopenable.tiff"), "unopenable.tiff"),
    _c("pathology-svs-smaller-than-a-tile", "pathology", lambda r: slide(r, "small.svs"), "small.svs"),
    _c("pathology-nifti-in-folder", "pathology", lambda r: nifti(r / "vol.nii", np.ones((24, 24, 24), np.float32)),
       "vol.nii"),
    _c("pathology-empty-labels-csv", "pathology", lambda r: (tiles(r), text(r / "labels.csv", b"")), "labels.csv"),
    _c("pathology-unreadable-svs-skipped", "pathology", lambda r: (tiles(r), slide(r, "unreadable.svs")),
       "unreadable.svs", how="skip"),
    # -- reports
    _c("report-latin1-txt", "report", lambda r: (reports(r), text(r / "latin.txt", "Befund: unauffällig".encode("latin-1"))),
       "latin.txt"),
    _c("report-empty-csv", "report", lambda r: text(r / "reports.csv", b""), "reports.csv"),
    _c("report-csv-without-text-column", "report", lambda r: text(r / "reports.csv", b"id,body\n1,lungs clear\n"),
       "reports.csv"),
    _c("report-broken-jsonl", "report", lambda r: text(r / "r.jsonl", b'{"text": "lungs clear and no effusion"\n'),
       "r.jsonl"),
    _c("report-latin1-skipped", "report", lambda r: (reports(r, 6), text(r / "latin.txt", "Befund: unauffällig".encode("latin-1"))),
       "latin.txt", how="skip"),
    # -- geometry, contradictory labels, non-regular files (issue 20)
    *[_c(f"{m}-dicom-without-pixelspacing", m,
         lambda r, m=m: without(series(r / "s1", 3, modality=_DCM[m]), "PixelSpacing"), "s1",
         more=("PixelSpacing",)) for m in ("ct", "mri")],
    _c("ct-dicom-without-positions-or-thickness", "ct",
       lambda r: without(series(r / "s1", 3), "ImagePositionPatient", "SliceThickness", "SpacingBetweenSlices"), "s1",
       more=("SliceThickness",)),
    _c("ct-dicom-without-spacing-skipped", "ct", lambda r: (good_volume(r), good_volume(r, "b.nii.gz"),
                                                            without(series(r / "s1", 3), "PixelSpacing")),
       "s1", how="skip"),
    _c("ct-negative-pixdim", "ct", lambda r: nifti_header(r / "neg.nii", pixdim=[1, 1, -2]), "neg.nii",
       more=("pixdim",)),
    _c("mri-negative-pixdim-niigz", "mri", lambda r: nifti_header(r / "neg.nii.gz", pixdim=[-1, 1, 1]),
       "neg.nii.gz", more=("pixdim",)),
    _c("ct-zero-pixdim", "ct", lambda r: nifti_header(r / "zero.nii", pixdim=[1, 1, 0], qform_code=0,
                                                       sform_code=0), "zero.nii", more=("pixdim",)),
    _c("mri-zero-pixdim", "mri", lambda r: nifti_header(r / "zero.nii.gz", pixdim=[0, 1, 1]), "zero.nii.gz"),
    _c("ct-nan-pixdim", "ct", lambda r: nifti_header(r / "nan.nii", pixdim=[1, np.nan, 1]), "nan.nii"),
    _c("ct-nan-affine", "ct", lambda r: nifti_header(r / "aff.nii", srow_x=[np.nan, 0, 0, 0], qform_code=0,
                                                      sform_code=1), "aff.nii", more=("affine",)),
    _c("mri-inf-affine", "mri", lambda r: nifti_header(r / "aff.nii.gz", srow_y=[0, np.inf, 0, 0], qform_code=0,
                                                        sform_code=1), "aff.nii.gz", more=("affine",)),
    _c("ct-singular-affine", "ct", lambda r: nifti_header(r / "flat.nii", srow_z=[0, 0, 0, 0], qform_code=0,
                                                           sform_code=1), "flat.nii", more=("singular",)),
    _c("ct-bad-pixdim-run", "ct", lambda r: (good_volume(r), nifti_header(r / "neg.nii", pixdim=[1, 1, -2])),
       "neg.nii", how="run"),
    _c("ct-bad-pixdim-skipped", "ct", lambda r: (good_volume(r), good_volume(r, "b.nii.gz"),
                                                 nifti_header(r / "neg.nii", pixdim=[1, 1, -2])),
       "neg.nii", how="skip"),
    *[_c(f"{m}-labels-conflicting", m, lambda r: (good_volume(r), labels(r, "good.nii.gz,1\ngood.nii.gz,2\n")),
         "labels.csv line 2 and ", more=("labels.csv line 3",)) for m in ("ct", "mri")],
    _c("ct-labels-repeated-same", "ct", lambda r: (good_volume(r), labels(r, "good.nii.gz,1\ngood.nii.gz,1\n")),
       "labels.csv", how="accept"),
    *[_c(f"{m}-fifo-volume", m, lambda r: (good_volume(r), fifo(r / "pipe.nii.gz")), "pipe.nii.gz",
         how="listed", more=("FIFO",)) for m in ("ct", "mri")],
    *[_c(f"{m}-dangling-link", m, lambda r: (good_volume(r), dangling(r / "gone.nii.gz")), "gone.nii.gz",
         how="listed", more=("dangling",)) for m in ("ct", "mri")],
    _c("ct-good-volume", "ct", lambda r: good_volume(r), "good.nii.gz", how="accept"),
    _c("mri-4d-volume", "mri", lambda r: nifti(r / "four.nii", np.ones((24, 24, 24, 2), np.float32)), "four.nii",
       how="accept"),
    _c("ct-good-dicom-series", "ct", lambda r: series(r / "s1", 3), "s1", how="accept"),
    _c("xray-labels-conflicting", "xray", lambda r: (xrays(r), labels(r, "x0.png,1\nx1.png,0\nx0.png,0\n",
                                                                       "path,label")),
       "labels.csv line 2 and ", more=("labels.csv line 4", "x0.png")),
    _c("xray-labels-conflicting-by-id", "xray", lambda r: (xrays(r), labels(r, "x0,1\nx0,0\n", "id,label")),
       "labels.csv line 2 and ", more=("labels.csv line 3",)),
    _c("xray-labels-repeated-same", "xray", lambda r: (xrays(r), labels(r, "x0.png,1\nx0.png,1\nx1.png,0\n",
                                                                         "path,label")), "labels.csv",
       how="accept"),
    _c("xray-fifo-png", "xray", lambda r: (xrays(r), fifo(r / "pipe.png")), "pipe.png", how="listed",
       more=("FIFO",)),
    _c("xray-dangling-link", "xray", lambda r: (xrays(r), dangling(r / "gone.png")), "gone.png", how="listed",
       more=("dangling",)),
    _c("xray-good-pngs", "xray", lambda r: xrays(r), "x0.png", how="accept"),
    _c("pathology-labels-conflicting", "pathology", lambda r: (tiles(r), labels(r, "t0.png,a\nt0.png,b\n",
                                                                                 "path,label")),
       "labels.csv line 2 and ", more=("labels.csv line 3",)),
    _c("pathology-fifo-png", "pathology", lambda r: (tiles(r), fifo(r / "pipe.png")), "pipe.png", how="listed",
       more=("FIFO",)),
    _c("pathology-dangling-link", "pathology", lambda r: (tiles(r), dangling(r / "gone.svs")), "gone.svs",
       how="listed", more=("dangling",)),
    _c("pathology-truncated-tiled-tiff", "pathology", lambda r: truncate(slide(r, "boxes.tiff"), 3000),
       "boxes.tiff"),
    _c("pathology-good-tiles", "pathology", lambda r: tiles(r), "t0.png", how="accept"),
    _c("report-labels-conflicting", "report", lambda r: (reports(r), labels(r, "r0.txt,1\nr0.txt,0\n")),
       "labels.csv line 2 and ", more=("labels.csv line 3",)),
    _c("report-fifo-txt", "report", lambda r: (reports(r), fifo(r / "pipe.txt")), "pipe.txt", how="listed",
       more=("FIFO",)),
    _c("report-dangling-link", "report", lambda r: (reports(r), dangling(r / "gone.txt")), "gone.txt",
       how="listed", more=("dangling",)),
    _c("report-good-texts", "report", lambda r: reports(r), "r0.txt", how="accept"),
    # -- fine-tuning tasks (indexing and loading every sample, no training)
    _task("seg2d-mask-values-above-num-classes", "segmentation", "xray",
          lambda r: seg2d(r, mask_values=(0, 1, 2, 7), bad="c2"), "c2.png", dims=2, num_classes=2,
          more=("label value 7",)),
    _task("seg2d-mask-255-with-other-values", "segmentation", "xray",
          lambda r: seg2d(r, mask_values=(0, 1, 255), bad="c1"), "c1.png", dims=2, num_classes=2),
    _task("seg3d-mask-values-above-num-classes", "segmentation", "ct", lambda r: seg3d(r, top=5, bad="c3"),
          "c3.nii.gz", dims=3, num_classes=3, more=("label value 5",)),
    _task("seg3d-mask-shape-mismatch", "segmentation", "ct", lambda r: seg3d(r, bad="c0", bad_shape=True),
          "c0.nii.gz", dims=3),
    _task("seg3d-negative-pixdim-image", "segmentation", "ct",
          lambda r: (seg3d(r), nifti_header(r / "images" / "c1.nii.gz", pixdim=[1, -1, 1])), "c1.nii.gz", dims=3,
          more=("pixdim",)),
    _task("seg2d-image-without-mask", "segmentation", "xray",
          lambda r: (seg2d(r), grey(r / "images" / "lonely.png", np.zeros((32, 32)))), "lonely.png", dims=2),
    _task("seg2d-fifo-image", "segmentation", "xray", lambda r: (seg2d(r), fifo(r / "images" / "pipe.png")),
          "pipe.png", how="task-listed", dims=2, more=("FIFO",)),
    _task("seg2d-binary-0-255-masks", "segmentation", "xray",
          lambda r: seg2d(r, mask_values=(0, 255), bad="c0"), "c0.png", how="task-accept", dims=2, num_classes=2),
    _task("seg3d-good", "segmentation", "ct", lambda r: seg3d(r), "c0.nii.gz", how="task-accept", dims=3),
    _task("cls2d-csv-conflicting-labels", "classification", "xray",
          lambda r: cls_csv(r, "a/a0.png,0\nb/b0.png,1\na/a0.png,1\n"), "labels.csv:2 and ",
          more=("labels.csv:4",), dims=2),
    _task("cls2d-fifo-image", "classification", "xray", lambda r: (cls2d(r), fifo(r / "a" / "pipe.png")),
          "pipe.png", how="task-listed", dims=2, more=("FIFO",)),
    _task("cls2d-dangling-link", "classification", "xray", lambda r: (cls2d(r), dangling(r / "b" / "gone.png")),
          "gone.png", how="task-listed", dims=2, more=("dangling",)),
    _task("cls3d-nan-affine", "classification", "ct",
          lambda r: (cls3d(r), nifti_header(r / "a" / "a1.nii.gz", srow_x=[np.nan, 0, 0, 0], qform_code=0,
                                            sform_code=1)), "a1.nii.gz", dims=3, more=("affine",)),
    _task("cls3d-zero-pixdim", "classification", "mri",
          lambda r: (cls3d(r), nifti_header(r / "b" / "b2.nii.gz", pixdim=[1, 0, 1])), "b2.nii.gz", dims=3),
    _task("cls2d-good-folders", "classification", "xray", lambda r: cls2d(r), "a0.png", how="task-accept", dims=2),
    _task("cls1d-good-csv", "classification", "report", lambda r: cls1d(r), "sentences.csv", how="task-accept", dims=1),
    # -- received run directories: crafted config.yaml / config.json / manifest.json
    _r("resume-config-target", edit_yaml("trainer:", "trainer:\n  _target_: os.system"), "config.yaml",
       RESUME, more=("trainer._target_",)),
    _r("resume-config-args", edit_yaml("run:", "run:\n  _args_: ['touch /tmp/medkit-pwned']"), "config.yaml",
       RESUME, more=("run._args_",)),
    _r("resume-config-interpolation", edit_yaml("device: auto", "device: ${oc.env:HOME}"), "config.yaml",
       RESUME, more=("trainer.device",)),
    _r("resume-config-python-tag", edit_yaml("device: auto", "device: !!python/object/apply:os.system [id]"),
       "config.yaml", RESUME, more=("trainer.device", "tag")),
    _r("resume-config-custom-tag", edit_yaml("seed: 0", "seed: !seed 0"), "config.yaml", RESUME,
       more=("run.seed",)),
    _r("resume-config-run-is-a-string", lambda run: (run / "config.yaml").write_text("run: x\nencoder: {}\n"),
       "config.yaml", RESUME, more=("run must be a mapping",)),
    _r("resume-config-partial", edit_yaml("optim:", "optim:\n  _partial_: true"), "config.yaml", RESUME,
       more=("optim._partial_",)),
    _r("from-configjson-target", edit_json("config.json", lambda a: a["encoder"].update(_target_="os.system")),
       "config.json", FROM, more=("encoder._target_",)),
    _r("from-configjson-convert", edit_json("config.json", lambda a: a["objective"]["mlm"].update(_convert_="all")),
       "config.json", FROM, more=("objective.mlm._convert_",)),
    _r("from-configjson-recursive", edit_json("config.json", lambda a: a.update(_recursive_=False)),
       "config.json", FROM, more=("_recursive_",)),
    _r("from-configjson-interpolation",
       edit_json("config.json", lambda a: a["encoder"].update(preset="${oc.env:HOME}")), "config.json", FROM,
       more=("encoder.preset",)),
    _r("from-configjson-uses-a-string", edit_json("config.json", lambda a: a.update(uses="report")),
       "config.json", FROM, more=("uses",)),
    _r("from-configjson-trunk-a-list", edit_json("config.json", lambda a: a.update(trunk=[1])), "config.json",
       FROM, more=("trunk",)),
    _r("from-manifest-not-a-mapping", edit_json("manifest.json", lambda m: "x"), "manifest.json", FROM),
    _r("from-manifest-stages-done-int", edit_json("manifest.json", lambda m: m.update(stages_done=1)),
       "manifest.json", FROM, more=("stages_done",)),
    _r("from-manifest-stage-names-int", edit_json("manifest.json", lambda m: m.update(stages_done=[[1]])),
       "manifest.json", FROM, more=("stages_done[0][0]",)),
    _r("from-manifest-data-a-string", edit_json("manifest.json", lambda m: m.update(data="/etc")),
       "manifest.json", FROM, more=("data",)),
    _r("from-manifest-interpolation", edit_json("manifest.json", lambda m: m.update(strategy="${oc.env:HOME}")),
       "manifest.json", FROM, more=("strategy",)),
    _r("finetune-from-config-target", edit_yaml("encoder:", "encoder:\n  _target_: builtins.exec"),
       "config.yaml", FINETUNE_FROM, more=("encoder._target_",)),
    _r("finetune-from-config-args", edit_yaml("run:", "run:\n  _args_: ['touch /tmp/medkit-pwned']"),
       "config.yaml", FINETUNE_FROM, more=("run._args_",)),
    _r("finetune-from-configjson-interpolation",
       drop("config.yaml", edit_json("config.json", lambda a: a["encoder"].update(preset="${oc.env:HOME}"))),
       "config.json", FINETUNE_FROM, more=("encoder.preset",)),
    _r("finetune-from-configjson-target",
       drop("config.yaml", edit_json("config.json", lambda a: a["tokenizer"]["text_1d"].update(_target_="x"))),
       "config.json", FINETUNE_FROM, more=("tokenizer.text_1d._target_",)),
    _r("finetune-from-config-tokenizer-a-list", edit_yaml("\ntokenizer:\n", "\ntokenizer: []\nold_tokenizer:\n"),
       "config.yaml", FINETUNE_FROM, more=("tokenizer",)),
    _r("embed-config-target", edit_yaml("\nobjective:\n", "\nobjective:\n  _target_: os.system\n"), "config.yaml",
       EMBED, more=("objective._target_",)),
    _r("report-manifest-stages-a-string", edit_json("manifest.json", lambda m: m.update(stages="x")),
       "manifest.json", REPORT_CMD, more=("stages",)),
    _r("report-manifest-current-a-string", edit_json("manifest.json", lambda m: m.update(current="x")),
       "manifest.json", REPORT_CMD, more=("current",)),
    _r("report-configjson-target", edit_json("config.json", lambda a: a["uses"]["report"].update(_target_="x")),
       "config.json", REPORT_CMD, more=("uses.report._target_",)),
    _r("pull-manifest-args", edit_json("manifest.json", lambda m: m.update(_args_=["rm -rf ~"])),
       "manifest.json", PULL, more=("_args_",)),
    _r("pull-config-python-tag", edit_yaml("seed: 0", "seed: !!python/name:os.system"), "config.yaml", PULL,
       more=("run.seed",)),
    _r("report-config-without-strategy", edit_yaml("  strategy: sequential\n", ""), "config.yaml", REPORT_CMD,
       more=("run.strategy is missing",)),
    _r("report-untouched-run", lambda run: None, "report.md", REPORT_CMD, how="received-accept"),
    _r("pull-untouched-run", lambda run: None, "pulled", PULL, how="received-accept"),
]


def _args(case: Case, data: Path, run_dir: Path) -> list[str]:
    if case.how.startswith("received"):
        return [a.replace("{run}", str(data)).replace("{tmp}", str(run_dir.parent)) for a in case.overrides]
    if case.how.startswith("inspect") or case.how in ("listed", "accept"):
        extra = ["--on-error", "raise"] if case.how in ("inspect", "accept") else []
        return ["data", "inspect", "--modality", case.modality, "--data", str(data), *extra]
    over = [f"modality.{case.modality}.on_error=skip"] if case.how == "skip" else []
    return ["run", "--modality", case.modality, "--data", str(data), "--preset", "tiny", "--max-steps", "1",
            "--run-dir", str(run_dir), *SMALL, *over, *case.overrides]


def invoke(args: list[str]) -> tuple[int, str]:
    """The CLI in-process (a subprocess per case would cost ~20 s of imports on a loaded machine)."""
    from click.testing import CliRunner

    from medkit.cli.main import cli

    result = CliRunner().invoke(cli, args, catch_exceptions=True)
    out = result.stdout + result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        out += f"\nTraceback: uncaught {type(result.exception).__name__}: {result.exception}"
    return result.exit_code, out


def run_task(case: Case, data: Path) -> tuple[int, str]:
    """A fine-tuning task indexes ``data`` and loads every sample of every split (no model, no
    training); output in the CLI's form (``error: ...`` or the skipped files)."""
    from medkit.api.errors import MedkitError
    from medkit.registry import get_host

    options = dict(case.options)
    try:
        task = get_host().create("task", case.task, modality=case.modality, **options)
        skipped: list[tuple[str, str]] = []
        for ds in task.splits(data, seed=0).values():
            for i in range(len(ds)):
                ds.load(i, seed=None)
            skipped += [s for s in getattr(ds, "skipped", []) if s not in skipped]
    except MedkitError as exc:
        return 1, "error: " + " ".join(str(exc).split())
    except Exception as exc:  # noqa: BLE001 - what the corpus exists to catch
        return 1, f"Traceback: uncaught {type(exc).__name__}: {exc}"
    return 0, "\n".join([f"skipped: {len(skipped)}", *[f"  {f}: {why}" for f, why in skipped]])


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-step tiny run over the report demo data (the received cases edit copies)."""
    run = tmp_path_factory.mktemp("received") / "run"
    code, out = invoke(["run", "--modality", "report", "--preset", "tiny", "--max-steps", "1", "--run-dir",
                        str(run), *SMALL])
    assert code == 0, out
    return run


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    data = tmp_path / "data"
    if case.how.startswith("received"):
        shutil.copytree(request.getfixturevalue("finished_run"), data, symlinks=True)
    case.build(data)
    if case.task:
        code, out = run_task(case, data)
    else:
        code, out = invoke(_args(case, data, tmp_path / "run"))
    assert "Traceback" not in out, out
    name = re.escape(case.names)
    if case.expect == "accepted":
        assert code == 0 and not re.search(r"^error:", out, re.MULTILINE), f"refused:\n{out}"
        assert not re.search(r"^skipped: [1-9]", out, re.MULTILINE), f"skipped something:\n{out}"
        if case.how == "received-accept":
            assert any(p.name == case.names for p in tmp_path.rglob("*")), out
        return
    if case.how in ("listed", "task-listed"):
        assert code == 0, out
        listed = [line for line in out.splitlines() if line.startswith("  ") and re.search(name, line)]
        assert re.search(r"^skipped: [1-9]", out, re.MULTILINE) and listed, f"{case.names} is not listed as skipped:\n{out}"
        assert all(m in listed[0] for m in case.more), f"the reason is missing: {listed[0]}"
        return
    if case.how == "skip":
        assert code == 0, out
        assert re.search(rf"warning: .*{name}", out), f"no warning naming {case.names}:\n{out}"
        assert (tmp_path / "run" / "manifest.json").is_file()
        return
    assert code != 0, f"accepted silently:\n{out}"
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out
    assert re.search(name, errors[0]), f"the error does not name {case.names}: {errors[0]}"
    assert all(m in errors[0] for m in case.more), f"the error does not say {case.more}: {errors[0]}"
    assert not re.match(r"error: [A-Z]\w+(Error|Exception): ", errors[0]), f"an unexpected exception: {errors[0]}"


def corpus_counts() -> dict[str, int]:
    """Cases per class (``error``, ``skip``, ``accepted``)."""
    counts = {"error": 0, "skip": 0, "accepted": 0}
    for c in CASES:
        counts[c.expect] += 1
    return counts


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 90 and len({c.id for c in CASES}) == len(CASES)
    assert {c.modality for c in CASES} == {"ct", "mri", "xray", "pathology", "report", "received"}
    assert {c.task for c in CASES if c.task} == {"classification", "segmentation"}
    assert {dict(c.options)["dims"] for c in CASES if c.task} == {1, 2, 3}
    counts = corpus_counts()
    assert sum(counts.values()) == len(CASES) and all(counts.values()), counts


@pytest.mark.slow
@pytest.mark.parametrize("case_id", ["ct-nan-run", "pathology-unreadable-svs", "ct-truncated-skipped"])
def test_bad_input_in_a_real_process(case_id: str, tmp_path: Path) -> None:
    """The same contract through the installed entry point (logging, warnings and exit code of a real
    process, not click's runner)."""
    import os
    import subprocess
    import sys

    case = next(c for c in CASES if c.id == case_id)
    case.build(tmp_path / "data")
    out = subprocess.run([sys.executable, "-m", "medkit.cli.main", *_args(case, tmp_path / "data", tmp_path / "run")],
                         capture_output=True, text=True, env=dict(os.environ), timeout=900)
    assert "Traceback" not in out.stderr, out.stderr
    if case.how == "skip":
        assert out.returncode == 0 and re.search(rf"warning: .*{re.escape(case.names)}", out.stderr), out.stderr
    else:
        errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
        assert out.returncode == 1 and len(errors) == 1 and case.names in errors[0], out.stderr
