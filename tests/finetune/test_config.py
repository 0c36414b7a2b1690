"""Composition of fine-tuning configs: defaults, recipes (Table 1), sources, overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from medkit.api.errors import CheckpointError, ConfigError
from medkit.finetune.config import FinetuneSelection, compose_finetune, load_recipe, recipe_names
from medkit.registry import get_host

#: Table 1: learning rate, batch size, iterations.
TABLE_1 = {"pubmed20k": (2e-4, 64, 14065), "chestxr": (5e-5, 32, 35840), "qata": (1e-4, 16, 25000),
           "ricord": (1e-5, 8, 9600), "lits": (1e-4, 2, 25000), "vs": (1e-4, 2, 25000), "la": (5e-5, 2, 25000),
           "nch": (1e-4, 32, 24990), "glas": (1e-4, 4, 25000)}


def test_all_nine_recipes_carry_table_1() -> None:
    assert set(TABLE_1) <= set(recipe_names(get_host()))
    for name, (lr, bs, iters) in TABLE_1.items():
        r = load_recipe(name, get_host())
        assert (r["lr"], r["batch_size"], r["iterations"]) == (lr, bs, iters), name
        assert r["optimizer"] == "AdamW"
    assert load_recipe("pudmed20k", get_host())["name"] == "pubmed20k"  # the reference's spelling, an alias
    assert [load_recipe(n, get_host())["num_classes"] for n in ("pubmed20k", "chestxr", "ricord", "nch")] == [5, 3, 2, 9]


def test_defaults_follow_spec_8_1() -> None:
    cfg = compose_finetune(FinetuneSelection(task="classification", modality="xray", scratch=True), host=get_host())
    assert cfg["optim"]["weight_decay"] == 1e-4 and cfg["optim"]["clip_grad"] == 12.0
    assert cfg["optim"]["poly_power"] == 0.9
    assert cfg["run"]["dims"] == 2 and cfg["run"]["tokenizer"] == "patch_2d"
    assert cfg["encoder"]["preset"] == "base" and cfg["tokenizer"]["patch_2d"]["patch_size"] == 16
    assert cfg["task"]["head"] == "auto" and cfg["backbone"]["name"] == "medkit"


def test_recipe_fills_sections_and_overrides_win() -> None:
    cfg = compose_finetune(FinetuneSelection(recipe="lits", scratch=True, preset="tiny", max_steps=7,
                                             overrides=["optim.lr=3e-4"]), host=get_host())
    assert cfg["run"]["task"] == "segmentation" and cfg["run"]["modality"] == "ct" and cfg["run"]["dims"] == 3
    assert cfg["task"]["patch_size"] == [64, 192, 192] and cfg["task"]["multilabel"] is True
    assert cfg["task"]["num_classes"] == 3 and cfg["trainer"]["batch_size"] == 2
    assert cfg["trainer"]["max_steps"] == 7 and cfg["optim"]["lr"] == 3e-4
    text = compose_finetune(FinetuneSelection(recipe="pudmed20k", scratch=True), host=get_host())
    assert text["tokenizer"]["text_1d"]["max_length"] == 112 and text["task"]["head"] == "two_layer"
    assert text["task"]["fc_norm"] is False and text["trainer"]["max_steps"] == 14065
    ricord = compose_finetune(FinetuneSelection(recipe="ricord", scratch=True), host=get_host())
    assert ricord["task"]["input_size"] == [64, 192, 192] and ricord["task"]["clip"] == [-1024.0, 325.0]


def test_from_run_copies_its_encoder(pretrained_run: Path) -> None:
    cfg = compose_finetune(FinetuneSelection(task="segmentation", modality="ct", source=str(pretrained_run)), host=get_host())
    assert cfg["encoder"]["depth"] == 2 and cfg["encoder"]["embed_dim"] == 48
    assert cfg["tokenizer"]["patch_3d"]["base_size"] == [16, 192, 192]
    assert Path(cfg["run"]["from"]) == pretrained_run.resolve()


def test_selection_errors(pretrained_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="choose one of --from"):
        compose_finetune(FinetuneSelection(task="classification", modality="xray", scratch=True,
                                           source=str(pretrained_run)), host=get_host())
    with pytest.raises(ConfigError, match="drop it with --backbone"):
        compose_finetune(FinetuneSelection(task="classification", modality="xray", source=str(pretrained_run),
                                           backbone="timm:vit_tiny_patch16_224"), host=get_host())
    with pytest.raises(ConfigError, match="is a segmentation recipe"):
        compose_finetune(FinetuneSelection(task="classification", recipe="lits", scratch=True), host=get_host())
    with pytest.raises(ConfigError, match="--modality"):
        compose_finetune(FinetuneSelection(task="classification", scratch=True, data=str(tmp_path)), host=get_host())
    with pytest.raises(ConfigError, match="did you mean task.head"):
        compose_finetune(FinetuneSelection(task="classification", modality="xray", scratch=True,
                                           overrides=["task.haed=one_layer"]), host=get_host())
    with pytest.raises(CheckpointError):
        compose_finetune(FinetuneSelection(task="classification", modality="xray", source=str(tmp_path)), host=get_host())
    (tmp_path / "config.yaml").write_text("run:\n  task: classification\n  modality: xray\n")
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="is a fine-tuning run"):
        compose_finetune(FinetuneSelection(task="classification", modality="xray", source=str(tmp_path)), host=get_host())


def test_modality_is_inferred_from_a_one_modality_run_or_the_demo(pretrained_run: Path, tmp_path: Path) -> None:
    """``--from`` a run of one modality needs no ``--modality``; demo data with nothing named is xray."""
    import shutil

    from medkit.config.compose import to_yaml
    from medkit.engine.engine import load_config

    with pytest.raises(ConfigError, match="pre-trained on synth_a, synth_2d: choose"):
        compose_finetune(FinetuneSelection(task="classification", source=str(pretrained_run)), host=get_host())
    one = Path(shutil.copytree(pretrained_run, tmp_path / "one"))
    cfg = load_config(one)
    cfg["run"]["modalities"] = ["xray"]
    (one / "config.yaml").write_text(to_yaml(cfg))
    got = compose_finetune(FinetuneSelection(task="classification", source=str(one)), host=get_host())
    assert got["run"]["modality"] == "xray" and got["run"]["from"] == str(one.resolve())
    demo = compose_finetune(FinetuneSelection(task="classification", scratch=True), host=get_host())
    assert demo["run"]["modality"] == "xray" and demo["run"]["dims"] == 2
