"""The doc commands that compare, convert and prepare, and every documented refusal (each must print
the ``error:`` line its page shows), as written; see tests/test_doc_commands.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from .test_doc_commands import GROUPS, fake_hub, refusal_commands, run_as_written


@pytest.mark.slow
def test_the_data_doc_commands_and_the_refusals_run_as_written(tmp_path: Path) -> None:
    refusals = refusal_commands()
    assert len(refusals) >= 5, "the pages show their refusals"
    with fake_hub(tmp_path) as env:
        run_as_written([*GROUPS["data"], *refusals], tmp_path, env)
