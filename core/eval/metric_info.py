"""What each evaluation metric is: its title, which way is better, its unit, its range (the one place)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

#: The split every stage matrix is measured on (the probes use the training split as memory).
EVAL_SPLIT = "held-out split"


@dataclass(frozen=True)
class MetricInfo:
    """How to read one metric.

    Attributes:
        name: the metric's key (``pretext_loss``, ``knn_acc``...).
        title: a short human name.
        higher_is_better: the orientation (``False`` for losses and errors).
        unit: what one number means (``"fraction correct"``); for ``per_objective`` metrics the
            unit of each column comes from :func:`objective_unit`.
        value_range: the fixed ``(low, high)`` of the metric, or ``None`` when it is open.
        per_objective: the metric's value depends on each modality's pretext objective (a loss):
            values of columns with different objectives are different quantities and are never
            averaged or drawn on one colour scale.
        split: what the metric is measured on.
    """

    name: str
    title: str
    higher_is_better: bool
    unit: str
    value_range: tuple[float, float] | None = None
    per_objective: bool = False
    split: str = EVAL_SPLIT

    @property
    def better(self) -> str:
        return "higher is better" if self.higher_is_better else "lower is better"


METRICS: dict[str, MetricInfo] = {
    "pretext_loss": MetricInfo("pretext_loss", "pretext loss, run's own decoder", False,
                               "each modality's objective loss", per_objective=True,
                               split=f"{EVAL_SPLIT}, eval mode, fixed masking seed, the modality's head as "
                                     f"the run left it (stale for modalities of earlier stages)"),
    "refit_loss": MetricInfo("refit_loss", "pretext loss, refitted decoder", False,
                             "each modality's objective loss", per_objective=True,
                             split=f"{EVAL_SPLIT}, eval mode, fixed masking seed, a fresh head fitted on the "
                                   f"frozen encoder (trainer.probe_refit_steps)"),
    "knn_acc": MetricInfo("knn_acc", "kNN probe accuracy", True, "fraction correct", (0.0, 1.0),
                          split=f"{EVAL_SPLIT} queries, training split as memory"),
    "linear_acc": MetricInfo("linear_acc", "linear probe accuracy", True, "fraction correct", (0.0, 1.0),
                             split=f"{EVAL_SPLIT}, probe fitted on the training split"),
}
#: Name parts of a metric that is lower-is-better when it is not in :data:`METRICS`.
LOWER_IS_BETTER_PARTS = ("loss", "error", "perplexity", "mse", "hd95", "distance")
#: The loss each built-in pretext objective reports (unknown objectives: "<name> loss").
OBJECTIVE_UNITS = {"mae": "MAE loss (MSE, normalised pixels)", "mlm": "MLM loss (cross-entropy, nats)"}


def metric_info(name: str) -> MetricInfo:
    """The :class:`MetricInfo` of ``name``; an unknown metric is lower-is-better when its name says
    loss/error/perplexity/MSE/HD95/distance, higher-is-better otherwise."""
    if name in METRICS:
        return METRICS[name]
    lower = any(part in name.lower() for part in LOWER_IS_BETTER_PARTS)
    accuracy = name.lower().endswith(("acc", "accuracy"))
    return MetricInfo(name, name.replace("_", " "), not lower, "fraction correct" if accuracy else "value",
                      (0.0, 1.0) if accuracy else None, per_objective=lower)


def higher_is_better(name: str) -> bool:
    """``True`` when larger values of metric ``name`` are better (see :func:`metric_info`)."""
    return metric_info(name).higher_is_better


def objective_unit(objective: str | None) -> str:
    """The unit of a pretext objective's loss (``"MAE loss (MSE, normalised pixels)"``)."""
    if not objective:
        return "loss"
    return OBJECTIVE_UNITS.get(objective, f"{objective} loss")


def column_units(name: str, modalities: Sequence[str], objectives: Mapping[str, str] | None) -> dict[str, str]:
    """The unit of each column of metric ``name``'s matrix (objective-specific for losses)."""
    info = metric_info(name)
    if not info.per_objective:
        return {m: info.unit for m in modalities}
    return {m: objective_unit((objectives or {}).get(m)) for m in modalities}


def comparable(name: str, modalities: Sequence[str], objectives: Mapping[str, str] | None) -> tuple[bool, str]:
    """Whether values of ``modalities`` for metric ``name`` may be averaged, and why not.

    Accuracies share one unit. A loss is only comparable across modalities trained with one and the
    same objective; without the objectives (``None``) the caller vouches for it.
    """
    info = metric_info(name)
    if not info.per_objective or objectives is None:
        return True, ""
    used = {objectives.get(m) for m in modalities}
    if None in used or len(used) > 1:
        names = ", ".join(f"{m}: {objectives.get(m) or 'unknown objective'}" for m in modalities)
        return False, (f"{info.title} of different objectives is a different quantity per modality "
                       f"({names}); see the per-modality values")
    return True, ""
