"""Probes on synthetic features with a known structure."""

from __future__ import annotations

import pytest
import torch

from medkit.api.context import EvaluationState
from medkit.eval.probes import knn_accuracy, labelled_split, linear_probe_accuracy


def clusters(n_per: int, seed: int, *, spread: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """Three well-separated directions in 16-D, ``n_per`` noisy samples each."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(16)[:3] * 4.0
    y = torch.arange(3).repeat_interleave(n_per)
    return centres[y] + spread * torch.randn(len(y), 16, generator=g), y


@pytest.mark.parametrize("vote", ["weighted", "majority"])
def test_knn_separable_clusters_is_perfect(vote: str) -> None:
    x, y = clusters(10, 0)
    q, yq = clusters(4, 1)
    assert knn_accuracy(x, y, q, yq, k=5, vote=vote) == 1.0


def test_knn_uses_cosine_not_euclidean() -> None:
    # class 0 along +x far away, class 1 along +y near the origin; a query along +x but small
    mem = torch.tensor([[10.0, 0.0], [11.0, 0.5], [0.0, 0.1], [0.05, 0.1]])
    lab = torch.tensor([0, 0, 1, 1])
    q = torch.tensor([[0.1, 0.0]])
    assert knn_accuracy(mem, lab, q, torch.tensor([0]), k=1) == 1.0


def test_knn_majority_vote_known_answer() -> None:
    mem = torch.tensor([[1.0, 0.0], [1.0, 0.1], [1.0, -0.1], [0.0, 1.0]])
    lab = torch.tensor([1, 1, 0, 0])
    q = torch.tensor([[1.0, 0.02]])
    # k=3: neighbours are memory 0, 1, 2 -> labels 1, 1, 0 -> majority 1
    assert knn_accuracy(mem, lab, q, torch.tensor([1]), k=3, vote="majority") == 1.0
    assert knn_accuracy(mem, lab, q, torch.tensor([0]), k=3, vote="majority") == 0.0


def test_linear_probe_separable_is_perfect_and_deterministic() -> None:
    x, y = clusters(10, 0, spread=0.5)
    q, yq = clusters(5, 2, spread=0.5)
    a = linear_probe_accuracy(x, y, q, yq, steps=50, seed=3)
    assert a == 1.0
    assert linear_probe_accuracy(x, y, q, yq, steps=50, seed=3) == a


def test_linear_probe_label_noise_is_not_perfect() -> None:
    x, y = clusters(10, 0)
    q, _ = clusters(5, 2)
    wrong = (torch.arange(3).repeat_interleave(5) + 1) % 3  # every query labelled as another class
    assert linear_probe_accuracy(x, y, q, wrong, steps=30) == 0.0


class _DS:
    def __init__(self, labels: list[int] | None) -> None:
        self.labels = labels


def test_labelled_split_reasons_and_caps() -> None:
    assert labelled_split(_DS(None), [0, 1], [2], max_train=10, max_query=10).reason == \
        "the dataset carries no labels"
    one_class = labelled_split(_DS([0] * 8), range(6), [6, 7], max_train=10, max_query=10)
    assert one_class.reason is not None and "class" in one_class.reason
    few = labelled_split(_DS([0, 1, 0, -1, -1]), [0, 1, 2, 3], [4], max_train=10, max_query=10)
    assert few.reason is not None and "3 labelled" in few.reason
    ok = labelled_split(_DS([i % 2 for i in range(40)] + [-1]), range(30), [30, 31, 40],
                        max_train=10, max_query=10)
    assert ok.reason is None
    assert ok.train == [0, 3, 6, 9, 12, 15, 18, 21, 24, 27] and ok.query == [30, 31]
    assert ok.train_labels == [i % 2 for i in ok.train]


def test_probe_options_pick_trainer_probe_keys() -> None:
    from medkit.eval.evaluate import probe_options

    assert probe_options({"eval_batches": 4, "probe_knn_k": 3, "probe_linear_steps": 0}) == \
        {"knn_k": 3, "linear_steps": 0}


class _Ctx:
    """Just what evaluate_seen touches: two labelled modalities and one without labels."""

    def __init__(self) -> None:
        self.seen = ["a"]
        self.modalities = {"a": None, "b": None, "text": None}
        self.not_evaluated: dict = {}
        self.evaluation = EvaluationState()
        self.seed, self.batch_size, self.rank, self.stage_index = 0, 4, 0, 0
        labels = [i % 2 for i in range(24)]
        self.eval_sets = {"a": _DS(labels), "b": _DS(labels), "text": _DS(None)}
        self.train_indices = {m: list(range(20)) for m in self.modalities}
        self.val_indices = {m: list(range(20, 24)) for m in self.modalities}

    def features(self, modality: str, indices: list[int]) -> torch.Tensor:
        y = torch.tensor([i % 2 for i in indices])
        return torch.nn.functional.one_hot(y, 4).float() + 0.01 * torch.arange(len(indices))[:, None]


def test_evaluate_seen_probes_labelled_and_unseen_and_skips_unlabelled(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import contextlib
    import logging

    import medkit.eval.evaluate as ev

    monkeypatch.setattr(ev, "pretext_loss", lambda ctx, m, max_batches, **kw: 0.5)
    strategy = type("S", (), {"eval_context": lambda self, ctx, m: contextlib.nullcontext()})()
    ctx = _Ctx()
    with caplog.at_level(logging.INFO, logger="medkit.eval.evaluate"):
        out = ev.evaluate_seen(ctx, strategy, max_batches=1, linear_steps=20, probe_unseen=True)
        ev.evaluate_seen(ctx, strategy, max_batches=1, linear_steps=20, probe_unseen=True)
    assert out["pretext_loss"] == {"a": 0.5}
    assert out["knn_acc"] == {"a": 1.0, "b": 1.0} and out["linear_acc"] == {"a": 1.0, "b": 1.0}
    assert sum("text: no kNN/linear probe (the dataset carries no labels)" in r.message
               for r in caplog.records) == 1
    seen_only = ev.evaluate_seen(ctx, strategy, max_batches=1, probe_unseen=False, linear_steps=0)
    assert seen_only["knn_acc"] == {"a": 1.0} and "linear_acc" not in seen_only


def test_probe_defaults_live_in_one_place() -> None:
    import dataclasses
    import inspect

    from medkit.eval.evaluate import evaluate_seen
    from medkit.eval.probes import PROBE_TRAINER_DEFAULTS, ProbeOptions

    try:  # the typed trainer schema, where there is one; the defaults dict otherwise
        from medkit.config.schemas import TrainerConfig  # type: ignore[import-not-found]

        trainer = {f.name: f.default for f in dataclasses.fields(TrainerConfig)}
    except ImportError:
        from medkit.config.compose import TRAINER_DEFAULTS as trainer
    # the run config's trainer.probe_* defaults are ProbeOptions' defaults, key for key
    assert {k: v for k, v in trainer.items() if k.startswith("probe_")} == PROBE_TRAINER_DEFAULTS
    assert PROBE_TRAINER_DEFAULTS["probe_unseen"] is ProbeOptions().unseen
    # and evaluate_seen's keyword defaults agree with them (today: 512/256/unseen=True vs 256/128/False)
    params = inspect.signature(evaluate_seen).parameters
    assert params["probe_max_train"].default == ProbeOptions().max_train
    assert params["probe_max_query"].default == ProbeOptions().max_query
    assert params["probe_unseen"].default == ProbeOptions().unseen
    assert ProbeOptions.from_trainer({"probe_knn_k": 3, "probe_unseen": True, "eval_batches": 2}) == \
        ProbeOptions(knn_k=3, unseen=True)


def test_not_evaluated_modalities_are_never_computed_and_say_why(monkeypatch: pytest.MonkeyPatch) -> None:
    import contextlib

    import medkit.eval.evaluate as ev
    from medkit.eval.probes import ProbeOptions

    computed: list[str] = []
    monkeypatch.setattr(ev, "pretext_loss", lambda ctx, m, max_batches: computed.append(m) or 0.5)
    strategy = type("S", (), {"eval_context": lambda self, ctx, m: contextlib.nullcontext()})()
    ctx = _Ctx()
    ctx.seen = ["a", "b"]
    ctx.val_indices["b"] = []  # no held-out sample
    ctx.not_evaluated = {"a": "trained in the earlier run; pass --data a=DIR to evaluate it"}
    values, missing = ev.evaluate_cells(ctx, strategy, max_batches=1, options=ProbeOptions(linear_steps=0))
    assert computed == [], "a is not evaluated (on demo data or any other) and b has no held-out data"
    assert values["pretext_loss"] == {}
    assert missing["pretext_loss"]["a"].startswith("trained in the earlier run")
    assert missing["pretext_loss"]["b"] == ev.NO_HELD_OUT
    assert "a" not in values.get("knn_acc", {}) and missing["knn_acc"]["a"].startswith("trained in the earlier")
