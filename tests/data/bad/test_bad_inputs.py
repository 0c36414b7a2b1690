"""The bad-input corpus: every case goes through the CLI and must fail in one line naming the file
(or, where skipping is documented, warn naming the file and finish). Add a row to ``CASES`` to grow it.

Each case builds its folder in ``tmp_path`` (nothing is stored: the generators are the corpus) and
names the file the message must mention. ``how`` is ``inspect`` (``medkit data inspect --on-error
raise``), ``inspect-skip`` (its default ``--on-error skip``: still non-zero for NaN/Inf), ``run``
(a 1-step tiny run) or ``skip`` (a 1-step tiny run with ``modality.<m>.on_error=skip`` that must finish
and warn about the file).
"""

from __future__ import annotations

import gzip
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


def series(folder: Path, n: int, gaps: list[float] | None = None, same: bool = False) -> Path:
    from pydicom.data import get_testdata_file

    src = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    folder.mkdir(parents=True, exist_ok=True)
    uid = pydicom.uid.generate_uid()
    z = np.cumsum([0.0] + (gaps if gaps is not None else [2.0] * (n - 1)))
    for k in range(n):
        ds = src.copy()
        ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.InstanceNumber = uid, pydicom.uid.generate_uid(), k + 1
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

    arr = np.full((32, 32), 0.5, np.float32)
    arr[3, 3] = value
    Image.fromarray(arr, mode="F").save(path)
    return path


def xray_dicom(path: Path, **kw) -> Path:
    from medkit_plugin_xray.demo import write_dicom

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.arange(32 * 32 * kw.get("frames", 1), dtype=np.uint16).reshape(-1, 32, 32) * 3
    return write_dicom(path, pixels if kw.get("frames", 1) > 1 else pixels[0], **kw)


def text(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


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


def _c(id, modality, build, names, how="inspect", overrides=(), xfail: str | None = None) -> Case:
    marks = (pytest.mark.xfail(reason=xfail, strict=False),) if xfail else ()
    return Case(id, modality, build, names, how, tuple(overrides), marks)


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
    *[_c(f"{m}-uneven-dicom-series", m, lambda r: series(r / "s1", 5, gaps=[2, 2, 6, 2]), "s1") for m in ("ct", "mri")],
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
]


def _args(case: Case, data: Path, run_dir: Path) -> list[str]:
    if case.how.startswith("inspect"):
        extra = ["--on-error", "raise"] if case.how == "inspect" else []
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


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_bad_input(case: Case, tmp_path: Path) -> None:
    data = tmp_path / "data"
    case.build(data)
    code, out = invoke(_args(case, data, tmp_path / "run"))
    assert "Traceback" not in out, out
    name = re.escape(case.names)
    if case.how == "skip":
        assert code == 0, out
        assert re.search(rf"warning: .*{name}", out), f"no warning naming {case.names}:\n{out}"
        assert (tmp_path / "run" / "manifest.json").is_file()
        return
    assert code != 0, f"accepted silently:\n{out}"
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out
    assert re.search(name, errors[0]), f"the error does not name {case.names}: {errors[0]}"
    assert not re.match(r"error: [A-Z]\w+(Error|Exception): ", errors[0]), f"an unexpected exception: {errors[0]}"


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)
    assert {c.modality for c in CASES} == {"ct", "mri", "xray", "pathology", "report"}


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
