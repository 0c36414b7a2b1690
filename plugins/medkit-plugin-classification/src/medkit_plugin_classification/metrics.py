"""Classification metrics in numpy: accuracy, ROC AUC (binary on P(class 1); macro
one-vs-one for more classes, as scikit-learn's ``roc_auc_score(multi_class="ovo")``), F1 and the
confusion matrix. scikit-learn is only the test oracle."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def _ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_vals = values[order]
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and sorted_vals[j + 1] == sorted_vals[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def binary_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann–Whitney U with tie correction); ``nan`` without both classes."""
    positive = np.asarray(positive, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _ranks(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def auc_score(labels: Sequence[int] | np.ndarray, probs: np.ndarray) -> float:
    """Binary AUC on ``probs[:, 1]`` for two classes; otherwise the macro average over class pairs
    (a, b) of ½·(AUC(a vs b on P(a)) + AUC(b vs a on P(b))) using only samples of a and b (Hand &
    Till). Pairs whose classes are not both present are skipped; ``nan`` if none is left."""
    y = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    n_classes = probs.shape[1]
    if n_classes == 2:
        return binary_auc(y == 1, probs[:, 1])
    present = [c for c in range(n_classes) if (y == c).any()]
    pair_scores = []
    for i, a in enumerate(present):
        for b in present[i + 1:]:
            keep = (y == a) | (y == b)
            ab = binary_auc(y[keep] == a, probs[keep, a])
            ba = binary_auc(y[keep] == b, probs[keep, b])
            pair_scores.append((ab + ba) / 2.0)
    return float(np.mean(pair_scores)) if pair_scores else float("nan")


def confusion_matrix(labels: Sequence[int] | np.ndarray, preds: Sequence[int] | np.ndarray,
                     n_classes: int) -> np.ndarray:
    """``[n_classes, n_classes]`` counts; row = true class, column = predicted class."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)), 1)
    return cm


def f1_per_class(cm: np.ndarray) -> np.ndarray:
    """F1 of every class from a confusion matrix (0 where precision and recall are undefined)."""
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(axis=0) + cm.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def classification_metrics(labels: Sequence[int] | np.ndarray, probs: np.ndarray,
                           class_names: Sequence[str]) -> dict[str, float]:
    """``acc``, ``auc``, ``f1`` (binary F1 of class 1 for two classes, macro otherwise, as the
    reference), ``f1_macro`` (over the classes present in labels or predictions, as scikit-learn)
    and ``f1/<class>`` for every class."""
    y = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    n = probs.shape[1]
    preds = probs.argmax(axis=1)
    cm = confusion_matrix(y, preds, n)
    per_class = f1_per_class(cm)
    seen = sorted(set(y.tolist()) | set(preds.tolist()))
    macro = float(per_class[seen].mean()) if seen else float("nan")
    out = {"acc": float((preds == y).mean()) if len(y) else float("nan"),
           "auc": auc_score(y, probs),
           "f1": float(per_class[1]) if n == 2 else macro,
           "f1_macro": macro}
    for c, name in enumerate(class_names):
        out[f"f1/{name}"] = float(per_class[c])
    return out


def selection_score(metrics: dict[str, float]) -> float:
    """ACC + AUC + F1 (MedCoSS selects the fine-tuned model by this sum); an undefined term counts as 0."""
    return float(sum(0.0 if np.isnan(metrics[k]) else metrics[k] for k in ("acc", "auc", "f1")))
