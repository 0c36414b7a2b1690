"""Whether a DICOM file belongs to the modality it was given to (its Modality tag), and how a DICOM
file or series is named in messages (file, SeriesDescription, SeriesInstanceUID)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Collection, Sequence

from medkit.api.errors import DataError

#: DICOM Modality codes (PS3.3 C.7.3.1.1.1) that each built-in modality reads. X-ray: computed and
#: digital radiography, mammography, intra-oral and panoramic X-ray (``DR`` is a common retired code).
DICOM_MODALITIES: dict[str, frozenset[str]] = {
    "ct": frozenset({"CT"}),
    "mri": frozenset({"MR"}),
    "xray": frozenset({"CR", "DX", "DR", "RG", "MG", "IO", "PX"}),
    "pathology": frozenset({"SM"}),
}

#: Codes that say nothing about the image (other, secondary capture): never refused.
UNKNOWN_CODES = frozenset({"", "OT", "SC"})


def _text(ds: Any, key: str) -> str:
    return " ".join(str(ds.get(key, "") or "").split())


def describe(ds: Any) -> str:
    """``Modality CT, series "SmartScore - Gated 0.5 sec"`` for messages (the parts the header has)."""
    parts = [f"Modality {_text(ds, 'Modality')}" if _text(ds, "Modality") else ""]
    if _text(ds, "SeriesDescription"):
        parts.append(f'series "{_text(ds, "SeriesDescription")}"')
    return ", ".join(p for p in parts if p)


def series_label(folder: Path | str, files: Sequence[Path | str], ds: Any) -> str:
    """A DICOM series named for messages: its folder, SeriesDescription, first file and UID."""
    uid = _text(ds, "SeriesInstanceUID")
    desc = _text(ds, "SeriesDescription")
    bits = ([f'"{desc}"'] if desc else []) + [f"{len(files)} files from {Path(sorted(map(str, files))[0]).name}"] \
        + ([f"UID {uid}"] if uid else [])
    return f"{folder} (series {', '.join(bits)})"


def check_dicom_modality(where: Any, ds: Any, modality: str, *, accept: Collection[str] | None = None,
                         check: bool = True) -> None:
    """Refuse a DICOM file (or series, ``ds`` its first header) whose Modality tag contradicts the
    medkit modality it was given to: a CT series in an MRI folder is trained on as MRI otherwise.

    Args:
        where: the file or series, for the message.
        ds: the (header of the) dataset.
        modality: the medkit modality (``"ct"``, ``"mri"``, ``"xray"``, ...).
        accept: the codes it reads; default :data:`DICOM_MODALITIES` of ``modality`` (none: no check).
        check: ``False`` (``modality.<name>.check_modality=false``) accepts every code.

    Raises:
        DataError: naming the file, its Modality and SeriesDescription, the modality that reads it and
            the option that accepts it anyway.
    """
    codes = frozenset(accept) if accept is not None else DICOM_MODALITIES.get(modality, frozenset())
    code = _text(ds, "Modality").upper()
    if not check or not codes or code in UNKNOWN_CODES or code in codes:
        return
    owner = next((name for name, known in DICOM_MODALITIES.items() if code in known), None)
    move = f"give it to --modality {owner}" if owner else "remove it from this folder"
    raise DataError(f"{where}: its DICOM header says {describe(ds)}, but it was given to the {modality} "
                    f"modality, which reads Modality {'/'.join(sorted(codes))}; {move}, or set "
                    f"modality.{modality}.check_modality=false to read it as {modality} anyway "
                    f"(on_error=skip skips it)")
