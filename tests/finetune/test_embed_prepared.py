"""``medkit embed`` on a ``medkit prepare`` folder: the features of the folder it was prepared from
where the stored samples are exact, and a one-line refusal when it was prepared with other options."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("litdata")


@pytest.fixture(scope="module")
def xray_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The X-ray demo folder, an exact (float32, region) prepared copy of it at the run's options,
    and one prepared at another input size."""
    from medkit.data.prepare import prepare
    from medkit.registry import create

    root = tmp_path_factory.mktemp("embed-prepared")
    demo = Path(create("modality", "xray").demo_data(root / "demo"))
    prepare(create("modality", "xray"), demo, root / "exact", part_size=8, store="float32", canvas="region")
    prepare(create("modality", "xray", input_size=32), demo, root / "small", part_size=8)
    return {"demo": demo, "exact": root / "exact", "small": root / "small"}


def _points(medkit: Any, run: Path, data: Path, out: Path) -> list[dict[str, Any]]:
    res = medkit("embed", str(run), "--modality", "xray", "--data", f"xray={data}", "--max-samples", "6",
                 "--method", "pca", "--out", str(out))
    assert res.exit_code == 0, res.output
    return json.loads(out.with_suffix(".json").read_text())["points"]


def test_embed_reads_a_prepared_folder_as_the_folder_it_was_prepared_from(medkit, pretrained_run: Path,
                                                                          xray_data: dict[str, Path],
                                                                          tmp_path: Path) -> None:
    """Before, embed handed a prepared folder to the plugin's folder reader, which found no image in it."""
    from medkit.testing.synthetic import use_synthetic_host

    use_synthetic_host()
    folder = _points(medkit, pretrained_run, xray_data["demo"], tmp_path / "folder.png")
    prepared = _points(medkit, pretrained_run, xray_data["exact"], tmp_path / "prepared.png")
    assert len(folder) == 6
    assert [p["id"] for p in prepared] == [p["id"] for p in folder]
    # the 2D map is PCA of the pooled features: equal points are equal features, to the bit
    assert [(p["x"], p["y"]) for p in prepared] == [(p["x"], p["y"]) for p in folder]


def test_embed_refuses_a_folder_prepared_with_another_input_size(pretrained_run: Path,
                                                                 xray_data: dict[str, Path], tmp_path: Path) -> None:
    from click.testing import CliRunner

    from medkit.cli.main import cli
    from medkit.testing.synthetic import use_synthetic_host

    use_synthetic_host()
    res = CliRunner().invoke(cli, ["embed", str(pretrained_run), "--modality", "xray", "--data",
                                   f"xray={xray_data['small']}", "--method", "pca", "--out", str(tmp_path / "t.png")])
    assert res.exit_code == 1
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "modality.xray.input_size=32" in errors[0] and "224" in errors[0], res.output
    assert not (tmp_path / "t.png").exists()
