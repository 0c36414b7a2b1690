"""Fine-tuning images upsampled far beyond their own resolution: kept with a warning, skipped only on request.

Pre-training skips a file that its modality would stretch more than ``max_upsample`` times
(:mod:`medkit.data.upsample`): unlabelled data are plentiful and a blurred thumbnail teaches
nothing. A fine-tuning set is labelled and usually small, so dropping a labelled image silently
is worse than training on it: the task readers keep every such file and log one warning naming
them, their factor and ``task.max_upsample``; a user who sets ``task.max_upsample`` gets the
pre-training behaviour (the files are skipped with a reason, whatever ``on_error`` says).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from medkit.api.errors import DataError
from medkit.data.readers import NIFTI_SUFFIXES, ORIENTATION, has_suffix, header_shape
from medkit.data.upsample import DEFAULT_MAX_UPSAMPLE_2D, DEFAULT_MAX_UPSAMPLE_3D, upsample_factor
from medkit.data.walk import record_skip

log = logging.getLogger(__name__)

T = TypeVar("T")
#: Files named in the warning about kept upsampled files (the rest are counted).
NAMED = 5


def native_grid(path: Path) -> tuple[tuple[int, ...], tuple[float, ...] | None]:
    """The spatial shape of ``path`` as the task readers return it (``[H, W]``, or ``[Z, X, Y]``
    after reorientation to RAS) and, for a NIfTI volume, its voxel size in mm in the same order,
    from the header only."""
    shape = tuple(int(s) for s in header_shape(Path(path)))
    if not has_suffix(Path(path), NIFTI_SUFFIXES):
        return shape, None
    import nibabel as nib

    img: Any = nib.load(str(path))
    ornt = nib.orientations.io_orientation(img.affine)
    order = nib.orientations.ornt_transform(ornt, nib.orientations.axcodes2ornt(tuple(ORIENTATION)))[:, 0].astype(int)
    zooms = [1.0, 1.0, 1.0]
    for src, dst in enumerate(order):
        zooms[int(dst)] = float(img.header.get_zooms()[src])
    return shape, (zooms[2], zooms[0], zooms[1])


def finetune_upsampling(path: Path, *, input_size: Sequence[int] | None,
                        spacing: Sequence[float] | None) -> tuple[float, str]:
    """How many times the task readers stretch ``path`` on its worst axis (resampled to ``spacing``
    mm along the RAS x, y, z, then resized to ``input_size``), and its own and read sizes in words."""
    shape, zooms = native_grid(path)
    x = "×".join
    target = [float(s) for s in shape]
    words = f"its {x(str(s) for s in shape)} {'voxels' if zooms else 'pixels'}"
    if spacing is not None and zooms is not None:  # spacing (x, y, z) → the [Z, X, Y] order of shape
        want = (float(spacing[2]), float(spacing[0]), float(spacing[1]))
        target = [n * z / w for n, z, w in zip(target, zooms, want)]
        words += f" of {x(f'{z:g}' for z in zooms)} mm resampled to {x(f'{w:g}' for w in want)} mm (task.spacing)"
    if input_size is not None and len(input_size) == len(shape):
        target = [float(s) for s in input_size]
        then = ", then" if spacing is not None and zooms else ""
        words += f"{then} resized to {x(str(int(s)) for s in input_size)} (task.input_size)"
    return upsample_factor(shape, target), words


def screen_upsampled(items: Sequence[T], path_of: Callable[[T], Path], *, owner: str, dims: int,
                     input_size: Sequence[int] | None, spacing: Sequence[float] | None, limit: float | None,
                     skipped: list[tuple[str, str]]) -> list[T]:
    """``items`` without those whose image would be stretched more than ``limit`` times (each
    recorded in ``skipped`` with the reason), or, with ``limit=None``, all of them, after one
    warning naming those stretched more than the pre-training default (4× in 2D, 10× in 3D).

    Nothing is read when the readers resize nothing (no ``input_size``, no ``spacing``) or the
    data are text; otherwise each file's header only.
    """
    if dims not in (2, 3) or (input_size is None and spacing is None) or not items:
        return list(items)
    bar = limit if limit is not None else (DEFAULT_MAX_UPSAMPLE_2D if dims == 2 else DEFAULT_MAX_UPSAMPLE_3D)
    kept: list[T] = []
    over: list[tuple[str, float, str]] = []
    for item in items:
        path = path_of(item)
        try:
            factor, words = finetune_upsampling(path, input_size=input_size, spacing=spacing)
        except (DataError, OSError, ValueError):  # unreadable: loading it says so, under task.on_error
            kept.append(item)
            continue
        if factor > bar:
            over.append((str(path), factor, words))
            if limit is not None:
                record_skip(owner, skipped, str(path), f"{words}: upsampled {factor:.1f}×, beyond "
                            f"task.max_upsample={limit:g}; raise it or set it to null to keep the file")
                continue
        kept.append(item)
    if over and limit is None:
        over.sort(key=lambda o: -o[1])
        named = ", ".join(f"{p} ({f:.1f}×)" for p, f, _ in over[:NAMED])
        more = f" and {len(over) - NAMED} more" if len(over) > NAMED else ""
        log.warning("%s: %d of %d labelled files are upsampled more than %g× (pre-training would skip them): "
                    "%s%s; they are kept for fine-tuning; set task.max_upsample=%g to skip them, or use a "
                    "smaller task.input_size", owner, len(over), len(items), bar, named, more, bar)
    return kept
