"""Deterministic synthetic demo data: chest-X-ray-like grey PNGs and DICOMs, with labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medkit.api import demo_is_current, mark_demo, save_image, write_csv

DEMO_VERSION = 1
LABELS = "labels.csv"
CLASSES = ("normal", "opacity")
N_PNG = 40
#: (file name, ViewPosition, photometric interpretation, class) of the demo DICOMs.
DICOMS = (
    ("frontal_pa.dcm", "PA", "MONOCHROME2", "normal"),
    ("frontal_ap_mono1.dcm", "AP", "MONOCHROME1", "opacity"),
    ("lateral_ll.dcm", "LL", "MONOCHROME2", "normal"),  # dropped by the frontal-view filter
)


def _ellipse(xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, rx: float, ry: float,
             edge: float = 0.08) -> np.ndarray:
    """Soft mask (1 inside, 0 outside) of an axis-aligned ellipse on the [-1, 1]² grid."""
    r = np.sqrt(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2)
    return np.clip((1.0 - r) / edge + 0.5, 0.0, 1.0)


def chest_image(seed: int, opacity: bool, size: int = 256) -> np.ndarray:
    """A chest-radiograph-like ``[size, size]`` float image in [0, 1] (bone/tissue bright, lungs
    dark); with ``opacity`` a bright blob sits in one lung."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    img = 0.06 + 0.5 * _ellipse(xx, yy, 0.0, 0.05, 0.86 + rng.uniform(-0.04, 0.04), 0.97)
    for side in (-1, 1):
        lung = _ellipse(xx, yy, side * (0.38 + rng.uniform(-0.03, 0.03)), -0.05 + rng.uniform(-0.03, 0.03),
                        0.26 + rng.uniform(-0.02, 0.02), 0.56 + rng.uniform(-0.04, 0.04), edge=0.15)
        img = img - 0.36 * lung
        ribs = (np.sin(yy * 26.0 + 4.0 * (xx - side * 0.38) ** 2 + rng.uniform(0, 6.28)) > 0.75)
        img = img + 0.07 * ribs * lung
    img = img + 0.22 * np.clip(1.0 - np.abs(xx) / 0.09, 0.0, 1.0) * (yy > -0.95)  # spine/mediastinum
    img = img + 0.18 * _ellipse(xx, yy, 0.12, 0.28, 0.26, 0.22, edge=0.2)  # heart
    if opacity:
        cx, cy = rng.choice([-1, 1]) * rng.uniform(0.3, 0.45), rng.uniform(-0.35, 0.25)
        sigma = rng.uniform(0.08, 0.13)
        img = img + 0.35 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma ** 2))
    img = img + rng.normal(0.0, 0.025, img.shape)
    return np.clip(img, 0.0, 1.0)


def write_dicom(path: Path, pixels: np.ndarray, *, view: str | None = "PA",
                photometric: str = "MONOCHROME2", bits_stored: int = 12, slope: float | None = None,
                intercept: float | None = None, window: tuple[float, float] | None = None,
                frames: int = 1, uid_seed: str | None = None) -> Path:
    """Write a DX DICOM of uint16 ``pixels`` (``[H, W]``, or ``[F, H, W]`` with ``frames`` > 1)
    with deterministic UIDs. Used by the demo data and by the tests."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    sop_class = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    entropy = [uid_seed or path.name]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=entropy + ["sop"])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=entropy + ["study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=entropy + ["series"])
    ds.Modality = "DX"
    ds.PatientID = "MEDKIT-DEMO"
    if view is not None:
        ds.ViewPosition = view
    arr = np.asarray(pixels, dtype=np.uint16)
    ds.Rows, ds.Columns = int(arr.shape[-2]), int(arr.shape[-1])
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 0
    if slope is not None or intercept is not None:
        ds.RescaleSlope = slope if slope is not None else 1
        ds.RescaleIntercept = intercept if intercept is not None else 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = arr.astype("<u2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_demo(root: Path) -> Path:
    """Write the demo data under ``root`` once (a marker file records completion) and return it.

    Layout: ``images/cxr_000.png``… (40 grey 256² PNGs, classes alternate), ``dicom/*.dcm``
    (PA with a window, AP in MONOCHROME1 without one, one lateral ``LL``), ``labels.csv``.
    """
    root = Path(root)
    if demo_is_current(root, DEMO_VERSION):
        return root
    rows: list[tuple[str, str]] = []
    for i in range(N_PNG):
        cls = CLASSES[i % 2]
        grey = chest_image(1000 + i, opacity=cls == "opacity")
        rel = f"images/cxr_{i:03d}.png"
        save_image(root / rel, Image.fromarray(np.round(grey * 255).astype(np.uint8)))
        rows.append((rel, cls))
    for k, (name, view, photometric, cls) in enumerate(DICOMS):
        grey = chest_image(2000 + k, opacity=cls == "opacity")
        if view == "LL":  # a lateral looks different: one wide body, no lung pair
            grey = np.clip(grey.mean(axis=1, keepdims=True) * 0.5 + grey * 0.5, 0, 1)
        stored = np.round(grey * 4095).astype(np.uint16)
        kwargs: dict[str, Any] = {"view": view, "photometric": photometric}
        if photometric == "MONOCHROME1":
            stored = 4095 - stored  # stored inverted; the reader flips it back
        else:
            kwargs.update(slope=1.0, intercept=-1024.0, window=(1024.0, 4096.0))
        write_dicom(root / "dicom" / name, stored, uid_seed=f"medkit-demo-xray-{name}", **kwargs)
        rows.append((f"dicom/{name}", cls))
    write_csv(root / LABELS, ["path", "label"], rows)
    return mark_demo(root, "xray", DEMO_VERSION)
