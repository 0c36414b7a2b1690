"""Fixtures of the rehearsal tests: a fresh plugin host per test and a small live run context."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest
import torch


@pytest.fixture(autouse=True)
def _fresh_host(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory):
    from medkit.testing import reset_host

    monkeypatch.delenv("MEDKIT_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("MEDKIT_DISABLE_PLUGINS", raising=False)
    monkeypatch.setenv("MEDKIT_DEMO_DIR", str(tmp_path_factory.getbasetemp() / "demo"))
    reset_host()
    yield
    reset_host()


class IdsDataset:
    """Stand-in dataset: only ``ids`` (and an optional ``root``) are read by the buffer code."""

    def __init__(self, ids: list[str], root: str | None = None) -> None:
        self.ids = list(ids)
        self.root = root

    def __len__(self) -> int:
        return len(self.ids)


@pytest.fixture
def make_ctx(tmp_path: Path) -> Callable[..., Any]:
    """``make_ctx(tokenizer="patch_2d", ids={modality: ids}, stage=[...])`` → a real ``RunContext``
    with a tiny encoder (width 32, depth 2), no heads, and id-only datasets."""
    from medkit.api import RunContext, StageState, UniversalEncoder
    from medkit.testing import create

    def build(tokenizer: str = "patch_2d", ids: dict[str, list[str]] | None = None,
              stage: list[str] | None = None, resumed: bool = False, seed: int = 0,
              data: dict[str, str] | None = None) -> RunContext:
        torch.manual_seed(seed)
        kw: dict[str, Any] = {"base_size": (32, 32)} if tokenizer == "patch_2d" else {}
        if tokenizer == "text_1d":
            kw = {"max_length": 12}
        tok = create("tokenizer", tokenizer, embed_dim=32, **kw)
        encoder = UniversalEncoder({tokenizer: tok}, depth=2, embed_dim=32, num_heads=2)
        ids = ids or {"img": [f"img/{i}" for i in range(4)]}
        if data is not None:
            (tmp_path / "manifest.json").write_text(json.dumps({"data": data}))
        sets = {m: IdsDataset(v) for m, v in ids.items()}
        names = list(ids)
        stage = stage or names[-1:]
        previous = [m for m in names if m not in stage]
        stages = [[m] for m in previous] + [stage]
        ctx = RunContext(run_dir=tmp_path, encoder=encoder, heads=torch.nn.ModuleDict(),
                         modalities={}, tokenizer_of={m: tokenizer for m in names}, train_sets=sets,
                         eval_sets=sets, train_indices={m: list(range(len(v))) for m, v in ids.items()},
                         val_indices={m: [] for m in names}, stages=stages, config={},
                         device=torch.device("cpu"), stage_index=len(stages) - 1, batch_size=4)
        ctx.begin_stage(StageState(index=len(stages) - 1, resumed=resumed))
        return ctx

    return build
