"""Modality collision, measured (:mod:`medkit.eval.separability`), and the chance level recorded beside
every probe accuracy of a run (``eval.json``'s ``chance``, the report's table)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medkit.api.errors import ConfigError
from medkit.eval.separability import separability


def test_features_identical_across_modalities_score_chance_and_separate_ones_score_one() -> None:
    g = torch.Generator().manual_seed(0)
    same = torch.randn(20, 16, generator=g, dtype=torch.float64)
    collided = separability({"xray": same, "pathology": same.clone()})
    assert collided["chance"] == 0.5 and collided["queries"] == 20
    assert collided["knn_acc"] == pytest.approx(0.5) and collided["linear_acc"] == pytest.approx(0.5), \
        "one feature vector for two modalities: no probe can beat chance"
    offset = torch.zeros(16, dtype=torch.float64)
    offset[0] = 10.0
    eye = torch.eye(16, dtype=torch.float64)
    apart = separability({"xray": 0.1 * same + 3 * eye[0], "pathology": 0.1 * same.flip(0) + 3 * eye[1]})
    assert apart["knn_acc"] == 1.0 and apart["linear_acc"] == 1.0, "two clusters in different directions"
    uneven = separability({"a": same[:12], "b": same[:4] + offset}, linear_steps=0)
    assert uneven["chance"] == 0.75 and "linear_acc" not in uneven, "majority-modality rate of the 8 queries"
    with pytest.raises(ConfigError, match="two or more modalities"):
        separability({"a": same})


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medkit.testing.synthetic import run_synthetic

    root = tmp_path_factory.mktemp("sep")
    torch.set_num_threads(1)
    return run_synthetic(root / "r", "joint", ("synth_a", "synth_b", "synth_2d"), max_steps=4,
                         overrides=("strategy.decoders=dimension", "trainer.val_fraction=0.5",
                                    "trainer.probe_linear_steps=20"), demo_dir=root / "demo")


def test_modality_separability_of_a_run_measures_each_dimension_with_two_modalities(run: Path) -> None:
    from medkit.eval.separability import modality_separability
    from medkit.testing.synthetic import use_synthetic_host

    host = use_synthetic_host()
    got = modality_separability(run, components=host, linear_steps=20)
    assert got["split"] == "held-out" and set(got["groups"]) == {"patch_3d"}, "2D has one modality: nothing to tell"
    g = got["groups"]["patch_3d"]
    split = json.loads((run / "metrics" / "split.json").read_text())["modalities"]
    assert g["samples"] == {m: split[m]["samples"]["val"] for m in ("synth_a", "synth_b")}, "held-out samples only"
    queries = [n // 2 for n in g["samples"].values()]
    assert g["queries"] == sum(queries) and g["chance"] == max(queries) / sum(queries)
    assert 0.0 <= g["knn_acc"] <= 1.0 and 0.0 <= g["linear_acc"] <= 1.0
    again = modality_separability(run, components=host, linear_steps=20)
    assert again == got, "deterministic"


def test_every_probe_accuracy_has_its_chance_level_in_the_record_and_the_report(run: Path) -> None:
    from medkit.eval.matrices import matrix_markdown, run_matrices
    from medkit.eval.probes import chance_level
    from medkit.testing.synthetic import SyntheticDataset  # noqa: F401 - the labels below are its i % 2

    records = json.loads((run / "metrics" / "eval.json").read_text())
    split = json.loads((run / "metrics" / "split.json").read_text())["modalities"]
    for record in records:
        for metric in ("knn_acc", "linear_acc"):
            chance = record["chance"][metric]
            assert set(chance) == set(record["metrics"][metric])
            for m, rate in chance.items():
                labels = [int(s.rsplit("/", 1)[1]) % 2 for s in split[m]["val"]]  # sample i has label i % 2
                assert rate == chance_level(labels) and 0.5 <= rate <= 1.0
    table = matrix_markdown(run_matrices(run)["knn_acc"])
    assert table.count(", chance 0.") == 3, table
    assert "chance" not in matrix_markdown(run_matrices(run)["pretext_loss"]), "a loss has no chance level"
    from medkit.eval.metrics import run_metrics

    cl = run_metrics(run)
    assert cl["knn_acc"].chance == records[-1]["chance"]["knn_acc"] and cl["pretext_loss"].chance == {}
    assert cl["linear_acc"].to_dict()["chance"] == records[-1]["chance"]["linear_acc"], "metrics.json carries it"


def test_chance_is_kept_for_present_values_only_and_survives_normalising() -> None:
    from medkit.eval.probes import chance_level
    from medkit.eval.records import evaluation_record, normalise_record

    assert chance_level([0, 0, 0, 1]) == 0.75 and chance_level(torch.tensor([2, 1])) == 0.5
    rec = evaluation_record(0, ["a"], {"knn_acc": {"a": 0.9, "b": float("nan")}}, None, {"knn_acc": {"a": 8, "b": 8}},
                            chance={"knn_acc": {"a": 0.625, "b": 0.5}})
    assert rec["chance"] == {"knn_acc": {"a": 0.625}}
    assert normalise_record(rec)["chance"] == rec["chance"]
    assert "chance" not in evaluation_record(0, ["a"], {"pretext_loss": {"a": 1.0}})
