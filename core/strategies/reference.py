"""The host's reference strategies: sequential (lower), joint (upper) and tfs (no pre-training)."""

from __future__ import annotations

from typing import Sequence

from medkit.models.sharing import check_decoders
from medkit.strategies.base import BaseStrategy


class Sequential(BaseStrategy):
    """Stages one after another with no protection against forgetting (the lower reference)."""

    name = "sequential"


class Joint(BaseStrategy):
    """All selected modalities in one stage, batches interleaved in proportion to their sizes
    (the upper reference: no continual constraint).

    ``decoders`` says which pretext heads there are: one per modality (``"modality"``, MedCoSS's
    Joint SSL†) or one per input dimension and objective (``"dimension"``, Joint SSL*: every 2D
    modality trains one decoder, every 3D modality another). The engine builds the heads from the
    config (:func:`medkit.models.sharing.shared_heads`); the strategy only carries the choice.
    """

    name = "joint"

    def __init__(self, decoders: str = "modality") -> None:
        self.decoders = decoders

    def plan(self, modalities: Sequence[str]) -> list[list[str]]:
        return [list(modalities)]


class TrainFromScratch(BaseStrategy):
    """No pre-training at all: writes a randomly initialised model (the downstream baseline)."""

    name = "tfs"
    trains = False


def make_sequential() -> Sequential:
    """Sequential training: no protection against forgetting."""
    return Sequential()


def make_joint(decoders: str = "modality") -> Joint:
    """Joint training of all modalities at once.

    Args:
        decoders: ``modality`` (one pretext decoder per modality: MedCoSS's Joint SSL†, the default)
            or ``dimension`` (one decoder shared by every modality of the same input dimension and
            objective: Joint SSL*, whose weaker results the paper puts down to modal data collision).
    """
    return Joint(decoders=check_decoders(decoders))


def make_tfs() -> TrainFromScratch:
    """Train-from-scratch: an untrained encoder, for downstream comparison."""
    return TrainFromScratch()
