"""``medkit convert medcoss --to native``: folded position tables reproduce the legacy model's
eval-mode image features to 1e-5, and the strict-load error of legacy weights names the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from medkit.api.errors import CheckpointError
from medkit.registry import get_host
from medkit.storage import files as ck

pytest.importorskip("medkit_plugin_tokenizers")
pytest.importorskip("medkit_plugin_mae")

OVERRIDES = ["encoder.depth=2", "encoder.embed_dim=32", "encoder.num_heads=2", "encoder.legacy=true",
             "tokenizer.patch_2d.legacy=true", "tokenizer.patch_2d.legacy_position_rows=64",
             "tokenizer.patch_2d.base_size=[64,48]", "tokenizer.patch_3d.legacy=true",
             "tokenizer.patch_3d.legacy_position_rows=24", "tokenizer.patch_3d.base_size=[16,32,48]",
             "objective.mae.decoder_dim=16", "objective.mae.decoder_depth=1"]


def test_fold_known_answer() -> None:
    from medkit.interop.medcoss.native import fold_patch_positions

    spatial = torch.arange(12.0).view(6, 2)  # rows 0..5 of width 2
    temporal = torch.tensor([[100.0, 200.0], [7.0, 7.0]])
    table = fold_patch_positions(spatial, temporal, (2, 3), name="patch_2d")  # [1, D, 2, 3]
    assert table.shape == (1, 2, 2, 3)
    assert table[0, :, 1, 2].tolist() == [100.0 + 10.0, 200.0 + 11.0]  # row-major index 1·3 + 2 = 5
    assert table[0, :, 0, 1].tolist() == [102.0, 203.0]
    with pytest.raises(CheckpointError, match="base_size"):
        fold_patch_positions(spatial, temporal, (3, 3), name="patch_2d")


@pytest.fixture(scope="module")
def legacy_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A legacy run directory (xray 2D, ct 3D) with random, O(1) weights in every tensor."""
    from medkit.config.compose import Selection, compose, to_yaml
    from medkit.models.build import build_model

    root = tmp_path_factory.mktemp("legacy") / "run"
    root.mkdir()
    cfg = compose(Selection(modalities=["xray", "ct"], strategy="sequential", preset="tiny", overrides=OVERRIDES),
                  host=get_host())
    model = build_model(cfg, create=get_host().create)
    g = torch.Generator().manual_seed(0)
    state = {k: 0.2 * torch.randn(v.shape, generator=g) for k, v in model.state_dict().items()}
    model.modules().load_state_dict(state)
    ck.save_tensors(root / "model.safetensors", state)
    ck.atomic_write_text(root / "config.yaml", to_yaml(cfg))
    ck.atomic_write_json(root / "manifest.json", {"format": 1, "modalities": ["xray", "ct"], "finished": True})
    return {"root": root, "cfg": cfg, "model": model, "state": state}


def test_native_run_reproduces_legacy_eval_features(legacy_run: dict[str, Any], tmp_path: Path) -> None:
    from medkit.hub.hub import load_pretrained
    from medkit.interop.medcoss.native import write_native

    out = tmp_path / "native"
    folded = write_native(legacy_run["root"], out, components=get_host())
    assert folded["encoder.tokenizers.patch_2d.pos.spatial.weight"] == "encoder.tokenizers.patch_2d.pos_embed"
    native = load_pretrained(str(out), with_heads=True, create=get_host().create)
    assert not native.encoder.legacy and not any(getattr(t, "legacy", False) for t in native.encoder.tokenizers.values())
    keys = set(ck.load_tensors(out / "model.safetensors"))
    assert "encoder.tokenizers.patch_2d.pos_embed" in keys and not any(".pos.spatial." in k for k in keys)
    legacy = legacy_run["model"]
    legacy.modules().eval()
    native.modules().eval()
    g = torch.Generator().manual_seed(1)
    for tok, x in [("patch_2d", torch.randn(3, 3, 64, 48, generator=g)),  # the base grid 4 × 3
                   ("patch_3d", torch.randn(2, 1, 16, 32, 48, generator=g))]:  # 1 × 2 × 3
        with torch.no_grad():
            a = legacy.encoder(tok, x).x
            b = native.encoder(tok, x).x
        assert a.abs().max() > 0.1
        torch.testing.assert_close(b, a, atol=1e-5, rtol=0)
    # the heads come across unchanged
    assert torch.equal(native.heads["ct"].decoder_pred.weight, legacy_run["state"]["heads.ct.decoder_pred.weight"])


def test_legacy_weights_in_a_native_model_suggest_legacy_true(legacy_run: dict[str, Any]) -> None:
    from medkit.config.compose import Selection, compose
    from medkit.models.build import build_model

    native_cfg = compose(Selection(modalities=["xray", "ct"], strategy="sequential", preset="tiny",
                                   overrides=[o for o in OVERRIDES if "legacy" not in o]), host=get_host())
    model = build_model(native_cfg, create=get_host().create)
    with pytest.raises(CheckpointError, match=r"encoder\.legacy=true.*--to native"):
        ck.load_state_checked(model.modules(), legacy_run["state"], source="official", strict=True)


def test_a_native_run_is_not_converted_again(legacy_run: dict[str, Any]) -> None:
    from medkit.api.errors import ConfigError
    from medkit.interop.medcoss.native import native_config

    with pytest.raises(ConfigError, match="not a legacy run"):
        native_config({**legacy_run["cfg"], "encoder": {**legacy_run["cfg"]["encoder"], "legacy": False}})
