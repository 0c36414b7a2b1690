"""Known-answer tests of forgetting, BWT and FWT."""

from __future__ import annotations

import json

import pytest

from medkit.eval.metrics import baseline_from_rows, continual_metrics, own_stages

MODS = ["a", "b", "c"]
STAGES = [["a"], ["b"], ["c"]]
# higher is better; the entries above the diagonal are values before a modality's own stage
ACC = [[0.9, 0.3, 0.2],
       [0.95, 0.8, 0.4],
       [0.6, 0.5, 0.9]]
BASE = {"a": 0.1, "b": 0.2, "c": 0.3}


def test_accuracy_matrix_known_answers() -> None:
    m = continual_metrics("knn_acc", MODS, STAGES, ACC, baseline=BASE, baseline_name="tfs")
    # first-value: a 0.9-0.6=0.3, b 0.8-0.5=0.3; max-value: a max(0.9,0.95)-0.6=0.35, b 0.3
    assert m.forgetting_first_per == pytest.approx({"a": 0.3, "b": 0.3})
    assert m.forgetting_max_per == pytest.approx({"a": 0.35, "b": 0.3})
    assert m.forgetting_first == pytest.approx(0.3)
    assert m.forgetting_max == pytest.approx(0.325)
    # BWT = ((0.6-0.9) + (0.5-0.8)) / 2
    assert m.bwt == pytest.approx(-0.3)
    # FWT = ((R[1,b]-b_b) + (R[2,c]-b_c)) / 2 = ((0.3-0.2) + (0.4-0.3)) / 2
    assert m.fwt == pytest.approx(0.1)
    assert m.fwt_baseline == "tfs"
    assert m.final == {"a": 0.6, "b": 0.5, "c": 0.9}
    assert m.final_mean == pytest.approx(2.0 / 3.0)


def test_fwt_without_baseline_omits_b_and_says_so() -> None:
    m = continual_metrics("knn_acc", MODS, STAGES, ACC)
    assert m.fwt == pytest.approx((0.3 + 0.4) / 2)
    assert "omitted" in (m.fwt_baseline or "")


def test_loss_matrix_signs_positive_means_forgot() -> None:
    loss = [[1.0, None, None],
            [0.8, 2.0, None],
            [1.5, 2.4, 0.7]]
    m = continual_metrics("pretext_loss", MODS, STAGES, loss)
    assert not m.higher_is_better
    # first-value: a 1.5-1.0=0.5, b 2.4-2.0=0.4; max-value (best = lowest): a 1.5-0.8=0.7, b 0.4
    assert m.forgetting_first == pytest.approx(0.45)
    assert m.forgetting_max == pytest.approx(0.55)
    assert m.bwt == pytest.approx(-0.45)
    assert m.fwt is None and "before its own stage" in m.reasons["fwt"]


def test_joint_single_stage_is_null_with_reason() -> None:
    m = continual_metrics("pretext_loss", MODS, [MODS], [[1.0, 2.0, 3.0]])
    assert m.forgetting_first is None and m.forgetting_max is None and m.bwt is None and m.fwt is None
    assert "one stage" in m.reasons["forgetting"]
    assert m.final_mean == pytest.approx(2.0)


def test_multi_modality_stage_uses_first_stage_that_trained_it() -> None:
    assert own_stages(MODS, [["a", "b"], ["c"]]) == {"a": 0, "b": 0, "c": 1}
    rows = [[0.9, 0.8, 0.5], [0.7, 0.8, 0.9]]
    m = continual_metrics("knn_acc", MODS, [["a", "b"], ["c"]], rows)
    assert m.forgetting_first_per == pytest.approx({"a": 0.2, "b": 0.0})
    assert m.fwt == pytest.approx(0.5)


def test_baseline_from_rows_takes_last_value_of_each_column() -> None:
    assert baseline_from_rows(MODS, [[0.1, None, None], [0.2, 0.3, None]]) == {"a": 0.2, "b": 0.3}


def test_fwt_with_baseline_missing_the_later_modalities_is_null_with_reason() -> None:
    m = continual_metrics("knn_acc", MODS, STAGES, ACC, baseline={"a": 0.1})
    assert m.fwt is None and "baseline" in m.reasons["fwt"]


def test_a_modality_without_values_is_excluded_with_a_note_not_nan_for_all() -> None:
    nan = float("nan")
    acc = [[0.9, 0.3, nan],
           [0.95, nan, 0.4],
           [0.6, nan, 0.9]]  # b has no held-out data: NaN cells (today: forgetting and BWT NaN)
    m = continual_metrics("knn_acc", MODS, STAGES, acc)
    assert m.forgetting_first == pytest.approx(0.3) and m.bwt == pytest.approx(-0.3)
    assert set(m.forgetting_first_per) == {"a"} and "b" in m.excluded and "left out" in m.excluded["b"]
    assert m.final == {"a": 0.6, "b": None, "c": 0.9} and m.final_mean == pytest.approx(0.75)
    assert m.fwt == pytest.approx((0.3 + 0.4) / 2)  # R[1,b] and R[2,c] exist
    assert "NaN" not in json.dumps(m.to_dict())


def test_losses_of_different_objectives_are_never_averaged() -> None:
    loss = [[1.0, None, None],
            [0.8, 6.0, None],
            [1.5, 6.4, 0.7]]
    objectives = {"a": "mae", "b": "mlm", "c": "mae"}
    m = continual_metrics("pretext_loss", MODS, STAGES, loss, objectives=objectives)
    assert m.final_mean is None and "different quantity" in m.reasons["final_mean"]
    assert m.forgetting_first is None and m.bwt is None and "mlm" in m.reasons["forgetting"]
    assert m.forgetting_first_per == pytest.approx({"a": 0.5, "b": 0.4})  # per modality, still there
    assert m.units["b"].startswith("MLM") and m.units["a"].startswith("MAE") and not m.comparable
    same = continual_metrics("pretext_loss", MODS, STAGES, loss, objectives={k: "mae" for k in MODS})
    assert same.final_mean == pytest.approx((1.5 + 6.4 + 0.7) / 3) and same.forgetting_first == pytest.approx(0.45)
    accuracy = continual_metrics("knn_acc", MODS, STAGES, ACC, objectives=objectives)
    assert accuracy.final_mean == pytest.approx(2.0 / 3.0), "accuracies share one unit whatever the objective"


def test_lower_is_better_is_decided_in_one_place() -> None:
    from medkit.eval.metric_info import higher_is_better, metric_info

    assert not higher_is_better("pretext_loss") and higher_is_better("knn_acc") and higher_is_better("linear_acc")
    assert not higher_is_better("val_error") and not higher_is_better("hd95") and higher_is_better("dice")
    assert metric_info("knn_acc").value_range == (0.0, 1.0) and metric_info("pretext_loss").per_objective
    assert continual_metrics("val_error", ["a"], [["a"]], [[0.1]]).higher_is_better is False
