"""Readers (.txt, CSV, JSONL), MIMIC section extraction, cleaning, labels and errors of ``report``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medkit.api import ConfigError, DataError
from medkit_plugin_report.cleaning import clean_report, findings_and_impression, select_text
from medkit_plugin_report.demo import make_reports
from medkit_plugin_report.modality import ReportModality

MIMIC = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  Cough.

 FINDINGS:

 1. Heart size is normal.  2. No pleural
 effusion. Lungs clear.

 IMPRESSION:

 No acute process. Ok.
"""


def test_mimic_sections_known_answer() -> None:
    findings, impression = findings_and_impression(MIMIC)
    assert findings == "1. Heart size is normal.  2. No pleural\n effusion. Lungs clear."
    assert impression == "No acute process. Ok."
    # impression + " " + findings; bullets and "." split; 1-token sentences ("Ok") dropped
    cleaned = clean_report(select_text(MIMIC, "findings+impression"))
    assert cleaned.text == "no acute process heart size is normal no pleural effusion lungs clear"
    assert cleaned.num_tokens == 13  # "ok" counts towards the total although its sentence is dropped


def test_cleaning_drops_non_ascii_and_keeps_word_tokens() -> None:
    out = clean_report("Café-au-lait  opacité, r/o  PNA.\nSecond   line here.")
    assert out.text == "caf au lait opacit r o pna second line here"


def test_sections_all_and_plain_reports() -> None:
    assert select_text(MIMIC, "all") == MIMIC
    plain = "Heart size normal. No effusion."
    assert select_text(plain, "findings+impression") == plain  # no headers: whole text
    assert select_text("FINDINGS AND IMPRESSION: Clear lungs.", "findings+impression") == "Clear lungs."


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_txt_folder_with_labels(tmp_path: Path) -> None:
    _write(tmp_path / "b" / "r2.txt", "FINDINGS: Large left effusion.\nIMPRESSION: Effusion present.")
    _write(tmp_path / "a.txt", MIMIC)
    _write(tmp_path / "c.txt", "IMPRESSION: Normal.")  # 1 token: dropped
    _write(tmp_path / "labels.csv", "id,label\na.txt,normal\nb/r2.txt,abnormal\n")
    ds = ReportModality().dataset(tmp_path, train=True)
    assert ds.ids == ["a.txt", "b/r2.txt"]
    assert ds.class_names == ["abnormal", "normal"] and ds.labels == [1, 0]
    assert ds.load(1) == {"input": "effusion present large left effusion", "id": "b/r2.txt", "label": 0}
    assert ds.skipped == [("c.txt", "fewer than 3 tokens after cleaning")]
    assert ds.load(0, seed=5) == ds.load(0, seed=5) == ds.load(0)


def test_csv_and_jsonl_columns(tmp_path: Path) -> None:
    _write(tmp_path / "r.csv", 'report,dx\n"Heart normal. Lungs clear.",1\n"No acute disease here.",\n')
    rows = [{"report": "Small right pneumothorax seen.", "dx": 0}, {"report": "Mild edema noted now.", "dx": 2}]
    _write(tmp_path / "s.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    ds = ReportModality(text_column="report", label_column="dx").dataset(tmp_path, train=False)
    assert ds.ids == ["r.csv#row0", "r.csv#row1", "s.jsonl#row0", "s.jsonl#row1"]
    assert ds.texts[0] == "heart normal lungs clear"
    assert ds.labels == [1, -1, 0, 2] and ds.class_names == ["0", "1", "2"]
    single = ReportModality(text_column="report").dataset(tmp_path / "s.jsonl", train=False)
    assert single.ids == ["s.jsonl#row0", "s.jsonl#row1"] and single.labels is None


def test_missing_text_column_is_a_clear_error(tmp_path: Path) -> None:
    _write(tmp_path / "r.csv", "body\nHeart size is normal.\n")
    with pytest.raises(DataError, match=r"r\.csv.*'text'.*text_column"):
        ReportModality().dataset(tmp_path, train=False)


def test_non_utf8_raises_or_skips(tmp_path: Path) -> None:
    _write(tmp_path / "good.txt", "Heart size is normal and lungs are clear.")
    _write(tmp_path / "bad.txt", "Opacit\xe9 in the left lung base.".encode("latin-1"))
    with pytest.raises(DataError, match=r"bad\.txt.*expected UTF-8 text"):
        ReportModality().dataset(tmp_path, train=False)
    ds = ReportModality(on_error="skip").dataset(tmp_path, train=False)
    assert ds.ids == ["good.txt"]
    assert ds.skipped[0][0] == "bad.txt" and "expected UTF-8 text" in ds.skipped[0][1]


def test_bad_jsonl_line_names_the_line(tmp_path: Path) -> None:
    _write(tmp_path / "r.jsonl", '{"text": "Heart size is normal."}\n{oops\n')
    with pytest.raises(DataError, match=r"r\.jsonl line 2"):
        ReportModality().dataset(tmp_path, train=False)


def test_empty_and_missing_folders(tmp_path: Path) -> None:
    _write(tmp_path / "labels.csv", "id,label\n")
    with pytest.raises(DataError, match="empty"):
        ReportModality().dataset(tmp_path, train=False)
    with pytest.raises(DataError, match="does not exist"):
        ReportModality().dataset(tmp_path / "nope", train=False)


def test_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="sections"):
        ReportModality(sections="impression")
    with pytest.raises(ConfigError, match="on_error"):
        ReportModality(on_error="ignore")


def test_demo_is_deterministic_balanced_and_labelled(tmp_path: Path) -> None:
    assert make_reports(5, seed=0) == make_reports(5, seed=0)
    root = ReportModality().demo_data(tmp_path)
    ds = ReportModality().dataset(root, train=True)
    assert len(ds) == 200 and ds.class_names == ["abnormal", "normal"]
    assert 60 <= sum(ds.labels) <= 140  # both classes well represented
    assert all(len(t.split()) >= 3 for t in ds.texts)
    sample = (root / ds.ids[0]).read_text(encoding="utf-8")
    assert "FINDINGS:" in sample and "IMPRESSION:" in sample


def test_factory_config_builds() -> None:
    hydra_zen = pytest.importorskip("hydra_zen")
    cfg = hydra_zen.builds(ReportModality, populate_full_signature=True)
    m = hydra_zen.instantiate(cfg, text_column="report", label_column="dx")
    assert (m.text_column, m.label_column, m.sections) == ("report", "dx", "findings+impression")
