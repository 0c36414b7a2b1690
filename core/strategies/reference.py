"""The host's reference strategies: sequential (lower), joint (upper) and tfs (no pre-training)."""

from __future__ import annotations

from typing import Sequence

from medkit.strategies.base import BaseStrategy


class Sequential(BaseStrategy):
    """Stages one after another with no protection against forgetting (the lower reference)."""

    name = "sequential"


class Joint(BaseStrategy):
    """All selected modalities in one stage, batches interleaved in proportion to their sizes
    (the upper reference: no continual constraint)."""

    name = "joint"

    def plan(self, modalities: Sequence[str]) -> list[list[str]]:
        return [list(modalities)]


class TrainFromScratch(BaseStrategy):
    """No pre-training at all: writes a randomly initialised model (the downstream baseline)."""

    name = "tfs"
    trains = False


def make_sequential() -> Sequential:
    """Sequential training: no protection against forgetting."""
    return Sequential()


def make_joint() -> Joint:
    """Joint training of all modalities at once."""
    return Joint()


def make_tfs() -> TrainFromScratch:
    """Train-from-scratch: an untrained encoder, for downstream comparison."""
    return TrainFromScratch()
