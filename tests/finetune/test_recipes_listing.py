"""Recipes as a reader sees them: ``--list-recipes`` / ``--recipe list`` give one canonical name each
with task, modality, classes and data set; a recipe run on demo data says which classes it trained."""

from __future__ import annotations

import json
from pathlib import Path

from medkit.finetune.recipes import list_recipes, recipe_classes_check
from medkit.registry import get_host

TINY = ["encoder.depth=2", "encoder.embed_dim=48", "encoder.num_heads=3"]
QUICK = ["trainer.batch_size=4", "trainer.val_every=2", "trainer.checkpoint_every=2"]


def _rows(output: str) -> dict[str, str]:
    lines = [ln for ln in output.splitlines() if ln.strip()]
    assert lines[0].split()[:2] == ["recipe", "task"]
    return {ln.split()[0]: ln for ln in lines[1:]}


def test_list_recipes_one_name_each_with_task_modality_classes_and_data(medkit) -> None:
    res = medkit("finetune", "--list-recipes")
    assert res.exit_code == 0, res.output
    rows = _rows(res.output)
    assert set(rows) == {"pubmed20k", "chestxr", "qata", "ricord", "lits", "vs", "la", "nch", "glas"}
    assert "pudmed20k" in rows["pubmed20k"] and "alias" in rows["pubmed20k"]  # listed once, as an alias
    chest = rows["chestxr"].split()
    assert chest[1:3] == ["classification", "xray"] and "covid," in chest and "ChestXR" in rows["chestxr"]
    assert rows["lits"].split()[1:3] == ["segmentation", "ct"] and "liver," in rows["lits"] and "LiTS" in rows["lits"]
    again = medkit("finetune", "--recipe", "list")
    assert again.exit_code == 0 and again.output == res.output


def test_alias_still_accepted_and_listed_under_its_recipe() -> None:
    infos = {r.name: r for r in list_recipes(get_host())}
    assert infos["pubmed20k"].aliases == ["pudmed20k"] and "pudmed20k" not in infos
    assert infos["pubmed20k"].modality == "report" and len(infos["pubmed20k"].classes) == 5


def test_recipe_classes_check_names_what_was_trained() -> None:
    cfg = {"run": {"recipe": "chestxr"}}
    demo = recipe_classes_check(cfg, ["disk", "square", "stripes"], demo=True, host=get_host())
    assert demo is not None and demo["demo_data"] and not demo["classes_match"]
    assert "built-in demo data" in demo["note"] and "disk, square, stripes" in demo["note"]
    other = recipe_classes_check(cfg, ["a", "b", "c"], demo=False, host=get_host())
    assert other is not None and "the data hold a, b, c" in other["note"]
    same = recipe_classes_check(cfg, ["covid", "normal", "pneumonia"], demo=False, host=get_host())
    assert same is not None and same["classes_match"] and "note" not in same
    assert recipe_classes_check({"run": {"recipe": None}}, ["x"], demo=True, host=get_host()) is None


def test_recipe_on_demo_data_says_and_records_the_classes_it_trained(medkit, tmp_path: Path) -> None:
    run = tmp_path / "ft"
    res = medkit("finetune", "--recipe", "chestxr", "--scratch", "--preset", "tiny", "--max-steps", "2",
                 "--run-dir", str(run), "task.input_size=[32,32]", *TINY, *QUICK)
    assert res.exit_code == 0, res.output
    note = [ln for ln in res.output.splitlines() if ln.startswith("note:")]
    assert len(note) == 1 and "demo data" in note[0] and "disk, square, stripes" in note[0]
    recorded = json.loads((run / "metrics.json").read_text())["notes"]["recipe"]
    assert recorded["trained_classes"] == ["disk", "square", "stripes"]
    assert recorded["recipe_classes"] == ["covid", "normal", "pneumonia"] and recorded["demo_data"] is True
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["notes"]["recipe"]["trained_classes"] == recorded["trained_classes"]
