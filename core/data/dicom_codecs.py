"""Which pixel-data decoder a DICOM file's transfer syntax needs, and a message naming it when missing."""

from __future__ import annotations

from typing import Any

from medkit.api.errors import DataError

#: The extra that brings the decoders of the common compressed transfer syntaxes.
DICOM_EXTRA = "pip install 'medkit[dicom]'"

# Transfer syntax UID prefix → the PyPI packages (pylibjpeg and its plugin) that decode it. pydicom
# lists the handlers it tried but not which package to install for this syntax; this table says it.
_PACKAGES = (
    ("1.2.840.10008.1.2.4.8", "pylibjpeg pylibjpeg-libjpeg"),  # JPEG-LS (.80, .81)
    ("1.2.840.10008.1.2.4.9", "pylibjpeg pylibjpeg-openjpeg"),  # JPEG 2000 (.90 - .93)
    ("1.2.840.10008.1.2.4.2", "pylibjpeg pylibjpeg-openjpeg"),  # HTJ2K (.201 - .203)
    ("1.2.840.10008.1.2.4.", "pylibjpeg pylibjpeg-libjpeg"),  # JPEG baseline, extended, lossless
    ("1.2.840.10008.1.2.5", "pylibjpeg pylibjpeg-rle"),  # RLE Lossless
)


def transfer_syntax(ds: Any) -> Any:
    """The dataset's Transfer Syntax UID (a pydicom ``UID``), or ``None`` when it has no file meta."""
    meta = getattr(ds, "file_meta", None)
    return None if meta is None else meta.get("TransferSyntaxUID")


def decoder_packages(tsuid: str) -> str:
    """The pip packages that decode ``tsuid`` (pylibjpeg and its plugin), or ``python-gdcm``."""
    return next((pkgs for prefix, pkgs in _PACKAGES if str(tsuid).startswith(prefix)), "python-gdcm")


def missing_decoder(ds: Any) -> str | None:
    """Why no installed decoder can read the dataset's pixel data (naming the packages to install),
    or ``None`` when one can (or the syntax is not compressed, or the header does not say)."""
    from pydicom.pixels import get_decoder

    tsuid = transfer_syntax(ds)
    if tsuid is None or not getattr(tsuid, "is_compressed", False):
        return None
    try:
        decoder = get_decoder(tsuid)
    except NotImplementedError:
        return f"pydicom has no decoder for its transfer syntax {tsuid.name} ({tsuid}); re-export it uncompressed"
    if decoder.is_available:
        return None
    return (f"its pixel data is compressed as {tsuid.name} ({tsuid}) and no installed decoder reads it; "
            f"install one: {DICOM_EXTRA} (brings {decoder_packages(tsuid)}), or pip install python-gdcm")


def missing_decoder_of(path: Any) -> str | None:
    """:func:`missing_decoder` of the file at ``path`` (header only); ``None`` when unreadable."""
    import pydicom

    try:
        return missing_decoder(pydicom.dcmread(str(path), stop_before_pixels=True))
    except Exception:  # noqa: BLE001 - an unreadable header: the caller's own message stands
        return None


def check_decodable(where: Any, ds: Any, fix: str = "or set on_error=skip to skip such files") -> None:
    """A :class:`DataError` naming ``where`` and the decoder to install when none can read ``ds``'s pixels."""
    why = missing_decoder(ds)
    if why is not None:
        raise DataError(f"{where}: {why}; {fix}")


def decode_error(where: Any, ds: Any, exc: BaseException, fix: str) -> DataError:
    """Translate pydicom's failure to decode pixel data into a :class:`DataError`: a missing decoder
    names the package to install; anything else (truncated data, bad tags) keeps pydicom's reason."""
    why = missing_decoder(ds) if ds is not None else None
    if why is not None:
        return DataError(f"{where}: {why}; {fix}")
    tsuid = transfer_syntax(ds) if ds is not None else None
    syntax = f" ({tsuid.name})" if tsuid is not None else ""
    return DataError(f"{where}: cannot decode its DICOM pixel data{syntax} ({type(exc).__name__}: {exc}); "
                     f"the file may be truncated or damaged — {fix}")
