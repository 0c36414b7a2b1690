"""Every hook is documented (purpose, arguments, example) with its exact signature."""

from __future__ import annotations

import inspect

from medkit.api import hookspecs

DESIGN_HOOKS = {
    "medkit_register_modalities", "medkit_register_tokenizers", "medkit_register_objectives",
    "medkit_register_strategies", "medkit_register_tasks", "medkit_register_configs",
    "medkit_register_commands", "medkit_on_run_start", "medkit_on_stage_start", "medkit_on_step_end",
    "medkit_on_stage_end", "medkit_on_run_end",
    "medkit_register_backbones",  # the released comparison backbones, a plugin kind of their own
}


def _hooks():
    return {n: f for n, f in vars(hookspecs).items() if n.startswith("medkit_") and callable(f)}


def test_every_design_hook_exists():
    assert set(_hooks()) == DESIGN_HOOKS


def test_every_hook_is_a_documented_spec():
    for name, fn in _hooks().items():
        assert hasattr(fn, "medkit_spec"), f"{name} is not marked @hookspec"
        doc = inspect.getdoc(fn) or ""
        assert len(doc.splitlines()[0]) > 10, f"{name} has no one-line purpose"
        assert "Example::" in doc, f"{name} has no example"
        params = list(inspect.signature(fn).parameters)
        assert params, f"{name} takes no arguments"
        if params:
            assert "Args:" in doc, f"{name} documents no arguments"
        for p in params:
            assert f"{p}:" in doc, f"{name} does not document argument {p!r}"
        assert "called" in doc.lower() or "observe" in doc.lower(), f"{name} does not say when it is called"
