"""The model card is honest about its data and licence: each stage's data source (the built-in synthetic
demo data flagged as such), training and held-out sample counts per modality from ``metrics/split.json``,
and the licence the publisher chose (none claimed by default)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest


def _card(run: Path, staging: Path, **kw: object) -> tuple[object, str]:
    from huggingface_hub import ModelCard

    from medkit.hub.publish import prepare_push
    from medkit.registry import get_host

    files = prepare_push(run, staging, repo_id="alice/tiny", host=get_host(), **kw)  # type: ignore[arg-type]
    return ModelCard.load(files["README.md"]), files["README.md"].read_text()


def _rows(text: str) -> dict[str, list[str]]:
    section = text.split("## Training data", 1)[1].split("\n## ", 1)[0]
    return {cells[1]: cells for line in section.splitlines() if line.startswith("| ") and "---" not in line
            for cells in [[c.strip() for c in line.strip("|").split("|")]] if cells[0].isdigit()}


def test_demo_data_is_flagged_with_counts_and_no_licence_is_claimed(synthetic_run: Path, tmp_path: Path) -> None:
    split = json.loads((synthetic_run / "metrics" / "split.json").read_text())["modalities"]
    assert all(entry["demo"] is True for entry in split.values()), "run_synthetic reads the demo folder"
    card, text = _card(synthetic_run, tmp_path / "staging")
    assert card.data.license is None and "license:" not in text.split("---", 2)[1]
    assert "Licence: none stated" in text and "apache" not in text
    rows = _rows(text)
    assert set(rows) == {"synth_a", "synth_b"}
    for m, cells in rows.items():
        assert "built-in synthetic demo data" in cells[2]
        counts = split[m]["samples"]
        assert cells[3].startswith(f"{counts['train']} (") and cells[4].startswith(f"{counts['val']} (")
        assert counts["train"] > 0 and counts["val"] > 0
    assert "not meant for any medical use" in text


def test_the_licence_chosen_is_the_cards(synthetic_run: Path, tmp_path: Path) -> None:
    card, text = _card(synthetic_run, tmp_path / "staging", license="cc-by-4.0")
    assert card.data.license == "cc-by-4.0" and "Licence: `cc-by-4.0`" in text


def test_your_own_data_is_not_called_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medkit.api.progress import NullReporter
    from medkit.config.compose import Selection, compose
    from medkit.data.demo import is_demo_path
    from medkit.engine.engine import Engine
    from medkit.testing.synthetic import use_synthetic_host

    monkeypatch.setenv("MEDKIT_DEMO_DIR", str(tmp_path / "demo"))
    host = use_synthetic_host()
    mine = Path(host.create("modality", "synth_a").demo_data(tmp_path / "mine"))  # a folder of the user's
    assert not is_demo_path(mine) and is_demo_path(tmp_path / "demo" / "x")
    cfg = compose(Selection(modalities=["synth_a", "synth_b"], strategy="sequential", preset="tiny", max_steps=2,
                            data={"synth_a": str(mine), "synth_b": None},
                            overrides=["encoder.depth=1", "encoder.embed_dim=48", "encoder.num_heads=3",
                                       "trainer.batch_size=4", "trainer.eval_batches=1"]), host=host)
    run = tmp_path / "run"
    Engine(cfg, run, components=host, reporter=NullReporter()).run()
    split = json.loads((run / "metrics" / "split.json").read_text())["modalities"]
    assert split["synth_a"]["demo"] is False and split["synth_b"]["demo"] is True
    _, text = _card(run, tmp_path / "staging")
    rows = _rows(text)
    assert "publisher's own data" in rows["synth_a"][2] and "demo" not in rows["synth_a"][2]
    assert "built-in synthetic demo data" in rows["synth_b"][2]
    assert str(mine) not in text, "the folder stays local"


def test_a_run_without_counts_says_so(run_copy: Path, tmp_path: Path) -> None:
    path = run_copy / "metrics" / "split.json"
    split = json.loads(path.read_text())
    for entry in split["modalities"].values():
        entry.pop("samples"), entry.pop("demo")
    target = path.resolve()
    target.unlink()
    target.write_text(json.dumps(split))
    _, text = _card(run_copy, tmp_path / "staging")
    row = _rows(text)["synth_a"]
    assert row[2].startswith("not recorded") and row[3].startswith("? (")


def test_push_offers_no_default_licence() -> None:
    from click.testing import CliRunner

    from medkit.cli.hub_cmd import push

    option = next(p for p in push.params if p.name == "license_")
    assert option.default is None
    assert "--license" in CliRunner().invoke(push, ["--help"]).output
    shutil.which("medkit")  # the command is installed alongside (nothing more to check offline here)
