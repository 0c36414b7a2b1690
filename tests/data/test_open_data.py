"""One way to open a modality's data for a command: where it is, then its folder or prepared shards."""

from __future__ import annotations

from pathlib import Path

import pytest

from medkit.api.errors import ConfigError
from medkit.data.open_data import data_location, open_data, open_eval_dataset
from medkit.registry import create


def test_a_missing_folder_is_refused_naming_who_the_modality_and_the_fix(tmp_path: Path) -> None:
    mod = create("modality", "xray")
    with pytest.raises(ConfigError) as err:
        data_location(mod, "xray", tmp_path / "gone", who="medkit embed")
    msg = str(err.value)
    assert msg.startswith("medkit embed:") and "'xray'" in msg and str(tmp_path / "gone") in msg
    assert "--data xray=DIR" in msg and "\n" not in msg
    with pytest.raises(ConfigError, match="pass data="):
        data_location(mod, "xray", tmp_path / "gone", who="modality separability", hint="pass data={...}")
    assert data_location(mod, "xray", "s3://bucket/xray/", who="x") == "s3://bucket/xray"  # streamed, as given
    assert data_location(mod, "xray", f"file://{tmp_path}", who="x") == str(tmp_path.resolve())


def test_no_folder_is_the_demo_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDKIT_DEMO_DIR", str(tmp_path))
    ds, where = open_eval_dataset(create("modality", "xray"), "xray", None, who="x")
    assert Path(where) == tmp_path / "xray" and len(ds) > 0 and ds.train is False


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("litdata")
    from medkit.data.prepare import prepare

    root = tmp_path_factory.mktemp("open-data")
    demo = Path(create("modality", "xray").demo_data(root / "demo"))
    prepare(create("modality", "xray", input_size=32), demo, root / "p32", part_size=16)
    return {"demo": demo, "p32": root / "p32"}


def test_a_prepared_folder_opens_from_its_shards_checked_against_the_options(prepared: dict[str, Path]) -> None:
    from medkit.data.groups import GroupOptions
    from medkit.data.prepared_dataset import PreparedDataset

    mod = create("modality", "xray", input_size=32)
    train, plain = open_data(mod, prepared["p32"], train=True), open_data(mod, prepared["p32"])
    assert isinstance(train, PreparedDataset) and train.train and not plain.train
    folder = open_data(mod, prepared["demo"])
    assert not isinstance(folder, PreparedDataset) and folder.ids == plain.ids
    assert float((plain.load(0)["input"] - folder.load(0)["input"]).abs().max()) < 1e-4
    with pytest.raises(ConfigError, match=r"modality\.xray\.input_size=32"):
        open_data(create("modality", "xray"), prepared["p32"])
    with pytest.raises(ConfigError, match="trainer.group_folder_level=2"):
        open_data(mod, prepared["p32"], groups=GroupOptions(folder_level=2))


def test_data_preview_of_a_prepared_folder_takes_the_config_it_was_prepared_with(prepared: dict[str, Path],
                                                                                 tmp_path: Path) -> None:
    """The preview command had no overrides: a folder prepared at another input size could only
    be refused, with advice (set modality.xray.input_size) it could not follow."""
    from click.testing import CliRunner

    from medkit.cli.main import cli

    args = ["data", "preview", "--modality", "xray", "--data", str(prepared["p32"]), "--samples", "2", "--out",
            str(tmp_path)]
    refused = CliRunner().invoke(cli, args)
    errors = [line for line in refused.output.splitlines() if line.startswith("error:")]
    assert refused.exit_code == 1 and len(errors) == 1 and "modality.xray.input_size=32" in errors[0]
    done = CliRunner().invoke(cli, [*args, "modality.xray.input_size=32"])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "preview_xray.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_python_api_preprocesses_a_prepared_folder_as_its_source(prepared: dict[str, Path]) -> None:
    """``load_pretrained(...).preprocess(folder)`` handed a prepared folder to the folder reader."""
    from medkit.finetune.pretrained import PretrainedModel

    mod = create("modality", "xray", input_size=32)
    shards, folder = PretrainedModel._read(prepared["p32"], mod), PretrainedModel._read(prepared["demo"], mod)
    assert [s["id"] for s in shards] == [s["id"] for s in folder] and len(shards) > 1
    assert max(float((a["input"] - b["input"]).abs().max()) for a, b in zip(shards, folder)) < 1e-4
    with pytest.raises(ConfigError, match=r"modality\.xray\.input_size=32"):
        PretrainedModel._read(prepared["p32"], create("modality", "xray"))
