"""The step log: a torn last line is dropped (warning with file and byte offset) and cut before the
next append; a corrupt line before the end is an error naming the file and the line."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from medkit.api.errors import CheckpointError
from medkit.storage import jsonl
from medkit.storage.jsonl import append_jsonl, complete_size, read_jsonl, truncate_jsonl


def _log(path: Path, n: int, tail: str = "") -> bytes:
    data = "".join(json.dumps({"step": i, "loss": 1.0 / i}) + "\n" for i in range(1, n + 1)) + tail
    path.write_text(data)
    return data.encode()


def test_torn_last_line_is_dropped_with_file_and_offset(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "steps.jsonl"
    good = _log(path, 3)
    path.write_bytes(good + b'{"step": 4, "lo')
    assert [r["step"] for r in read_jsonl(path)] == [1, 2, 3]
    assert f"{path}: dropped a torn last line at byte {len(good)}" in caplog.text
    assert path.read_bytes().endswith(b'"lo'), "reading never rewrites the file"


def test_a_complete_file_reads_silently(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "steps.jsonl"
    _log(path, 2)
    assert len(read_jsonl(path)) == 2 and "torn" not in caplog.text
    assert read_jsonl(tmp_path / "absent.jsonl") == []


@pytest.mark.parametrize("bad", ['{"step": 2, "lo', "not json", "[1, 2]"])
def test_corrupt_line_in_the_middle_names_file_and_line(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "steps.jsonl"
    path.write_text(json.dumps({"step": 1}) + "\n" + bad + "\n" + json.dumps({"step": 3}) + "\n")
    with pytest.raises(CheckpointError) as err:
        read_jsonl(path)
    assert f"{path}: line 2 " in str(err.value) and "JSONDecodeError" not in type(err.value).__name__


def test_append_cuts_a_torn_tail_first(tmp_path: Path) -> None:
    path = tmp_path / "steps.jsonl"
    good = _log(path, 2)
    path.write_bytes(good + b'{"step": 3, "loss": 0.3')  # killed mid-append
    append_jsonl(path, [{"step": 3, "loss": 0.25}, {"step": 4, "loss": 0.2}])
    lines = path.read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3, 4]
    assert path.read_bytes().startswith(good)


def test_complete_size_reads_backwards_across_chunks(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    head = json.dumps({"pad": "x" * 200_000}) + "\n"
    path.write_text(head + "y" * 150_000)  # a torn tail longer than one read chunk
    assert complete_size(path) == len(head)
    path.write_text("z" * 10)
    assert complete_size(path) == 0


def test_truncate_keeps_records_byte_for_byte(tmp_path: Path) -> None:
    path = tmp_path / "steps.jsonl"
    path.write_text('{"step": 1, "loss": 1.0}\n{"step":2,"loss":0.5}\n{"step": 3}\n{"step": 4')
    assert truncate_jsonl(path, lambda r: r["step"] <= 2) == 2
    assert path.read_text() == '{"step": 1, "loss": 1.0}\n{"step":2,"loss":0.5}\n'
    assert truncate_jsonl(tmp_path / "absent.jsonl", lambda r: True) == 0


def test_a_failed_append_names_the_path_and_keeps_earlier_records(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "steps.jsonl"
    good = _log(path, 2)

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(jsonl.os, "fsync", full)
    with pytest.raises(CheckpointError) as err:
        append_jsonl(path, [{"step": 3}])
    msg = str(err.value)
    assert str(path) in msg and "No space left on device" in msg and "ENOSPC" in msg
    assert "records already in steps.jsonl are intact" in msg and "\n" not in msg
    assert path.read_bytes() == good, "the partial append is undone"


def test_complete_lines_never_glues_loses_or_repeats_a_row(tmp_path: Path, caplog) -> None:
    path = tmp_path / "steps.jsonl"
    rows = b'{"stage": 1, "step": 1}\n{"stage": 1, "step": 2}\n{"stage": 2, "step": 1}\n'
    assert jsonl.complete_lines(path, rows) == rows
    with caplog.at_level("WARNING"):
        healed = jsonl.complete_lines(path, rows + b'{"stage": 2, "step": 2, "lo')
    assert healed == rows and "held stage 2 step 2" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        healed = jsonl.complete_lines(path, rows, before={"stage": 1, "step": 2, "loss": 0.1})
    assert healed == rows.split(b"\n", 1)[0] + b"\n", "rows from the first new one on are not kept twice"
    assert "2 row(s) from stage 1 step 2 on were already logged" in caplog.text
    torn_middle = rows.replace(b'"step": 2}', b'"st', 1)
    with pytest.raises(CheckpointError, match=r"steps\.jsonl: line 2 is not valid JSON"):
        jsonl.complete_lines(path, torn_middle)
