"""``medkit data inspect`` on a folder with bad files: the counts agree with the list, every skip names
its file, and a pydicom warning is shown once, naming its file."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from ..conftest import run_cli

pydicom = pytest.importorskip("pydicom")
nib = pytest.importorskip("nibabel")


def test_inspect_counts_agree_and_warnings_name_their_file(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    data = tmp_path / "ct"
    data.mkdir()
    rng = np.random.default_rng(0)
    nib.save(nib.Nifti1Image(rng.normal(size=(24, 24, 24)).astype(np.float32) * 100, np.eye(4)), data / "good.nii.gz")
    (data / "junk.nii.gz").write_bytes(b"not a nifti" * 50)  # refused while indexing
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.save_as(data / "short.dcm")
    raw = (data / "short.dcm").read_bytes()
    (data / "short.dcm").write_bytes(raw[:9000])  # header fine, pixels cut: fails when read
    ds.SeriesInstanceUID = "1.2.840.0x.bad_uid"  # pydicom warns "Invalid value for VR UI" on access
    ds.save_as(data / "baduid.dcm")
    out = run_cli("data", "inspect", "--modality", "ct", "--data", str(data), "--limit", "64")
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    count = re.search(r"^skipped: (\d+)(?: \((\d+) while indexing, (\d+) when their pixels were read\))?$",
                      out.stdout, re.M)
    assert count, out.stdout
    listed = [line for line in out.stdout.splitlines()[out.stdout.splitlines().index(count.group(0)) + 1:]
              if line.startswith("  ")]
    assert int(count.group(1)) == len(listed) == 2, out.stdout
    assert count.group(2) == "1" and count.group(3) == "1"
    assert any(line.startswith("  junk.nii.gz:") for line in listed)
    assert any("short.dcm" in line for line in listed)
    for match in re.finditer(r"\((\d+) skipped while indexing\)", out.stderr):
        assert match.group(1) == "1"
    uid_lines = [line for line in out.stderr.splitlines() if "Invalid value for VR UI" in line]
    assert len(uid_lines) == 1 and "baduid.dcm" in uid_lines[0], out.stderr
