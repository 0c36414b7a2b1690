"""Read-time data checks shared by the readers: degenerate sizes and non-finite values, naming the file."""

from __future__ import annotations

from typing import Any

import numpy as np

from medkit.api.errors import DataError

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
