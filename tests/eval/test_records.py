"""Evaluation records and matrices: one 1-based numbering, strict JSON, n/a cells, old runs still read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medkit.api.errors import CheckpointError
from medkit.eval.matrices import load_matrix, matrix_csv, matrix_markdown, read_matrix, run_matrices
from medkit.eval.records import (evaluation_record, evaluations_before, json_safe, read_evaluations,
                                 stage_results, write_evaluations, write_json)

MODS = ["ct", "mri"]
#: what today's engine writes: 0-based "stage", NaN for a modality without held-out data
OLD = [{"stage": 0, "modalities": ["ct"], "metrics": {"pretext_loss": {"ct": 0.5}}},
       {"stage": 1, "modalities": ["mri"], "metrics": {"pretext_loss": {"ct": 0.75, "mri": float("nan")}}}]


def _strict(text: str) -> object:
    def refuse(token: str) -> None:
        raise AssertionError(f"bare {token} in JSON")

    return json.loads(text, parse_constant=refuse)


def test_record_counts_stages_from_one_and_moves_nan_to_unavailable() -> None:
    rec = evaluation_record(0, ["ct"], {"pretext_loss": {"ct": 0.5, "mri": float("nan")}},
                            {"knn_acc": {"ct": "no labelled held-out samples"}})
    assert rec["after_stage"] == 1 and "stage" not in rec
    assert rec["metrics"] == {"pretext_loss": {"ct": 0.5}}
    assert rec["unavailable"]["pretext_loss"] == {"mri": "the evaluation gave no finite value"}
    assert rec["unavailable"]["knn_acc"] == {"ct": "no labelled held-out samples"}


def test_old_zero_based_eval_json_reads_as_one_based(tmp_path: Path) -> None:
    path = tmp_path / "eval.json"
    path.write_text(json.dumps(OLD))  # json.dumps writes the bare NaN today's engine writes
    assert "NaN" in path.read_text()
    records = read_evaluations(path)
    assert [r["after_stage"] for r in records] == [1, 2]
    assert stage_results(records) == {1: {"pretext_loss": {"ct": 0.5}}, 2: {"pretext_loss": {"ct": 0.75}}}
    assert [r["after_stage"] for r in evaluations_before(OLD, 1)] == [1]
    # the same rows whichever layout the records are in
    assert matrix_csv(OLD, MODS, "pretext_loss") == matrix_csv(records, MODS, "pretext_loss")
    with pytest.raises(CheckpointError, match="neither 'after_stage' nor 'stage'"):
        read_evaluations(_write(tmp_path / "bad.json", [{"metrics": {}}]))


def _write(path: Path, obj: object) -> Path:
    path.write_text(json.dumps(obj))
    return path


def test_written_eval_json_is_strict_and_matches_the_matrix_numbering(tmp_path: Path) -> None:
    write_evaluations(tmp_path, OLD, MODS)
    data = _strict((tmp_path / "eval.json").read_text())
    assert [r["after_stage"] for r in data] == [1, 2]
    matrix = load_matrix(tmp_path / "matrix.csv")
    assert matrix.after == [r["after_stage"] for r in data], "eval.json and matrix.csv count stages alike"
    assert matrix.rows == [[0.5, None], [0.75, None]]
    assert matrix.na == [[False, False], [False, True]], "mri after stage 2 is n/a, not blank"
    assert (tmp_path / "matrix.csv").read_text().splitlines()[2] == "2,mri,0.750000,n/a"


def test_json_safe_and_write_json_never_write_nan(tmp_path: Path) -> None:
    obj = {"a": float("nan"), "b": [1.0, float("inf"), (2.0, -float("inf"))], "c": {"d": 3}}
    assert json_safe(obj) == {"a": None, "b": [1.0, None, [2.0, None]], "c": {"d": 3}}
    write_json(tmp_path / "x.json", obj)
    assert _strict((tmp_path / "x.json").read_text())["a"] is None


def test_matrix_reader_accepts_old_nan_cells_and_refuses_other_layouts(tmp_path: Path) -> None:
    (tmp_path / "metrics").mkdir()
    path = tmp_path / "metrics" / "matrix_knn_acc.csv"
    path.write_text("after_stage,stage_modalities,ct,mri\n1,ct,0.5,\n2,mri,nan,0.875\n")
    m = run_matrices(tmp_path)["knn_acc"]
    assert m.metric == "knn_acc" and m.after == [1, 2] and m.stages == [["ct"], ["mri"]]
    assert m.rows == [[0.5, None], [None, 0.875]] and m.na == [[False, False], [True, False]]
    assert read_matrix(path) == (MODS, m.rows)
    assert matrix_markdown(m) == ("| after stage | trained on | ct | mri |\n|---|---|---:|---:|\n"
                                  "| 1 | ct | 0.5000 | – |\n| 2 | mri | n/a | 0.8750 |")
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(CheckpointError, match="not a medkit stage matrix"):
        load_matrix(tmp_path / "bad.csv")
    (tmp_path / "worse.csv").write_text("after_stage,stage_modalities,ct\n1,ct,fast\n")
    with pytest.raises(CheckpointError, match="line 2: cell 'fast'"):
        load_matrix(tmp_path / "worse.csv")
