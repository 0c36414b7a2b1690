"""The comparison backbones (DeSD, PCRLv2 2D/3D, Path_DINO, UniMiSS): released key layouts load with no
missing or unexpected key, forward shapes, ``medkit convert <name>``, refusals, and the "×" error."""

from __future__ import annotations

import fractions
import pathlib
from pathlib import Path
from typing import Any

import pytest
import torch

from medkit.api.errors import CheckpointError, ConfigError
from medkit.registry import get_host

NAMES = ["desd", "pcrlv2-2d", "pcrlv2-3d", "path-dino", "unimiss"]


@pytest.mark.parametrize("name", NAMES)
def test_the_released_layout_loads_every_tensor_and_drops_only_named_pretext_parts(
        name: str, external: Any, releases: dict[str, Path]) -> None:
    from medkit.finetune.external import build_external, family

    fam = family(name, get_host())
    released = external.released_state(name)  # the same values write_release stored (same seed)
    backbone = build_external(f"{name}:{releases[name]}", fam.dims[0], components=get_host())
    report = backbone.key_report
    own = backbone.weights_module().state_dict()
    assert report.coverage == 1.0 and sorted(report.converted) == sorted(own)
    assert report.released == len(released) == len(report.converted) + len(report.dropped)
    assert set(report.dropped) <= set(released) and all(report.dropped.values())
    entry = external.released_keys()[name]["entry"]
    kept, _ = fam.map_keys({entry: released} if entry else released, "x")
    assert sorted(kept) == sorted(own)
    for key, value in own.items():  # every tensor is the released one, not the initialisation
        assert torch.equal(value, kept[key].to(value.dtype)), key
    if name in ("pcrlv2-2d", "path-dino"):
        assert not report.dropped  # the encoder-only releases map one to one


@pytest.mark.parametrize("name", NAMES)
def test_a_tiny_forward_gives_the_expected_shapes(name: str, external: Any) -> None:
    from medkit.finetune.external import build_external

    for dims, shape, width, channels in external.FORWARD[name]:
        backbone = build_external(name, dims, pretrained=False, components=get_host()).eval()
        x = torch.randn(2, *shape)
        with torch.no_grad():
            pooled = backbone.pooled(x)
            maps = backbone.feature_maps(x, backbone.default_blocks())
        assert pooled.shape == (2, width) and backbone.embed_dim == width and torch.isfinite(pooled).all()
        assert [m.shape[1] for m in maps] == channels and all(m.ndim == dims + 2 for m in maps)
        sizes = [m.shape[2:].numel() for m in maps]
        assert sizes == sorted(sizes, reverse=True) or name == "path-dino"  # deeper stages are coarser


@pytest.mark.slow
def test_convert_writes_safetensors_that_load_the_same_weights(medkit, releases: dict[str, Path],
                                                               tmp_path: Path) -> None:
    from medkit.finetune.external import build_external

    out = tmp_path / "unimiss.safetensors"
    res = medkit("convert", "unimiss", str(releases["unimiss"]), str(out))
    assert res.exit_code == 0, res.output
    assert "267 UniMiSS tensors (100% of the model) from 481 released" in res.output
    assert "pre-training decoder" in res.output and "DINO projection head" in res.output
    a = build_external(f"unimiss:{releases['unimiss']}", 3, components=get_host()).weights_module().state_dict()
    b = build_external(f"unimiss:{out}", 3, components=get_host()).weights_module().state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(CheckpointError, match="holds 'unimiss' weights, not desd"):
        build_external(f"desd:{out}", 3, components=get_host())
    res = medkit("convert", "unimiss", str(releases["unimiss"]), str(out))
    assert res.exit_code == 1 and "pass --force" in res.output


