"""The mlm objective satisfies the objective contract (with the text_1d tokenizer)."""

from __future__ import annotations

from typing import Any

import pytest

from medkit.testing import ObjectiveContract, get_host

if "text_1d" not in get_host().names("tokenizer"):  # pragma: no cover - depends on the environment
    pytest.skip("medkit-plugin-tokenizers (text_1d) is not installed", allow_module_level=True)


class TestMLM(ObjectiveContract):
    name = "mlm"
    tokenizer = "text_1d"

    def make_samples(self) -> list[dict[str, Any]]:
        return [{"input": "no acute cardiopulmonary process the heart size is normal", "id": "a"},
                {"input": "small left pleural effusion with basilar atelectasis", "id": "b"},
                {"input": "endotracheal tube terminates above the carina", "id": "c"}]
