"""The plugin contract: ``medkit.api.__all__``, its version check, the one strategy interface, the one
host protocol, the encoder's parameter groups and the run context plugins read."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import medkit.api as api
from medkit.api.errors import PluginError
from medkit.api.version import MEDKIT_API_VERSION, check_plugin_api

INIT = Path(api.__file__)


def _type_checking_names() -> set[str]:
    """The names the ``if TYPE_CHECKING:`` block of ``medkit/api/__init__.py`` binds."""
    tree = ast.parse(INIT.read_text(encoding="utf-8"))
    block = next(n for n in tree.body if isinstance(n, ast.If) and getattr(n.test, "id", "") == "TYPE_CHECKING")
    return {a.asname or a.name for n in block.body if isinstance(n, ast.ImportFrom) for a in n.names}


def test_all_is_the_export_table_and_every_name_is_the_runtime_object() -> None:
    assert api.__all__ == sorted(api._EXPORTS), "__all__ lists exactly the re-exported names, sorted"
    assert _type_checking_names() == set(api.__all__), "type checkers see the same names"
    for name, target in api._EXPORTS.items():
        module, _, attr = target.partition(":")
        assert getattr(api, name) is getattr(importlib.import_module(module), attr or name), name


def test_the_contract_covers_what_plugins_need() -> None:
    need = {"hookimpl", "StrategySpec", "MedkitError", "Batch", "RunContext", "StageState", "BaseStrategy",
            "Strategy", "Components", "UniversalEncoder", "WindowedVolumeModality", "Image2DModality", "walk",
            "atomic_write_text", "gather_cat", "MEDKIT_API_VERSION"}
    assert need <= set(api.__all__)


def test_an_unknown_name_points_at_the_contract() -> None:
    with pytest.raises(AttributeError, match=r"medkit.api.__all__"):
        api.UniversalEncoderr  # noqa: B018 - the attribute access is the test


def test_importing_the_contract_for_hooks_stays_light() -> None:
    code = ("import sys\nfrom medkit.api import hookimpl, StrategySpec, MEDKIT_API_VERSION\n"
            "print(sorted(m for m in ('torch', 'numpy', 'medkit.models', 'medkit.data') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.parametrize("declared", [1, "1.0", MEDKIT_API_VERSION])
def test_a_plugin_of_this_major_loads(declared: object) -> None:
    check_plugin_api("toyplug", declared)


@pytest.mark.parametrize("declared, message", [
    (2, f"toyplug was written for medkit plugin API 2, but this medkit provides API {MEDKIT_API_VERSION} "
        f"(another major"),
    ("0.9", "written for medkit plugin API '0.9'"),
    ("1.99", f"needs medkit plugin API 1.99, but this medkit provides {MEDKIT_API_VERSION}; upgrade medkit"),
    ("one", "declares MEDKIT_API_VERSION = 'one'"),
    (True, "declares MEDKIT_API_VERSION = True"),
    (None, "does not declare MEDKIT_API_VERSION"),
])
def test_another_major_is_refused_in_one_line(declared: object, message: str) -> None:
    with pytest.raises(PluginError) as err:
        check_plugin_api("toyplug", declared)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_base_strategy_implements_the_one_strategy_interface() -> None:
    methods = [n for n, v in vars(api.Strategy).items() if inspect.isfunction(v) and not n.startswith("_")]
    assert {"plan", "before_stage", "loss", "after_stage", "state_dict"} <= set(methods)
    for name in methods:
        want = list(inspect.signature(getattr(api.Strategy, name)).parameters)
        assert list(inspect.signature(getattr(api.BaseStrategy, name)).parameters) == want, name
    assert isinstance(api.BaseStrategy(), api.Strategy)


def test_the_plugin_host_is_the_one_host_protocol() -> None:
    from medkit.config.store import ConfigHost
    from medkit.registry.host import PluginHost

    assert ConfigHost is api.Components
    assert isinstance(PluginHost(entry_points=[]), api.Components)


def _encoder() -> api.UniversalEncoder:
    return api.UniversalEncoder({"a": nn.Linear(2, 8), "b": nn.Linear(3, 8)}, depth=1, embed_dim=8,
                                num_heads=2, final_norm=True)


def test_the_encoder_names_its_shared_parameters() -> None:
    enc = _encoder()
    trunk = enc.shared_parameters(())
    assert "cls_token" in trunk and any(n.startswith("blocks.0.") for n in trunk) and "norm.weight" in trunk
    assert all(enc.parameter_tokenizer(n) is None for n in trunk)
    with_a = enc.shared_parameters(["a"])
    assert set(with_a) - set(trunk) == {"tokenizers.a.weight", "tokenizers.a.bias"}
    assert enc.shared_parameters() == dict(enc.named_parameters())
    assert enc.parameter_tokenizer("tokenizers.b.weight") == "b"
    linear = enc.trunk_linear_weights()
    assert linear and all(p.dim() == 2 for p in linear.values()) and set(linear) <= set(trunk)


def test_the_run_context_has_typed_stage_state_and_no_extras() -> None:
    fields = {f.name for f in dataclasses.fields(api.RunContext)}
    assert "extras" not in fields and {"stage_state", "not_evaluated", "evaluation"} <= fields
    ctx = api.RunContext(run_dir=Path("."), encoder=_encoder(), heads=nn.ModuleDict(), modalities={},
                         tokenizer_of={}, train_sets={}, eval_sets={}, train_indices={}, val_indices={},
                         stages=[["a"], ["b"]], config={}, device=torch.device("cpu"),
                         not_evaluated={"a": "no data"})
    with pytest.raises(TypeError):
        ctx.not_evaluated["b"] = "x"  # type: ignore[index] - read-only is the point
    ctx.begin_stage(api.StageState(index=1, max_steps=5, start_step=3, resumed=True))
    assert (ctx.stage_index, ctx.step, ctx.max_steps, ctx.stage) == (1, 3, 5, ["b"])
    assert ctx.stage_state.resumed
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.stage_state.resumed = False  # type: ignore[misc] - frozen is the point
    with pytest.raises(dataclasses.FrozenInstanceError, match="RunContext.encoder is fixed"):
        ctx.encoder = _encoder()
    ctx.step += 1  # the engine's step counter moves
    assert ctx.step == 4
