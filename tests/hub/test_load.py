"""References, rebuilding through the registry only, and refusing bad checkpoints."""

from __future__ import annotations

from medkit.registry import get_host

import json
from pathlib import Path

import pytest
import torch

from medkit.storage.files import load_tensors
from medkit.api.errors import CheckpointError, ConfigError, PluginError


def _edit_config(run: Path, edit) -> None:  # noqa: ANN001
    path = run / "config.json"
    arch = json.loads(path.read_text())
    edit(arch)
    path.write_text(json.dumps(arch))


def test_parse_reference() -> None:
    from medkit.hub.hub import Reference, parse_reference

    assert parse_reference("hf-hub:alice/ct-tiny") == Reference("hf-hub", repo_id="alice/ct-tiny")
    assert parse_reference("hf-hub:alice/ct-tiny@v1.2") == Reference("hf-hub", "alice/ct-tiny", "v1.2")
    assert parse_reference("hf-hub:alice/ct@refs/pr/1").revision == "refs/pr/1"
    assert parse_reference("local-dir:runs/a") == Reference("local", path="runs/a")
    assert parse_reference(Path("runs/a")) == Reference("local", path="runs/a")
    for bad in ("hf-hub:alice", "hf-hub:alice/ct@", "hf-hub:../x/y", "hf-hub:a/b/c", "local-dir:"):
        with pytest.raises(ConfigError):
            parse_reference(bad)


def test_resolve_local_references(synthetic_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medkit.hub.hub import resolve_checkpoint

    assert resolve_checkpoint(synthetic_run) == synthetic_run.resolve()
    assert resolve_checkpoint(f"local-dir:{synthetic_run}") == synthetic_run.resolve()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="for a Hub repository write hf-hub:alice/ct"):
        resolve_checkpoint("alice/ct")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"not a medkit checkpoint \(config.json, model.safetensors missing"):
        resolve_checkpoint("local-dir:empty")
    with pytest.raises(CheckpointError, match="not a directory"):
        resolve_checkpoint(synthetic_run / "model.safetensors")


def test_pull_a_local_run_copies_only_the_checkpoint(synthetic_run: Path, tmp_path: Path) -> None:
    from medkit.hub.hub import pull

    out = pull(f"local-dir:{synthetic_run}", to=tmp_path / "copy")
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    matrices = sorted(f"metrics/{p.name}" for p in (synthetic_run / "metrics").glob("matrix*.csv"))
    assert files == sorted(["config.json", "config.yaml", "manifest.json", "model.safetensors", "metrics/eval.json",
                            "strategy/state.json", "strategy/state.safetensors", *matrices])
    assert "metrics/steps.jsonl" not in files and not any(f.startswith("checkpoint/") for f in files)
    assert (out / "model.safetensors").read_bytes() == (synthetic_run / "model.safetensors").read_bytes()
    with pytest.raises(ConfigError, match="is the checkpoint itself"):
        pull(str(synthetic_run), to=synthetic_run)


def test_load_pretrained_rebuilds_the_run_exactly(synthetic_run: Path) -> None:
    from medkit.hub.hub import load_pretrained

    saved = load_tensors(synthetic_run / "model.safetensors")
    model = load_pretrained(f"local-dir:{synthetic_run}", create=get_host().create)
    state = model.state_dict()
    assert set(state) == set(saved) and all(torch.equal(state[k], saved[k]) for k in saved)
    assert not model.encoder.training and sorted(model.heads) == ["synth_a", "synth_b"]
    assert model.tokenizer_of == {"synth_a": "patch_3d", "synth_b": "patch_3d"}

    bare = load_pretrained(synthetic_run, with_heads=False, create=get_host().create)
    assert len(bare.heads) == 0
    assert all(torch.equal(v, saved[k]) for k, v in bare.state_dict().items())


