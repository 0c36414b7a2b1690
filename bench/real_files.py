"""What medkit reads from the real files that ship in installed packages, and what it refuses and why.

For each family of real files found on this machine — pydicom's CR/CT/MR test files (JPEG 2000,
JPEG-LS, RLE, big-endian, DICOMDIR series), the JPEG-Lossless and enhanced multi-frame CT files
vendored in ``tests/data/fixtures``, nibabel's test NIfTI files, nilearn's MNI152 template,
openslide-python's test slides (vendored in the pathology plugin's tests) and scikit-image's samples —
each file (or series folder) is copied alone into a scratch folder and given to the modality that
should read it, through medkit's own modalities (``medkit.registry.create``), readers and split keys
(``medkit.data.groups.sample_keys``): nothing is re-implemented here. A family whose package is not
installed is listed as such.

    python bench/real_files.py                      # table on stdout, JSON in bench/results/real_files.json
    python bench/real_files.py --out /tmp/real.json
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "data" / "fixtures"
SLIDES = ROOT / "plugins" / "medkit-plugin-pathology" / "tests" / "fixtures" / "wsi"


def _pydicom(name: str) -> Path | None:
    try:
        from pydicom.data import get_testdata_file
    except ImportError:
        return None
    found = get_testdata_file(name, download=False)
    return Path(found) if found else None


def cases() -> tuple[list[tuple[str, Path, str, dict[str, Any]]], list[str]]:
    """``(family, file or series folder, modality, options)`` for every real file found, and notes
    on the families not available here."""
    out: list[tuple[str, Path, str, dict[str, Any]]] = []
    notes: list[str] = []
    dicom = [
        ("pydicom CR (DICOMDIR set)", "dicomdirtests/77654033/CR1/6154", "xray", {}),
        ("pydicom CR (DICOMDIR set)", "dicomdirtests/77654033/CR1/6154", "xray", {"frontal_only": False}),
        ("pydicom CR (DICOMDIR set)", "dicomdirtests/77654033/CR1/6154", "xray",
         {"frontal_only": False, "max_upsample": None}),
        ("pydicom CR, JPEG 2000", "RG1_J2KR.dcm", "xray", {}),
        ("pydicom CR, JPEG 2000", "RG1_UNCR.dcm", "xray", {}),
        ("pydicom CT", "CT_small.dcm", "ct", {}),
        ("pydicom CT", "CT_small.dcm", "mri", {}),
        ("pydicom CT", "CT_small.dcm", "xray", {}),
        ("pydicom CT, JPEG 2000", "693_J2KI.dcm", "ct", {}),
        ("pydicom CT, JPEG 2000", "J2K_pixelrep_mismatch.dcm", "ct", {}),
        ("pydicom CT, enhanced multi-frame", "eCT_Supplemental.dcm", "ct", {}),
        ("pydicom MR", "MR_small.dcm", "mri", {}),
        ("pydicom MR, JPEG 2000 lossless", "MR_small_jp2klossless.dcm", "mri", {}),
        ("pydicom MR, JPEG-LS lossless", "MR_small_jpeg_ls_lossless.dcm", "mri", {}),
        ("pydicom MR, RLE", "MR_small_RLE.dcm", "mri", {}),
        ("pydicom MR, big endian", "MR_small_bigendian.dcm", "mri", {}),
        ("pydicom MR, truncated", "MR_truncated.dcm", "mri", {}),
        ("pydicom MR, overlay", "examples_overlay.dcm", "mri", {}),
        ("pydicom JPEG Lossless", "JPEG-LL.dcm", "xray", {}),
    ]
    for family, name, modality, opts in dicom:
        path = _pydicom(name)
        if path is None:
            notes.append(f"{family}: {name} is not available offline (pydicom-data not downloaded)")
            continue
        out.append((family, path, modality, opts))
    for family, series, modality in [("pydicom CT series (DICOMDIR set)", "dicomdirtests/98892001/CT5N/2062", "ct"),
                                     ("pydicom MR series (DICOMDIR set)", "dicomdirtests/98892003/MR700/4467", "mri")]:
        path = _pydicom(series)
        if path is not None:
            out.append((family, path.parent, modality, {}))
            out.append((family, path.parent, modality, {"max_upsample": None}))
    out += [("JPEG Lossless (pydicom-data, vendored)", FIXTURES / "JPEG-LL.dcm", "xray", {}),
            ("JPEG Lossless (pydicom-data, vendored)", FIXTURES / "JPEG-LL.dcm", "ct", {"check_modality": False}),
            ("enhanced CT (pydicom-data, reduced, vendored)", FIXTURES / "eCT_Supplemental_small.dcm", "ct", {})]
    try:
        import nibabel

        for p in sorted(glob.glob(str(Path(nibabel.__file__).parent / "tests" / "data" / "*.nii*")))[:12]:
            out.append(("nibabel test data", Path(p), "mri", {}))
    except ImportError:
        notes.append("nibabel is not installed")
    try:
        from nilearn import datasets as nilearn_datasets

        out.append(("nilearn MNI152", Path(nilearn_datasets.load_mni152_template().get_filename()), "mri", {}))
    except Exception as exc:  # noqa: BLE001 - not installed, or its template not bundled
        notes.append(f"nilearn MNI152: not available ({type(exc).__name__}: {exc})")
    for p in sorted(SLIDES.glob("*")) if SLIDES.is_dir() else []:
        out.append(("openslide-python test slides (vendored)", p, "pathology", {}))
    if (SLIDES / "small.svs").is_file():  # 16×16 px at 0.499 µm/px: tiles of 8 px
        out.append(("openslide-python test slides (vendored)", SLIDES / "small.svs", "pathology",
                    {"tile_size": 8, "min_tissue": 0.0}))
    if (SLIDES / "boxes.tiff").is_file():  # 300×250 px at 352.8 µm/px: tiles at its own resolution
        out.append(("openslide-python test slides (vendored)", SLIDES / "boxes.tiff", "pathology",
                    {"tile_mpp": 352.8, "tile_size": 64, "min_tissue": 0.0}))
    try:
        import skimage.data

        for p in sorted(glob.glob(str(Path(skimage.data.__file__).parent / "*.png")))[:8]:  # bundled samples
            out.append(("scikit-image samples", Path(p), "xray", {}))
    except ImportError:
        notes.append("scikit-image is not installed (its sample images are not listed)")
    return out, notes


def _short(text: str, scratch: Path, n: int = 260) -> str:
    text = " ".join(str(text).split()).replace(str(scratch) + "/", "")
    return text if len(text) <= n else text[: n - 1] + "…"


def read_case(family: str, src: Path, modality: str, opts: dict[str, Any], scratch: Path) -> list[dict[str, Any]]:
    """Give ``src`` alone to ``modality`` (``on_error=skip``) and describe what it read or refused."""
    import torch

    from medkit.api.errors import MedkitError
    from medkit.data.groups import sample_keys
    from medkit.registry import create

    folder = scratch / modality
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    if src.is_dir():
        shutil.copytree(src, folder / src.name)
    else:
        shutil.copy(src, folder / src.name)
    row = {"family": family, "file": src.name, "modality": modality,
           "options": ",".join(f"{k}={v}" for k, v in opts.items()) or "-"}
    try:
        ds = create("modality", modality, on_error="skip", **opts).dataset(folder, train=False)
    except MedkitError as exc:
        reason = str(exc)
        try:  # nothing was left: the file's own reason is what on_error=raise says
            create("modality", modality, on_error="raise", **opts).dataset(folder, train=False)
        except MedkitError as first:
            reason = str(first)
        return [{**row, "outcome": "refused", "reason": _short(reason, scratch)}]
    rows = [{**row, "file": f, "outcome": "refused", "reason": _short(why, scratch)} for f, why in ds.skipped]
    if len(ds) == 0:
        return rows
    try:
        keys = sample_keys(ds, folder)
        key = keys.keys[0]
    except MedkitError as exc:
        key = f"error: {exc}"
    read = {**row, "outcome": "read", "samples": len(ds), "split_key": key}
    volumes = getattr(ds, "volumes", None)
    try:
        if volumes:
            from medkit.data.volumes import load_volume

            vol = volumes[0]
            raw = load_volume(vol, ds.orientation)
            read.update(shape="×".join(str(s) for s in (vol.shape or ())), spacing_mm=round(vol.spacing, 4),
                        kind=vol.kind, value_range=[round(float(raw.min()), 3), round(float(raw.max()), 3)])
        else:
            raw = ds.raw(0)["array"]
            read.update(shape="×".join(str(s) for s in raw.shape), spacing_mm=None, kind="2d",
                        value_range=[round(float(raw.min()), 3), round(float(raw.max()), 3)])
        x = ds.load(0, seed=None)["input"]
        read.update(sample_shape=list(x.shape), sample_range=[round(float(torch.min(x)), 3),
                                                              round(float(torch.max(x)), 3)])
    except MedkitError as exc:
        return rows + [{**row, "outcome": "refused", "reason": _short(f"when read: {exc}", scratch)}]
    return rows + [read]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "real_files.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    warnings.simplefilter("ignore")
    found, notes = cases()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for family, src, modality, opts in found:
            rows.extend(read_case(family, src, modality, opts, Path(tmp)))
    head = ("family", "file", "modality", "options", "outcome", "shape", "spacing_mm", "value_range",
            "sample_shape", "split_key", "reason")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(str(r.get(h, "")) if r.get(h) is not None else "" for h in head) + " |")
    for note in notes:
        print(f"- {note}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "notes": notes}, indent=2), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
