"""Read-time data checks shared by the readers: degenerate sizes, non-finite values, voxel geometry and
library warnings, naming the file."""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

from medkit.api.errors import DataError

log = logging.getLogger(__name__)

#: Smallest edge (pixels) of the two largest axes of a volume or image. Below it there is no
#: structure left to learn (a 1×1 image or a 1×1×1 volume resized to 224² is one flat colour). A
#: quarter of the reference's 16-pixel patch: the tokenizer's patch is not known at indexing time,
#: and small synthetic volumes (4×4×16) are legitimate test data.
MIN_EDGE = 4


def check_edges(where: Any, shape: tuple[int, ...], what: str = "volume") -> None:
    """A :class:`DataError` naming ``where`` when the second-largest axis is under :data:`MIN_EDGE`
    (a 3D volume needs two axes of at least that; a 2D image both sides)."""
    if len(shape) >= 2 and sorted(shape, reverse=True)[1] < MIN_EDGE:
        raise DataError(f"{where}: the {what} is {'×'.join(str(s) for s in shape)} pixels, below the "
                        f"{MIN_EDGE}-pixel minimum on its two largest axes; it would only be upscaled — remove it "
                        f"or set on_error=skip")


def nonfinite_counts(x: Any) -> tuple[int, int]:
    """``(NaN count, ±Inf count)`` of an array or tensor."""
    arr = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)
    if arr.dtype.kind not in "fc":
        return 0, 0
    return int(np.isnan(arr).sum()), int(np.isinf(arr).sum())


def check_finite(where: Any, x: Any, what: str = "voxels") -> None:
    """A :class:`DataError` naming ``where`` with the NaN/Inf counts when ``x`` is not all finite."""
    nan, inf = nonfinite_counts(x)
    if nan or inf:
        raise DataError(f"{where}: non-finite {what}: {nan} NaN and {inf} Inf of {int(np.asarray(x.shape).prod())}; "
                        f"they would make the loss NaN — fix or remove the file, or set on_error=skip")


def check_nifti_file(path: Any) -> None:
    """:func:`check_nifti_geometry` on a NIfTI file's header as stored (nibabel repairs a bad
    ``pixdim`` when it loads a file, and MONAI's reader may build its own affine): header only."""
    pixdim, affine = raw_pixdim(path, with_affine=True)
    if pixdim is not None:
        check_nifti_geometry(path, affine, pixdim)


def raw_pixdim(path: Any, with_affine: bool = False) -> Any:
    """``pixdim[1:4]`` of a NIfTI header as stored (``None`` for a file nibabel reads otherwise);
    with ``with_affine``, ``(pixdim, the header's best affine)``."""
    import nibabel as nib
    from nibabel.openers import ImageOpener

    with ImageOpener(str(path)) as fh:
        head = fh.read(4)
        fh.seek(0)
        size = int.from_bytes(head, "little") if len(head) == 4 else 0
        if size not in (348, 540) and int.from_bytes(head, "big") not in (348, 540):
            return None
        cls = nib.Nifti2Header if 540 in (size, int.from_bytes(head, "big")) else nib.Nifti1Header
        header = cls.from_fileobj(fh, check=False)
    spatial = min(max(int(header["dim"][0]), 1), 3)
    pixdim = np.asarray(header["pixdim"][1:1 + spatial], dtype=float)
    if not with_affine:
        return pixdim
    if not (np.isfinite(pixdim).all() and (pixdim > 0).all()):
        return pixdim, np.eye(4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        affine = np.asarray(header.get_best_affine(), dtype=float)
    return pixdim, affine


#: Warning texts already shown, per file, in this process (indexing and reading see the same ones).
_SHOWN: dict[str, set[str]] = {}


def attribute_warnings(where: Any, caught: list[warnings.WarningMessage]) -> None:
    """Re-emit a reader's warnings (nibabel, pydicom) once each through medkit's log, naming the file
    (the libraries' own messages name none); other libraries' warnings (MONAI, torch deprecations)
    stay at debug level."""
    shown = _SHOWN.setdefault(str(where), set())
    if len(_SHOWN) > 10_000:  # a bound for long processes; only repeats would be shown again
        _SHOWN.clear()
        shown = _SHOWN.setdefault(str(where), set())
    for w in caught:
        text = " ".join(str(w.message).split())
        if any(old in text for old in shown):  # shown for this file already (pydicom may prefix it)
            continue
        shown.add(text)
        about_the_file = any(lib in str(w.filename) for lib in ("nibabel", "pydicom")) \
            and not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning, FutureWarning))
        log.log(logging.WARNING if about_the_file else logging.DEBUG, "%s: %s", where, text)


def check_nifti_geometry(path: Any, affine: np.ndarray, pixdim: np.ndarray | None) -> None:
    """Refuse voxel sizes (``pixdim``) that are not positive and finite, and an affine that is not
    finite or maps an axis to nothing: the spacing every modality resamples to would be invented."""
    if pixdim is not None and not (np.isfinite(pixdim).all() and (pixdim > 0).all()):
        raise DataError(f"{path}: voxel size (pixdim) {[float(v) for v in pixdim]} is not positive and finite; "
                        f"fix the header's pixdim (e.g. nibabel: img.header.set_zooms) or remove the file")
    if not np.isfinite(affine).all():
        raise DataError(f"{path}: its affine holds NaN or Inf, so the voxel positions are unknown; fix the "
                        f"header's qform/sform or remove the file")
    norms = np.linalg.norm(affine[:3, :3], axis=0)
    if not (norms > 1e-6).all() or abs(float(np.linalg.det(affine[:3, :3]))) < 1e-12:
        raise DataError(f"{path}: its affine {affine[:3, :3].round(4).tolist()} is singular (an axis of zero "
                        f"length); fix the header's qform/sform or remove the file")


class _Swallow(logging.Filter):
    """Keeps the records a library logs while :func:`warnings_of` runs, so they are shown with the file."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            self.texts.append(record.getMessage())
            return False
        return True


@contextmanager
def warnings_of(where: Any) -> Iterator[None]:
    """Around one file's read: pydicom's and nibabel's warnings (Python warnings, and pydicom's own
    log records, which repeat them without a file name) are held back, then logged once each through
    :func:`attribute_warnings`, naming ``where``, even when the read fails."""
    held = _Swallow()
    lib = logging.getLogger("pydicom")
    lib.addFilter(held)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield
            finally:
                lib.removeFilter(held)
                known = {" ".join(str(w.message).split()) for w in caught}
                for text in held.texts:  # a record without its Python warning (pydicom's plain log calls)
                    if " ".join(text.split()) not in known:
                        caught.append(warnings.WarningMessage(text, UserWarning, lib.name + "/pydicom", 0))
                attribute_warnings(where, caught)
    finally:
        lib.removeFilter(held)


def convert_all(ds: Any) -> Any:
    """Convert every element of a pydicom dataset now (pydicom converts raw values on first access
    and warns then, e.g. "Invalid value for VR UI"): inside :func:`warnings_of`, those warnings name
    the file instead of surfacing later without one. Returns ``ds``."""
    ds.walk(lambda _ds, _elem: None)
    return ds
