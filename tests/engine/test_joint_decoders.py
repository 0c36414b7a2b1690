"""``joint`` with ``strategy.decoders=dimension`` (Joint SSL*): one pretext head per input dimension,
really shared (one module, one optimizer entry, moved by every modality's batches), saved once,
resumed bit for bit, continued with ``--from``; ``decoders=modality`` builds exactly what it did."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from medkit.api.errors import ConfigError
from medkit.api.progress import NullReporter
from medkit.storage.files import load_tensors

MODS = ("synth_a", "synth_b", "synth_2d")  # two 3D modalities and one 2D
BASE = ["encoder.depth=2", "encoder.embed_dim=48", "encoder.num_heads=3", "trainer.batch_size=4",
        "trainer.eval_batches=1", "trainer.probe_refit_steps=0", "trainer.probe_linear_steps=0",
        "trainer.probe_knn_k=0"]


def _cfg(decoders: str | None, *, strategy: str = "joint", steps: int = 6,
         extra: tuple[str, ...] = ()) -> dict[str, Any]:
    from medkit.config.compose import Selection, compose
    from medkit.testing.synthetic import use_synthetic_host

    overrides = BASE + ([f"strategy.decoders={decoders}"] if decoders else []) + list(extra)
    return compose(Selection(modalities=list(MODS), strategy=strategy, preset="tiny", max_steps=steps,
                             overrides=overrides), host=use_synthetic_host())


class _Stop(NullReporter):
    """Raises when a given step is reported (after the checkpoint before it)."""

    def __init__(self, at: int | None) -> None:
        self.at = at

    def update(self, completed: int, metrics: dict[str, float]) -> None:
        if completed == self.at:
            raise KeyboardInterrupt("stopped by the test")


def _run(run_dir: Path, cfg: dict[str, Any], *, stop_at: int | None = None, resume: bool = False) -> Path:
    from medkit.engine.engine import Engine, load_config
    from medkit.registry import get_host

    if resume:
        cfg = load_config(run_dir)
    Engine(cfg, run_dir, components=get_host(), reporter=_Stop(stop_at), resume=resume).run()
    return run_dir


def _losses(run: Path) -> list[tuple[str, float]]:
    rows = map(json.loads, (run / "metrics" / "steps.jsonl").read_text().splitlines())
    return [(r["modality"], r["loss"]) for r in rows]


def test_one_head_per_dimension_is_one_module_one_optimizer_entry_moved_by_both(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from medkit.engine.engine import Engine
    from medkit.models.build import architecture
    from medkit.registry import get_host

    monkeypatch.setenv("MEDKIT_DEMO_DIR", str(tmp_path / "demo"))
    cfg = _cfg("dimension")
    assert architecture(cfg)["shared_heads"] == {"synth_b": "synth_a"}, "3D shares, 2D has its own"
    engine = Engine(cfg, tmp_path / "r", components=get_host(), reporter=NullReporter())
    ctx = engine._build()
    heads = engine.model.heads
    assert heads["synth_b"] is heads["synth_a"] and heads["synth_2d"] is not heads["synth_a"]
    trained = list(engine.model.modules().parameters())
    assert len(trained) == len({id(p) for p in trained}), "each shared parameter once (one optimizer entry)"
    assert not any(k.startswith("heads.synth_b.") for k in engine.model.state_dict()), "stored once, under synth_a"
    shared = [p for p in heads["synth_a"].parameters() if p.requires_grad]
    for m in ("synth_a", "synth_b"):
        for p in shared:
            p.grad = None
        ctx.pretext_loss(ctx.load_batch(m, [0, 1]), generator=torch.Generator().manual_seed(0)).loss.backward()
        moved = sum(float(p.grad.abs().sum()) for p in shared if p.grad is not None)
        assert moved > 0, f"a {m} batch trains the shared 3D head"


def test_modality_decoders_build_what_one_head_per_modality_built() -> None:
    from medkit.models.build import build_head, build_model
    from medkit.registry import get_host

    default, explicit = _cfg(None), _cfg("modality")  # (installs the synthetic host)
    create = get_host().create
    torch.manual_seed(0)
    model = build_model(explicit, create=create)
    torch.manual_seed(0)
    old = build_model(default, create=create, with_heads=False)  # the loop the heads were built by before
    old_heads = {m: build_head(default, m, old.encoder, create=create) for m in MODS}
    assert model.shared == {} and len({id(h) for h in model.heads.values()}) == 3
    state = model.state_dict()
    expected = {**old.encoder.state_dict(), **{f"heads.{m}.{k}": v for m, h in old_heads.items()
                                               for k, v in h.state_dict().items()}}
    assert state.keys() == {k if k.startswith("heads.") else f"encoder.{k}" for k in expected}
    assert all(torch.equal(state[k if k.startswith("heads.") else f"encoder.{k}"], v) for k, v in expected.items())


def test_dimension_checkpoint_resumes_bit_identically_and_continues_with_from(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDKIT_DEMO_DIR", str(tmp_path / "demo"))
    torch.set_num_threads(1)
    cfg = _cfg("dimension", extra=("trainer.checkpoint_every=3", "trainer.probe_refit_steps=2"))
    full = _run(tmp_path / "full", cfg)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "cut", cfg, stop_at=5)
    assert json.loads((tmp_path / "cut" / "manifest.json").read_text())["current"]["step"] == 3
    cut = _run(tmp_path / "cut", cfg, resume=True)
    assert _losses(cut) == _losses(full) and {m for m, _ in _losses(full)} == set(MODS)
    a, b = load_tensors(full / "model.safetensors"), load_tensors(cut / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(k.startswith("heads.synth_a.") for k in a) and not any(k.startswith("heads.synth_b.") for k in a)
    arch = json.loads((full / "config.json").read_text())
    assert arch["shared_heads"] == {"synth_b": "synth_a"}
    refit = json.loads((full / "metrics" / "eval.json").read_text())[0]["metrics"]["refit_loss"]
    assert set(refit) == set(MODS), "the refitted-decoder loss is measured per modality"

    from medkit.config.received import reemit_architecture
    from medkit.hub.card import render_card
    from medkit.registry import get_host

    pushed, _ = reemit_architecture(arch, "config.json", get_host())  # what `medkit push` uploads
    assert pushed["shared_heads"] == {"synth_b": "synth_a"}
    card = render_card(repo_id="me/x", arch=pushed, manifest={}, license=None, matrices={}, heatmap=None,
                       strategy_files=[])
    assert "synth_b shares the head of synth_a" in card

    from medkit import load_pretrained

    model = load_pretrained(full)  # the Hub/export path: rebuilt from config.json alone
    assert model.heads["synth_b"] is model.heads["synth_a"]
    assert torch.equal(model.heads["synth_b"].state_dict()["decoder_pos_embed"], a["heads.synth_a.decoder_pos_embed"])

    from medkit.finetune.backbones import load_encoder

    encoder = load_encoder(full, ["patch_3d"], defaults={}, create=get_host().create)  # what fine-tuning loads
    assert all(torch.equal(v, a[f"encoder.{k}"]) for k, v in encoder.state_dict().items())

    from medkit.engine.continuation import load_origin
    from medkit.models.build import build_model

    per_modality = build_model(_cfg("modality"), create=get_host().create)  # --from into separate heads
    origin = {"ref": str(full), "path": str(full), "stages": [list(MODS)], "strategy": "joint"}
    load_origin(origin, per_modality, None, "sequential", fresh=lambda: None)
    for m in ("synth_a", "synth_b"):
        got = per_modality.heads[m].state_dict()["decoder_pos_embed"]
        assert torch.equal(got, a["heads.synth_a.decoder_pos_embed"]), f"{m} starts from the shared 3D head"
    assert per_modality.heads["synth_a"] is not per_modality.heads["synth_b"]


def test_decoders_for_another_strategy_or_value_is_refused() -> None:
    with pytest.raises(ConfigError, match="strategy 'sequential' has no decoders option.*--strategy joint"):
        _cfg("dimension", strategy="sequential")
    with pytest.raises(ConfigError, match="decoders='dimensions' is not one of modality, dimension"):
        from medkit.strategies.reference import make_joint

        make_joint("dimensions")


def test_from_between_shared_and_separate_heads_keeps_the_owner_and_reports_what_is_unused() -> None:
    from medkit.models.sharing import adopt_heads, by_dimension

    uses = {m: {"tokenizer": "patch_3d" if m != "synth_2d" else "patch_2d", "objective": "mae"} for m in MODS}
    assert by_dimension(uses) == {"synth_b": "synth_a"}
    t = {m: torch.full((2,), float(i)) for i, m in enumerate(MODS)}
    separate = {f"heads.{m}.w": v for m, v in t.items()}
    state, filled, unused = adopt_heads(separate, uses, {}, {"synth_b": "synth_a"})
    assert set(state) == {"heads.synth_a.w", "heads.synth_2d.w"} and torch.equal(state["heads.synth_a.w"], t["synth_a"])
    assert unused == {"heads.synth_b."} and filled == set(MODS), "synth_b's own head is reported unused"
    only_alias = {"heads.synth_b.w": t["synth_b"]}  # the checkpoint trained synth_b only
    state, filled, unused = adopt_heads(only_alias, {"synth_b": uses["synth_b"]}, {}, {"synth_b": "synth_a"})
    assert state == {"heads.synth_a.w": t["synth_b"]} and "synth_a" in filled and not unused
    shared = {"heads.synth_a.w": t["synth_a"], "heads.synth_2d.w": t["synth_2d"]}
    state, _, unused = adopt_heads(shared, uses, {"synth_b": "synth_a"}, {})
    assert torch.equal(state["heads.synth_b.w"], t["synth_a"]) and not unused, "separate heads start from the shared"
