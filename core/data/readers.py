"""File readers of the fine-tuning tasks: 2D images through Pillow, NIfTI volumes and masks through
MONAI ``LoadImage`` + ``Orientation`` (the same reader and orientation as pre-training)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medkit.api.errors import ConfigError, DataError
from medkit.data.walk import has_suffix

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
NIFTI_SUFFIXES = (".nii.gz", ".nii")
#: Orientation every volume is brought to before it reaches a model (pre-training's default).
ORIENTATION = "RAS"


def file_stem(path: Path | str) -> str:
    """File name without its image suffix (``case_01.nii.gz`` → ``case_01``)."""
    name = Path(path).name
    for s in NIFTI_SUFFIXES + IMAGE_SUFFIXES:
        if name.lower().endswith(s):
            return name[: -len(s)]
    return Path(name).stem


def image_dims(path: Path | str) -> int:
    """2 for PNG/JPEG/BMP/TIFF, 3 for NIfTI; :class:`DataError` for anything else."""
    if has_suffix(path, NIFTI_SUFFIXES):
        return 3
    if has_suffix(path, IMAGE_SUFFIXES):
        return 2
    raise DataError(f"{path}: not an image this task reads; expected {', '.join(IMAGE_SUFFIXES)} (2D) "
                    f"or {', '.join(NIFTI_SUFFIXES)} (3D)")


def read_image(path: Path) -> np.ndarray:
    """A 2D image as ``[C, H, W]`` in its stored dtype (grey → 1 channel, colour → 3)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("RGBA", "P", "CMYK", "YCbCr", "LA", "1"):
                img = img.convert("RGB" if img.mode not in ("LA", "1") else "L")
            arr = np.asarray(img)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"{path}: cannot decode the image ({exc}); expected a readable "
                        f"{'/'.join(s.lstrip('.') for s in IMAGE_SUFFIXES)} file") from exc
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim == 3:
        return np.ascontiguousarray(arr.transpose(2, 0, 1))
    raise DataError(f"{path}: image has shape {list(arr.shape)}; expected [H, W] or [H, W, C]")


def load_nifti(path: Path | str, dtype: Any = None) -> Any:
    """A NIfTI file through MONAI ``LoadImage`` (``NibabelReader``): a ``MetaTensor [C, X, Y, Z]``
    carrying its affine; a 4D file's frames are its channels; ``dtype=None`` keeps the stored type.

    The one NIfTI reader of pre-training (:func:`medkit.data.volumes.load_volume`) and fine-tuning
    (:func:`read_volume`). Voxel sizes that are not positive and finite, and non-finite or singular
    affines, are a :class:`DataError` naming the file (:func:`medkit.data.checks.check_nifti_geometry`)."""
    from monai.data import NibabelReader
    from monai.transforms import LoadImage

    from medkit.data.checks import check_nifti_file, check_nifti_geometry

    check_nifti_file(path)  # as stored: nibabel replaces a bad pixdim (abs(), 0 → 1) with a log line only
    img = LoadImage(reader=NibabelReader(), image_only=True, ensure_channel_first=True, dtype=dtype)(str(path))
    affine = getattr(img, "affine", None)
    if affine is not None:
        check_nifti_geometry(path, np.asarray(affine, dtype=float), None)
    return img


def orient(img: Any, axcodes: str = ORIENTATION) -> Any:
    """MONAI ``Orientation(axcodes)`` of a ``MetaTensor [C, *S]``: the one reorientation step."""
    from monai.transforms import Orientation

    return Orientation(axcodes=axcodes)(img)


def read_volume(path: Path, axcodes: str = ORIENTATION, *, spacing: Sequence[float] | None = None,
                nearest: bool = False) -> np.ndarray:
    """A NIfTI volume ``(x, y, z[, c])`` read by :func:`load_nifti` and reoriented by :func:`orient`
    to ``axcodes`` (exactly as pre-training reads it), as ``[C, Z, X, Y]`` (MedCoSS's (1, z, x, y)
    order) in its stored dtype. A volume stored LPS and the same volume stored RAS give the same array.

    With ``spacing`` (mm along the reoriented x, y, z), MONAI ``Spacing`` resamples it
    (trilinear, or ``nearest`` for label maps, which keep their dtype; otherwise float32)."""
    try:
        from monai.transforms import Spacing
    except ImportError as exc:
        raise ConfigError("reading NIfTI needs monai and nibabel: pip install monai nibabel") from exc
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = load_nifti(path)  # [C, X, Y, Z]
            if img.ndim != 4:
                raise DataError(f"{path}: NIfTI has shape {list(img.shape[1:])}; expected (x, y, z) or "
                                f"(x, y, z, c)")
            img = orient(img, axcodes)
            if spacing is not None:
                dtype = img.dtype
                img = Spacing(pixdim=tuple(float(v) for v in spacing), mode="nearest" if nearest else "bilinear",
                              dtype=np.float32)(img.float())
                img = img.to(dtype) if nearest else img
    except DataError:
        raise
    except Exception as exc:  # nibabel and MONAI raise many kinds
        raise DataError(f"{path}: cannot read the NIfTI file ({exc}); expected a valid .nii/.nii.gz") from exc
    return np.ascontiguousarray(img.as_tensor().numpy().transpose(0, 3, 1, 2))


def read_array(path: Path, *, spacing: Sequence[float] | None = None, nearest: bool = False) -> np.ndarray:
    """``[C, H, W]`` or ``[C, Z, X, Y]`` depending on the file type (``spacing``: volumes only)."""
    if image_dims(path) == 3:
        return read_volume(path, spacing=spacing, nearest=nearest)
    return read_image(path)


def read_mask(path: Path, *, spacing: Sequence[float] | None = None) -> np.ndarray:
    """A label map ``[*S]`` of non-negative ints. Masks holding only 0 and 255 (binary PNGs) become
    0/1; colour masks use their first channel. ``spacing`` resamples a volume (nearest)."""
    arr = read_array(path, spacing=spacing, nearest=True)[0]
    if np.issubdtype(arr.dtype, np.floating):
        rounded = np.rint(arr)
        if not np.allclose(arr, rounded, atol=1e-3):
            raise DataError(f"{path}: mask holds non-integer values; expected class indices")
        arr = rounded
    arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        raise DataError(f"{path}: mask holds negative value {int(arr.min())}; expected class indices >= 0")
    values = np.unique(arr)
    if values.size and values.max() == 255 and set(values.tolist()) <= {0, 255}:
        arr = (arr == 255).astype(np.int64)
    return arr


def header_shape(path: Path) -> tuple[int, ...]:
    """Spatial shape as :func:`read_array` will return it (``[H, W]`` or ``[Z, X, Y]`` after
    reorientation), from the file header only."""
    try:
        if has_suffix(path, NIFTI_SUFFIXES):
            import nibabel as nib

            img: Any = nib.load(str(path))  # its class depends on the file
            ornt = nib.orientations.io_orientation(img.affine)
            target = nib.orientations.axcodes2ornt(tuple(ORIENTATION))
            order = nib.orientations.ornt_transform(ornt, target)[:, 0].astype(int)
            shape = [0, 0, 0]
            for src, dst in enumerate(order):
                shape[int(dst)] = int(img.shape[src])
            return (shape[2], shape[0], shape[1])
        from PIL import Image

        with Image.open(path) as img:
            return (int(img.size[1]), int(img.size[0]))
    except (OSError, ValueError, IndexError) as exc:
        raise DataError(f"{path}: cannot read the header ({exc})") from exc
