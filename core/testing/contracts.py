"""Contract suites every plugin's tests subclass (one base class per plugin kind).

Usage in a plugin's ``tests/test_contract.py``::

    from medkit.testing.contracts import ModalityContract

    class TestCT(ModalityContract):
        name = "ct"            # the component is built through its registered spec

Pytest collects the inherited ``test_*`` methods. Override ``make_*`` to build components by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from medkit.testing.synthetic import run_synthetic


def _create(kind: str, name: str, **kwargs: Any) -> Any:
    from medkit.registry import create

    return create(kind, name, **kwargs)


class ModalityContract:
    """What every modality guarantees: the :class:`~medkit.api.protocols.Modality` protocol, demo
    data that its own readers read and its default tokenizer collates, stable ids with a source per
    sample, augmentation drawn from the seed alone (the same seed: the same view; other seeds: other
    views), and a :class:`~medkit.api.errors.DataError` for an empty folder."""

    name: str = ""

    def make_modality(self) -> Any:
        return _create("modality", self.name)

    def test_satisfies_the_protocols(self, tmp_path: Path) -> None:
        from medkit.api.protocols import Modality, SampleDataset

        m = self.make_modality()
        assert isinstance(m, Modality), f"{self.name}: not a Modality (name, dims, defaults, demo_data, dataset)"
        ds = m.dataset(m.demo_data(tmp_path / "demo"), train=True)
        assert isinstance(ds, SampleDataset), f"{self.name}: its dataset lacks ids/sources/labels/load"
        assert len(ds.sources) == len(ds.ids), "one source per sample"
        if ds.labels is not None:
            assert len(ds.labels) == len(ds.ids) and all(int(v) >= -1 for v in ds.labels)
            assert ds.class_names, "labelled data name their classes"

    def test_demo_data_goes_through_the_default_tokenizer(self, tmp_path: Path) -> None:
        from medkit.api.batch import collate

        m = self.make_modality()
        ds = m.dataset(m.demo_data(tmp_path / "demo"), train=True)
        tok = _create("tokenizer", m.default_tokenizer, embed_dim=48)
        for view in (ds, getattr(ds, "view", lambda train: ds)(False)):
            samples = [view.load(i, seed=7 + i if view is ds else None) for i in range(min(2, len(view)))]
            batch = collate(samples, m.name, tok)
            out = tok(batch.inputs, batch.attention_mask)
            assert out.x.shape[0] == len(samples) and out.x.shape[-1] == 48

    def test_augmentation_differs_across_seeds(self, tmp_path: Path) -> None:
        import torch

        m = self.make_modality()
        if m.dims == 1:
            pytest.skip("text is not augmented; its randomness is the objective's masking")
        ds = m.dataset(m.demo_data(tmp_path / "demo"), train=True)
        differs = False
        for i in range(min(3, len(ds))):
            views = [ds.load(i, seed=s)["input"] for s in (11, 12, 13, 14)]
            differs = differs or any(not torch.equal(views[0], v) for v in views[1:])
        assert differs, f"{self.name}: seeds 11-14 give the same training view: augmentation is off or ignores the seed"

    def test_declares_dims_and_defaults(self) -> None:
        m = self.make_modality()
        assert m.name == self.name
        assert m.dims in (1, 2, 3)
        assert isinstance(m.default_tokenizer, str) and m.default_tokenizer
        assert isinstance(m.default_objective, str) and m.default_objective

    def test_demo_data_is_readable(self, tmp_path: Path) -> None:
        m = self.make_modality()
        root = m.demo_data(tmp_path / "demo")
        ds = m.dataset(root, train=True)
        assert len(ds) >= 4
        assert len(set(ds.ids)) == len(ds.ids), "sample ids must be unique"
        sample = ds.load(0, seed=None)
        assert sample["id"] == ds.ids[0]
        if m.dims > 1:
            assert sample["input"].ndim == m.dims + 1, "images are [C, H, W] or [C, D, H, W]"
        else:
            assert isinstance(sample["input"], str) and sample["input"]

    def test_augmentation_is_seeded(self, tmp_path: Path) -> None:
        m = self.make_modality()
        ds = m.dataset(m.demo_data(tmp_path / "demo"), train=True)
        a, b = ds.load(1, seed=123), ds.load(1, seed=123)
        if m.dims > 1:
            assert (a["input"] == b["input"]).all()
        else:
            assert a["input"] == b["input"]

    def test_demo_data_is_idempotent(self, tmp_path: Path) -> None:
        m = self.make_modality()
        first = m.demo_data(tmp_path / "demo")
        again = m.demo_data(tmp_path / "demo")
        assert first == again
        assert len(m.dataset(again, train=False)) == len(m.dataset(first, train=False))

    def test_empty_folder_is_a_clear_error(self, tmp_path: Path) -> None:
        from medkit.api.errors import DataError

        empty = tmp_path / "empty"
        empty.mkdir()
        with pytest.raises(DataError, match="empty"):
            self.make_modality().dataset(empty, train=True)


class TokenizerContract:
    """What every tokenizer guarantees: ``collate`` → ``forward`` gives ``[B, N, D]`` tokens and a
    wrong-shaped input is a :class:`~medkit.api.errors.DataError` naming the modality."""

    name: str = ""
    embed_dim: int = 32

    def make_tokenizer(self) -> Any:
        return _create("tokenizer", self.name, embed_dim=self.embed_dim)

    def make_samples(self) -> list[dict[str, Any]]:
        raise NotImplementedError("return two or more valid samples")

    def make_bad_sample(self) -> dict[str, Any]:
        raise NotImplementedError("return one sample of the wrong shape")

    def test_tokens_have_the_trunk_width(self) -> None:
        tok = self.make_tokenizer()
        parts = tok.collate(self.make_samples(), "demo")
        out = tok(parts["inputs"], parts.get("attention_mask"))
        assert out.x.ndim == 3 and out.x.shape[0] == len(self.make_samples())
        assert out.x.shape[-1] == self.embed_dim
        assert tok.embed_dim == self.embed_dim and tok.dims in (1, 2, 3)

    def test_wrong_shape_names_the_modality(self) -> None:
        from medkit.api.errors import DataError

        tok = self.make_tokenizer()
        with pytest.raises(DataError, match="mymod"):
            tok.collate([self.make_bad_sample()], "mymod")


class ObjectiveContract:
    """What every objective guarantees: a finite scalar loss that trains the encoder, and the same
    value for the same masking generator."""

    name: str = ""
    tokenizer: str = ""

    def make_samples(self) -> list[dict[str, Any]]:
        raise NotImplementedError("return two or more samples for the tokenizer")

    def build(self) -> tuple[Any, Any, Any]:
        from medkit.api.batch import collate
        from medkit.models.encoder import UniversalEncoder

        tok = _create("tokenizer", self.tokenizer, embed_dim=48)
        encoder = UniversalEncoder({self.tokenizer: tok}, depth=2, embed_dim=48, num_heads=3)
        objective = _create("objective", self.name, encoder=encoder, tokenizer=self.tokenizer)
        batch = collate(self.make_samples(), "demo", tok)
        return encoder, objective, batch

    def test_loss_is_finite_and_trains_the_trunk(self) -> None:
        import torch

        encoder, objective, batch = self.build()
        out = objective(encoder, batch, generator=torch.Generator().manual_seed(0))
        assert out.loss.ndim == 0 and torch.isfinite(out.loss)
        out.loss.backward()
        grads = [p.grad for n, p in encoder.named_parameters() if n.startswith("blocks.")]
        assert any(g is not None and g.abs().sum() > 0 for g in grads)

    def test_same_generator_same_loss(self) -> None:
        import torch

        encoder, objective, batch = self.build()
        encoder.eval()
        objective.eval()
        a = objective(encoder, batch, generator=torch.Generator().manual_seed(3)).loss
        b = objective(encoder, batch, generator=torch.Generator().manual_seed(3)).loss
        assert torch.equal(a, b)


# -- synthetic modalities and the real engine, for strategy and host tests -----------------------

class StrategyContract:
    """What every strategy guarantees on the real engine: the
    :class:`~medkit.api.protocols.Strategy` protocol; a two-stage run over synthetic modalities
    finishes, writes one matrix row per stage with every seen modality evaluated, trains each stage
    at least ``min_current_fraction`` of its steps on its own data, is reproducible from its seed, and
    its state survives a round trip through safetensors + JSON."""

    name: str = ""
    overrides: tuple[str, ...] = ()

    def test_satisfies_the_protocol(self) -> None:
        from medkit.api.protocols import Strategy

        strategy = _create("strategy", self.name)
        assert isinstance(strategy, Strategy), f"{self.name}: not a Strategy (subclass BaseStrategy)"
        assert 0.0 <= float(strategy.min_current_fraction) <= 1.0

    @pytest.mark.slow  # runs a two-stage pre-training
    def test_each_stage_trains_on_its_own_data_and_runs_reproduce(self, tmp_path: Path) -> None:
        import json

        import torch

        from medkit.storage.files import load_tensors

        runs = [run_synthetic(tmp_path / f"run{i}", self.name, overrides=self.overrides, demo_dir=tmp_path / "demo")
                for i in range(2)]
        manifest = json.loads((runs[0] / "manifest.json").read_text())
        strategy = _create("strategy", self.name)
        steps_file = runs[0] / "metrics" / "steps.jsonl"
        steps = [json.loads(x) for x in steps_file.read_text().splitlines()] if steps_file.exists() else []
        for stage in manifest["stages"]:
            mine = [s for s in steps if s["stage"] == stage["index"]]
            if mine:
                own = sum(1 for s in mine if s["role"] == "current")
                assert own >= float(strategy.min_current_fraction) * len(mine) - 1e-9, \
                    f"stage {stage['index']} trained {own} of {len(mine)} steps on its own data"
        a, b = (load_tensors(r / "model.safetensors") for r in runs)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "same seed, same weights"
        assert (runs[0] / "metrics" / "matrix.csv").read_text() == (runs[1] / "metrics" / "matrix.csv").read_text()

    @pytest.mark.slow  # runs a two-stage pre-training
    def test_two_stage_run_writes_matrix(self, tmp_path: Path) -> None:
        from medkit.eval.matrices import read_matrix

        run = run_synthetic(tmp_path / "run", self.name, overrides=self.overrides,
                            demo_dir=tmp_path / "demo")
        mods, rows = read_matrix(run / "metrics" / "matrix.csv")
        assert mods == ["synth_a", "synth_b"]
        assert len(rows) >= 1
        assert rows[-1][0] is not None and rows[-1][1] is not None
        assert (run / "model.safetensors").exists() and (run / "manifest.json").exists()

    @pytest.mark.slow  # runs a two-stage pre-training
    def test_state_round_trips(self, tmp_path: Path) -> None:
        import json

        from medkit.storage.files import load_tensors
        from medkit.registry import create

        run = run_synthetic(tmp_path / "run", self.name, overrides=self.overrides,
                            demo_dir=tmp_path / "demo")
        tensors = load_tensors(run / "strategy" / "state.safetensors")
        meta = json.loads((run / "strategy" / "state.json").read_text())
        fresh = create("strategy", self.name)
        fresh.load_state_dict(tensors, meta)
        t2, m2 = fresh.state_dict()
        assert set(t2) == set(tensors)
        assert all((t2[k] == tensors[k]).all() for k in tensors)
        assert json.loads(json.dumps(m2)) == meta
