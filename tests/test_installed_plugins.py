"""The contract over every installed plugin: every component satisfies its protocol
(medkit.api.protocols), each modality passes the ModalityContract and its demo data flows through its
default tokenizer and objective, and each strategy runs two stages on the real engine."""

from __future__ import annotations

import pytest
import torch

from medkit.registry.host import PluginHost

from medkit.testing.contracts import ModalityContract

_HOST = PluginHost()
MODALITIES = _HOST.names("modality")
STRATEGIES = _HOST.names("strategy")
TOKENIZERS = _HOST.names("tokenizer")

# one ModalityContract subclass per installed modality (pytest collects Test* classes of the module)
for _name in MODALITIES:
    globals()[f"TestInstalled_{_name}"] = type(f"TestInstalled_{_name}", (ModalityContract,), {"name": _name})


@pytest.mark.parametrize("name", TOKENIZERS)
def test_tokenizer_satisfies_the_protocol(name):
    from medkit.api.protocols import Tokenizer
    from medkit.registry import create

    tok = create("tokenizer", name, embed_dim=48)
    assert isinstance(tok, Tokenizer) and tok.embed_dim == 48 and tok.dims in (1, 2, 3)


@pytest.mark.parametrize("name", STRATEGIES)
def test_strategy_satisfies_the_protocol(name):
    from medkit.api.protocols import Strategy
    from medkit.registry import create

    assert isinstance(create("strategy", name), Strategy)


@pytest.mark.parametrize("name", _HOST.names("task"))
def test_task_satisfies_the_protocol(name):
    from medkit.api.protocols import Task
    from medkit.registry import create

    dims = 2
    task = create("task", name, dims=dims, modality="xray")
    assert isinstance(task, Task) and task.backbone_output in ("pooled", "maps")


def test_installed_plugins_are_healthy():
    broken = {r.dist: r.error for r in _HOST.records if r.error}
    assert not broken, f"broken plugins: {broken}"
    assert {"sequential", "joint", "tfs"} <= set(STRATEGIES)


@pytest.mark.parametrize("name", MODALITIES)
def test_modality_flows_through_tokenizer_and_objective(name, tmp_path_factory):
    from medkit.api.batch import collate
    from medkit.models.encoder import UniversalEncoder
    from medkit.registry import create

    modality = create("modality", name)
    assert modality.dims in (1, 2, 3)
    ds = modality.dataset(modality.demo_data(tmp_path_factory.mktemp("demo") / name), train=True)
    assert len(ds) >= 4 and len(set(ds.ids)) == len(ds.ids)
    assert ds.labels is not None, f"{name}: demo data must carry labels (probes need them)"
    tok_name = modality.default_tokenizer
    tok = create("tokenizer", tok_name, embed_dim=48)
    encoder = UniversalEncoder({tok_name: tok}, depth=1, embed_dim=48, num_heads=3)
    objective = create("objective", modality.default_objective, encoder=encoder, tokenizer=tok_name)
    batch = collate([ds.load(i, seed=i) for i in range(2)], name, tok)
    from medkit.api.protocols import Objective

    assert isinstance(objective, Objective)
    out = objective(encoder, batch, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert encoder.blocks[0].attn.qkv.weight.grad is not None


@pytest.mark.parametrize("name", STRATEGIES)
def test_strategy_runs_two_stages(name, tmp_path):
    from medkit.eval.matrices import read_matrix
    from medkit.testing.synthetic import run_synthetic

    run = run_synthetic(tmp_path / "run", name, max_steps=2, demo_dir=tmp_path / "demo")
    mods, rows = read_matrix(run / "metrics" / "matrix.csv")
    assert mods == ["synth_a", "synth_b"] and rows and None not in rows[-1]
