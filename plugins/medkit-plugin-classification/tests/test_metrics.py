"""ACC/AUC/F1 against scikit-learn (the oracle) and small hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from medkit_plugin_classification.metrics import (auc_score, binary_auc, classification_metrics,
                                                  confusion_matrix, selection_score)

sk = pytest.importorskip("sklearn.metrics", reason="scikit-learn (dev extra) is the oracle")


def _probs(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    logits = rng.normal(size=(n, k))
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("k,seed", [(2, 0), (3, 1), (5, 2), (9, 3)])
def test_metrics_match_sklearn(k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.arange(k), rng.integers(0, k, 60)])  # every class present
    p = _probs(rng, len(y), k)
    p[:, 0] = np.round(p[:, 0], 1)  # ties in the scores
    p /= p.sum(axis=1, keepdims=True)
    m = classification_metrics(y, p, [f"c{i}" for i in range(k)])
    pred = p.argmax(axis=1)
    assert m["acc"] == pytest.approx(sk.accuracy_score(y, pred))
    if k == 2:
        assert m["auc"] == pytest.approx(sk.roc_auc_score(y, p[:, 1]))
        assert m["f1"] == pytest.approx(sk.f1_score(y, pred))
    else:
        assert m["auc"] == pytest.approx(sk.roc_auc_score(y, p, multi_class="ovo", average="macro"))
        assert m["f1"] == pytest.approx(sk.f1_score(y, pred, average="macro"))
    assert m["f1_macro"] == pytest.approx(sk.f1_score(y, pred, average="macro"))
    per_class = sk.f1_score(y, pred, average=None, labels=list(range(k)), zero_division=0)
    assert [m[f"f1/c{i}"] for i in range(k)] == pytest.approx(per_class.tolist())
    assert (confusion_matrix(y, pred, k) == sk.confusion_matrix(y, pred, labels=list(range(k)))).all()


def test_known_answers() -> None:
    # positives scored 0.9, 0.4; negatives 0.5, 0.1: 3 of 4 pairs ordered right
    assert binary_auc(np.array([1, 1, 0, 0]), np.array([0.9, 0.4, 0.5, 0.1])) == pytest.approx(0.75)
    assert binary_auc(np.array([1, 0]), np.array([0.5, 0.5])) == pytest.approx(0.5)  # a tie counts half
    assert np.isnan(binary_auc(np.array([1, 1]), np.array([0.2, 0.3])))
    # 3 classes, class 2 absent from the labels: only the (0, 1) pair counts
    # P(0): class 0 0.8 vs class 1 {0.3, 0.85} -> 0.5; P(1): class 1 {0.6, 0.05} vs class 0 0.1 -> 0.5
    probs = np.array([[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.85, 0.05, 0.1]])
    assert auc_score([0, 1, 1], probs) == pytest.approx(0.5)
    m = classification_metrics([0, 1, 1], probs, ["a", "b", "c"])
    assert m["acc"] == pytest.approx(2 / 3)
    assert selection_score(m) == pytest.approx(m["acc"] + m["auc"] + m["f1"])
    assert selection_score({"acc": 1.0, "auc": float("nan"), "f1": 0.5}) == pytest.approx(1.5)
