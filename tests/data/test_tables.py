"""Known answers for the side tables of 2D modalities."""

from __future__ import annotations

from pathlib import Path

import pytest

from medkit.api.errors import DataError
from medkit.data.tables import read_table


def test_read_table_by_path_and_by_id(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("Path,id,Label\n./a/x.png,,cat\n,y,dog\n")
    table = read_table(tmp_path / "labels.csv", ["label"])
    assert table.get("a/x.png") == "cat" and table.get("b/y.dcm") == "dog" and table.get("z.png") is None
    (tmp_path / "bad.csv").write_text("name,label\nx,1\n")
    with pytest.raises(DataError, match=r"bad\.csv.*'path' \(or 'id'\)"):
        read_table(tmp_path / "bad.csv", ["label"])
