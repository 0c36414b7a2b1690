"""The doc commands that need ``runs/ct`` (README's CT run and what the pages do with it: resume, a
saved config, a new stage, report, embed, push and a stage from the Hub), as written; see
tests/test_doc_commands.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from .test_doc_commands import GROUPS, fake_hub, run_as_written


@pytest.mark.slow
def test_the_ct_run_doc_commands_run_as_written_in_minutes(tmp_path: Path) -> None:
    with fake_hub(tmp_path) as env:
        run_as_written(GROUPS["ct-run"], tmp_path, env)
