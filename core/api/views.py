"""Dataset views a plugin's datasets share; torch-free, so a plugin module can import it cheaply."""

from __future__ import annotations

import copy
from typing import Any


class TrainViewMixin:
    """Gives a dataset ``view(train)``: the same index with augmentation on or off, without reading
    the folder again (the engine needs both views of every modality)."""

    train: bool

    def view(self, train: bool) -> Any:
        other = copy.copy(self)
        other.train = bool(train)
        return other