class _Touch:
    """Unpickling this would create a file: the proof that a refused file was never executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return pathlib.Path.touch, (self.marker,)


def test_a_checkpoint_pickling_another_class_is_refused_unexecuted(external: Any, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from medkit.finetune.external import build_external
    from medkit.storage import torchfile

    state = external.released_state("pcrlv2-3d")
    marker = tmp_path / "executed"
    torch.save({"state_dict": state, "opt": _Touch(marker)}, tmp_path / "evil.pt")
    # pickle names Path.touch as pathlib.Path.touch or through builtins.getattr, depending on what is imported
    with pytest.raises(CheckpointError, match=r"pickles (pathlib|builtins\.getattr)\S*, which the released "
                                              r"PCRLv2 \(LUNA\) checkpoint .*never unpickles"):
        build_external(f"pcrlv2-3d:{tmp_path / 'evil.pt'}", 3, components=get_host())
    monkeypatch.setattr(torchfile, "unsafe_globals", lambda p: [])  # the weights-only unpickler refuses it too
    with pytest.raises(CheckpointError, match="refusing to load it"):
        build_external(f"pcrlv2-3d:{tmp_path / 'evil.pt'}", 3, components=get_host())
    assert not marker.exists()
    torch.save({"teacher": external.released_state("path-dino"), "args": fractions.Fraction(1, 3)}, tmp_path / "f.pth")
    with pytest.raises(CheckpointError, match=r"fractions\.Fraction"):
        build_external(f"path-dino:{tmp_path / 'f.pth'}", 2, components=get_host())


def test_a_file_of_another_layout_is_refused_by_key_name(external: Any, tmp_path: Path) -> None:
    from medkit.finetune.external import build_external

    state = external.released_state("pcrlv2-3d")
    torch.save({"state_dict": {**state, "up_tr64.extra.weight": torch.zeros(2)}}, tmp_path / "a.pt")
    build_external(f"pcrlv2-3d:{tmp_path / 'a.pt'}", 3, components=get_host())  # a decoder key: dropped by the up_tr rule
    torch.save({"state_dict": {**state, "classifier.weight": torch.zeros(2)}}, tmp_path / "b.pt")
    with pytest.raises(CheckpointError, match="unexpected key 'classifier.weight'"):
        build_external(f"pcrlv2-3d:{tmp_path / 'b.pt'}", 3, components=get_host())
    del state["down_tr512.ops.1.bn1.running_var"]
    torch.save({"state_dict": state}, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match=r"missing PCRLv2 \(LUNA\) tensor down_tr512.ops.1.bn1.running_var"):
        build_external(f"pcrlv2-3d:{tmp_path / 'c.pt'}", 3, components=get_host())
    torch.save({"model": state}, tmp_path / "d.pt")
    with pytest.raises(CheckpointError, match="no PCRLv2 \\(LUNA\\) state dict.*'model'"):
        build_external(f"pcrlv2-3d:{tmp_path / 'd.pt'}", 3, components=get_host())
    two_d = external.released_state("pcrlv2-2d")
    two_d["conv1.weight"] = torch.zeros(64, 1, 7, 7)  # a 1-channel variant is not the release
    torch.save({"state_dict": two_d}, tmp_path / "e.pt")
    with pytest.raises(CheckpointError, match=r"conv1.weight has shape \(64, 1, 7, 7\)"):
        build_external(f"pcrlv2-2d:{tmp_path / 'e.pt'}", 2, components=get_host())


def test_desd_accepts_the_teacher_without_the_module_prefix(external: Any, tmp_path: Path) -> None:
    from medkit.finetune.external import build_external

    state = {k[len("module."):]: v for k, v in external.released_state("desd").items()}  # main_DeSD_ssl.py's
    torch.save({"teacher": state, "epoch": 300}, tmp_path / "desd.pth")
    assert build_external(f"desd:{tmp_path / 'desd.pth'}", 3, components=get_host()).key_report.coverage == 1.0


@pytest.mark.parametrize("name,dims,msg", [("desd", 2, "DeSD is a 3D model; ChestXR is 2D"),
                                           ("pcrlv2-3d", 2, r"PCRLv2 \(LUNA\) is a 3D model; ChestXR is 2D"),
                                           ("path-dino", 3, "Path_DINO is a 2D model; ChestXR is 3D"),
                                           ("unimiss", 1, "UniMiSS is a 2D and 3D model; ChestXR is 1D")])
def test_a_dimension_the_model_cannot_take_is_named(name: str, dims: int, msg: str) -> None:
    from medkit.finetune.external import check_dims

    with pytest.raises(ConfigError, match=msg):
        check_dims(name, dims, "ChestXR", get_host())


def test_the_cli_gives_one_line_for_a_2d_dataset_and_a_3d_backbone(medkit, releases: dict[str, Path]) -> None:
    res = medkit("finetune", "--recipe", "chestxr", "--backbone", f"desd:{releases['desd']}", "--max-steps", "1")
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "desd" in lines[0] and "DeSD is a 3D model; ChestXR is 2D" in lines[0], res.output
    res = medkit("finetune", "--task", "classification", "--modality", "xray", "--backbone", "desd",
                 "--max-steps", "1")
    assert res.exit_code == 1 and "DeSD is a 3D model; the xray data is 2D" in res.output


def test_inputs_too_small_for_the_architecture_are_a_clear_error() -> None:
    from medkit.finetune.external import build_external

    with pytest.raises(ConfigError, match=r"at least \[16, 64, 64\]"):
        build_external("desd", 3, pretrained=False, components=get_host()).pooled(torch.zeros(1, 1, 16, 32, 32))
    with pytest.raises(ConfigError, match=r"at least \[64, 64\]"):
        build_external("unimiss", 2, pretrained=False, components=get_host()).pooled(torch.zeros(1, 3, 32, 32))


def test_a_released_model_without_its_plugin_names_the_distribution(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backbones are a plugin kind: without medkit-plugin-backbones the error says where to get them."""
    from medkit.finetune.external import build_external
    from medkit.registry.host import PluginHost

    monkeypatch.setenv("MEDKIT_DISABLE_PLUGINS", "medkit-plugin-backbones,backbones")
    with pytest.raises(ConfigError, match=r"backbone 'desd' comes from medkit-plugin-backbones|"
                                          r"pip install medkit-plugin-backbones"):
        build_external("desd:/nowhere/DeSD_Res50.pth", 3, components=PluginHost())
