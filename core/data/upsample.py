"""Files upsampled far beyond their own resolution: the factor, the ``max_upsample`` option and the skip.

Training resizes every image to the modality's ``input_size`` (X-ray: ``input_size``², aspect ratio
not kept) and every volume to its window size in-plane and to the target spacing along the slice
axis. A file much smaller than that is interpolated into a blur that holds none of the detail the
size promises (a 28-pixel thumbnail stretched to 224², a 10 mm slab resampled to 1 mm slices): such
files are skipped with a reason, whatever ``on_error`` says (they are readable, they only do not
belong at this size), and ``modality.<name>.max_upsample`` (``null``: no limit) keeps them.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from medkit.api.errors import ConfigError

#: 2D default: a factor of 4 keeps any real radiograph (≥ 512 px; downsampled public sets such as
#: 224-320 px CheXpert-small) and refuses thumbnails under a quarter of ``input_size`` (< 56 px for 224).
DEFAULT_MAX_UPSAMPLE_2D = 4.0
#: 3D default: clinical CT is reconstructed at up to 5 mm (10 mm in older head CT) slices, resampled
#: to the 1 mm reference spacing (5-10×), and small in-plane matrices (64² MRI in a 192² window, 3×)
#: are real too; 10 keeps them all and refuses thicker slabs and volumes under 20 voxels across.
DEFAULT_MAX_UPSAMPLE_3D = 10.0


def check_max_upsample(value: Any, owner: str) -> float | None:
    """``value`` as a factor ≥ 1, or ``None`` (no limit); a :class:`ConfigError` naming ``owner``."""
    if value is None:
        return None
    try:
        factor = float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{owner}: max_upsample must be a number >= 1 or null (no limit), got {value!r}") from exc
    if math.isnan(factor) or factor < 1.0:
        raise ConfigError(f"{owner}: max_upsample must be a number >= 1 or null (no limit), got {value!r}")
    return factor


def upsample_factor(own: Sequence[float], target: Sequence[float]) -> float:
    """The largest ``target / own`` over the axes (1.0 when nothing is upsampled)."""
    return max([1.0] + [float(t) / max(float(o), 1e-9) for o, t in zip(own, target)])


def upsample_reason(modality: str, where: str, sizes: str, factor: float, limit: float) -> str:
    """The skip reason: the file (and series), its own and its trained size, the factor, the fix."""
    return (f"{where}: {sizes}: upsampled {factor:.1f}×, beyond modality.{modality}.max_upsample={limit:g} "
            f"(it holds too little detail for this size); remove it, train at a smaller size, or set "
            f"modality.{modality}.max_upsample={math.ceil(factor * 10) / 10:g} (null: no limit) to keep it")