def test_a_missing_plugin_names_the_distribution(run_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medkit.hub.hub import load_pretrained
    from medkit.registry import reset_host

    import importlib.metadata as md

    from medkit.registry.host import PluginHost

    eps = [ep for ep in md.entry_points(group="medkit") if ep.name != "mae"]
    eps.append(md.EntryPoint(name="synthetic", value="medkit.testing.synthetic", group="medkit"))
    reset_host(PluginHost(eps))  # as if medkit-plugin-mae were not installed
    with pytest.raises(PluginError, match=r"objective 'mae'.*pip install medkit-plugin-mae"):
        load_pretrained(run_copy, create=get_host().create)
    monkeypatch.setenv("MEDKIT_DISABLE_PLUGINS", "medkit-plugin-mae")
    reset_host()
    with pytest.raises(PluginError, match=r"objective 'mae' comes from medkit-plugin-mae, which is installed "
                                          r"but disabled by MEDKIT_DISABLE_PLUGINS; remove medkit-plugin-mae"):
        load_pretrained(run_copy, create=get_host().create)
    monkeypatch.delenv("MEDKIT_DISABLE_PLUGINS")
    reset_host()
    _edit_config(run_copy, lambda a: a["uses"]["synth_a"].update(tokenizer="patch_4d"))
    with pytest.raises(PluginError, match=r"config.json needs.*unknown tokenizer 'patch_4d'"):
        load_pretrained(run_copy, create=get_host().create)


def test_a_target_in_the_config_is_refused(run_copy: Path) -> None:
    from medkit.hub.hub import load_pretrained

    _edit_config(run_copy, lambda a: a["tokenizer"]["patch_3d"].update(_target_="os.system"))
    with pytest.raises(ConfigError, match=r"config\.json: tokenizer\.patch_3d\._target_ is a _target_ key"):
        load_pretrained(run_copy, create=get_host().create)


def test_architecture_mismatch_names_the_first_key_and_shapes(run_copy: Path) -> None:
    from medkit.hub.hub import load_pretrained

    def wider(arch: dict) -> None:
        arch["encoder"]["embed_dim"] = 96
        arch["trunk"]["embed_dim"] = 96

    _edit_config(run_copy, wider)
    with pytest.raises(CheckpointError, match=r"encoder\.cls_token has shape \(1, 1, 48\) but the model "
                                              r"built from the config expects \(1, 1, 96\)"):
        load_pretrained(run_copy, create=get_host().create)


def test_inconsistent_config_is_refused(run_copy: Path) -> None:
    from medkit.hub.hub import load_pretrained

    _edit_config(run_copy, lambda a: a["encoder"].update(embed_dim=96))
    with pytest.raises(CheckpointError, match="inconsistent: encoder resolves to embed_dim=96 but trunk says"):
        load_pretrained(run_copy, create=get_host().create)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupted_weights_are_a_checkpoint_error(run_copy: Path, damage: str) -> None:
    from medkit.hub.hub import load_pretrained

    path = run_copy / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\x93NUMPY not safetensors" * 40)
    with pytest.raises(CheckpointError, match="not a valid safetensors file.*corrupted or truncated"):
        load_tensors(path)
    with pytest.raises(CheckpointError, match="model.safetensors is not a valid safetensors file"):
        load_pretrained(run_copy, create=get_host().create)


def test_load_pretrained_weights_into_a_model_with_a_new_modality(synthetic_run: Path) -> None:
    """What ``medkit run --from`` needs: old weights in, new tokenizer and head left fresh."""
    from medkit.hub.hub import load_pretrained_weights, pretrained_config
    from medkit.models.build import build_model

    cfg = pretrained_config(synthetic_run)
    cfg["run"]["uses"] = {"synth_b": cfg["run"]["uses"]["synth_b"],
                          "synth_2d": {"tokenizer": "patch_2d", "objective": "mae"}}
    cfg["tokenizer"]["patch_2d"] = {}
    model = build_model(cfg, create=get_host().create)
    fresh_2d = {k: v.clone() for k, v in model.state_dict().items() if ".patch_2d." in k or "synth_2d" in k}
    report = load_pretrained_weights(model, synthetic_run)
    assert report == {"new": ["encoder.tokenizers.patch_2d.", "heads.synth_2d."], "dropped": ["heads.synth_a."]}
    saved, state = load_tensors(synthetic_run / "model.safetensors"), model.state_dict()
    for k, v in state.items():
        if k in fresh_2d:
            assert torch.equal(v, fresh_2d[k])
        else:
            assert torch.equal(v, saved[k]), k


def test_the_top_level_convenience_hands_the_installed_plugins_in(synthetic_run: Path) -> None:
    """What a model card tells readers to run: ``medkit.load_pretrained(ref)``."""
    import medkit

    model = medkit.load_pretrained(f"local-dir:{synthetic_run}")
    assert not model.encoder.training and set(model.heads) == {"synth_a", "synth_b"}
