"""medkit: continual self-supervised pre-training of one universal encoder (MedCoSS). Importing it stays light."""

from __future__ import annotations

from typing import Any


def load_pretrained(ref: str, *, with_heads: bool = True) -> Any:
    """Rebuild a checkpoint (``hf-hub:USER/NAME[@REV]``, ``local-dir:PATH`` or a run directory) with
    the installed plugins and load its weights; the model is returned in ``eval()`` mode.

    The convenience for notebooks and scripts: it hands :func:`medkit.hub.hub.load_pretrained` the
    installed plugin host, which the runtime itself never imports (docs/architecture.md).
    """
    from medkit.hub.hub import load_pretrained as _load
    from medkit.registry import get_host

    return _load(ref, create=get_host().create, with_heads=with_heads)
