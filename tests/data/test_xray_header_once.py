"""The folder path reads an X-ray DICOM's header once: indexing probes it (size, view, Modality and the
identifiers the split keys need), loading decodes it; the split keys read nothing again."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medkit.data.dicom import clear_cache
from medkit.data.groups import sample_keys
from medkit.registry import create

pydicom = pytest.importorskip("pydicom")


def test_each_dicom_is_read_once_for_its_header_and_once_for_its_pixels(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from medkit_plugin_xray.demo import write_dicom

    for k in range(3):
        write_dicom(tmp_path / f"x{k}.dcm", (np.arange(64 * 64).reshape(64, 64) * (k + 1)).astype(np.uint16))
        ds = pydicom.dcmread(tmp_path / f"x{k}.dcm")
        ds.PatientID = f"P{k % 2}"  # two images of patient P0
        ds.save_as(tmp_path / f"x{k}.dcm")
    clear_cache()
    reads: Counter[tuple[str, bool]] = Counter()
    real = pydicom.dcmread

    def counting(fp: Any, *args: Any, **kwargs: Any) -> Any:
        reads[(Path(str(fp)).name, bool(kwargs.get("stop_before_pixels", False)))] += 1
        return real(fp, *args, **kwargs)

    monkeypatch.setattr(pydicom, "dcmread", counting)
    data = create("modality", "xray").dataset(tmp_path, train=False)
    keys = sample_keys(data, tmp_path)
    for i in range(len(data)):
        data.load(i)
    names = [f"x{k}.dcm" for k in range(3)]
    assert {n: reads[(n, True)] for n in names} == dict.fromkeys(names, 1), reads  # the header: once
    assert {n: reads[(n, False)] for n in names} == dict.fromkeys(names, 1), reads  # the pixels: once
    # the split keys come from that one header read: the two images of P0 share a key
    by_id = dict(zip(data.ids, keys.keys))
    assert by_id["x0.dcm"] == by_id["x2.dcm"] == "patient:P0" and by_id["x1.dcm"] == "patient:P1"
