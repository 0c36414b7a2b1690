"""The frozen-encoder probes' options and their ``trainer.probe_*`` defaults (no torch: the config reads them)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

__all__ = ["PROBE_TRAINER_DEFAULTS", "ProbeOptions"]


@dataclass(frozen=True)
class ProbeOptions:
    """The probes' options and their defaults (the one place: the ``trainer.probe_*`` config keys
    are :data:`PROBE_TRAINER_DEFAULTS`, derived from this class).

    Attributes:
        knn_k: neighbours of the kNN probe (``<= 0`` turns it off).
        linear_steps: L-BFGS iterations of the linear probe (``<= 0`` turns it off).
        knn_vote: ``"weighted"`` or ``"majority"`` (see :func:`medkit.eval.probes.knn_accuracy`).
        unseen: also probe the modalities of later stages (forward transfer needs them).
        max_train: labelled training samples used at most (an even stride).
        max_query: labelled held-out samples used at most.
        refit_steps: AdamW steps of the fresh pretext head behind ``refit_loss``, the
            refitted-decoder loss (:mod:`medkit.eval.refit`; ``<= 0`` turns it off).
        refit_lr: the learning rate of that head.
    """

    knn_k: int = 5
    linear_steps: int = 100
    knn_vote: str = "weighted"
    unseen: bool = False
    max_train: int = 256
    max_query: int = 128
    refit_steps: int = 100
    refit_lr: float = 1e-3

    @property
    def enabled(self) -> bool:
        return self.knn_k > 0 or self.linear_steps > 0

    @classmethod
    def from_trainer(cls, trainer: Mapping[str, Any]) -> ProbeOptions:
        """The options of a run's ``trainer`` config section (keys ``probe_<field>``; absent keys
        keep their defaults)."""
        given = {f.name: trainer[f"probe_{f.name}"] for f in fields(cls) if f"probe_{f.name}" in trainer}
        return cls(**given)


#: ``trainer.probe_*`` defaults of a run config (``probe_knn_k``, ``probe_unseen``...).
PROBE_TRAINER_DEFAULTS: dict[str, Any] = {f"probe_{f.name}": f.default for f in fields(ProbeOptions)}
