"""Released-checkpoint stand-ins for the comparison backbones: every key name and shape of the authors'
files (``fixtures/external_keys.json``, recorded from their public code) with random values."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import torch

KEYS = Path(__file__).parent / "fixtures" / "external_keys.json"
#: (dims, input shape without batch, pooled width, stage-map channels) of a tiny forward per family.
FORWARD: dict[str, list[tuple[int, tuple[int, ...], int, list[int]]]] = {
    "desd": [(3, (1, 16, 64, 64), 2048, [256, 512, 1024, 2048])],
    "pcrlv2-3d": [(3, (1, 16, 32, 32), 512, [64, 128, 256, 512])],
    "pcrlv2-2d": [(2, (3, 32, 32), 512, [64, 128, 256, 512])],
    "path-dino": [(2, (3, 32, 48), 384, [384, 384, 384, 384])],
    "unimiss": [(2, (3, 64, 64), 512, [48, 128, 256, 512]), (3, (1, 16, 64, 64), 512, [48, 128, 256, 512])],
}


def released_keys() -> dict[str, Any]:
    return json.loads(KEYS.read_text(encoding="utf-8"))


def released_state(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors of every released key and shape of ``name``. Norm weights near 1, running
    variances in [0.5, 1.5], counters int64, the rest ~N(0, 0.02); tensors above 1M values repeat one
    random row (a stride-0 view: ``torch.save`` stores the row only) so that files stay small."""
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for key, shape in released_keys()[name]["keys"].items():
        shape = tuple(shape)
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(100, dtype=torch.long)
            continue
        base = (1, *shape[1:]) if math.prod(shape) > 1_000_000 else shape
        if key.endswith("running_var"):
            t = 0.5 + torch.rand(base, generator=g)
        elif key.endswith(("norm.weight", "norm1.weight", "norm2.weight", "norm3.weight", "bn1.weight",
                           "bn2.weight", "downsample.1.weight", "weight_g")) or (len(shape) == 1 and "weight" in key):
            t = 1.0 + 0.02 * torch.randn(base, generator=g)
        else:
            t = 0.02 * torch.randn(base, generator=g)
        out[key] = t.expand(shape) if base != shape else t
    return out


def write_release(name: str, path: Path, seed: int = 0, *, extra: dict[str, Any] | None = None
                  ) -> dict[str, torch.Tensor]:
    """``path`` in the released layout of ``name`` (entry, ``epoch``, pickled ``args`` Namespace)."""
    state = released_state(name, seed)
    entry = released_keys()[name]["entry"]
    if entry is None:
        obj: Any = state
    else:
        args = "opt" if name.startswith("pcrlv2") else "args"  # what the authors' training scripts call it
        obj = {entry: state, "epoch": 240, args: argparse.Namespace(arch=name, lr=0.3)}
        obj.update(extra or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return state
