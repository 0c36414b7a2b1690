"""Typed config used, not only validated: each default of a typed section lives in its schema alone,
and the runtime reads the typed objects built from the composed config."""

from __future__ import annotations

import ast
import copy
import dataclasses
from pathlib import Path

import pytest

from medkit.api.errors import ConfigError
from medkit.config.schemas import SCHEMAS
from medkit.config.typed import RunSettings, encoder_config, optim_config, trainer_config, typed_section
from medkit.finetune.config import (FT_BACKBONE, FT_OPTIM, FT_TRAINER, FinetuneBackboneConfig, FinetuneOptimConfig,
                                    FinetuneSettings, FinetuneTrainerConfig)
from medkit.strategies.base import BaseStrategy

REPO = Path(__file__).resolve().parents[2]
#: The runtime and the CLI: where a section's value is read.
SCANNED = ("core", "cli")
#: The fine-tuning defaults before they became dataclasses (behaviour must not change).
OLD_FINETUNE = {
    "optim": {"lr": 1e-4, "weight_decay": 1e-4, "betas": [0.9, 0.999], "clip_grad": 12.0, "poly_power": 0.9},
    "trainer": {"max_steps": 1000, "batch_size": 8, "eval_batch_size": None, "val_every": 100,
                "checkpoint_every": 100, "log_every": 10, "num_workers": 0, "device": "auto",
                "max_eval_samples": None, "allow_pretraining_overlap": False},
    "backbone": {"name": "medkit", "pretrained": False, "features": 256, "in_chans": None},
}


def schema_defaults() -> dict[str, list[object]]:
    """Every typed key → its default(s) in the schemas (pre-training's and fine-tuning's sections,
    and the strategies' ``min_current_fraction``, whose one place is :class:`BaseStrategy`)."""
    out: dict[str, list[object]] = {}
    schemas = [*SCHEMAS.values(), FinetuneTrainerConfig, FinetuneOptimConfig, FinetuneBackboneConfig]
    for schema in schemas:
        for name, value in dataclasses.asdict(schema()).items():
            out.setdefault(name, []).append(value)
    out.setdefault("min_current_fraction", []).append(BaseStrategy.min_current_fraction)
    return out


def _same(a: object, b: object) -> bool:
    return type(a) is type(b) and a == b or (isinstance(a, (int, float)) and not isinstance(a, bool)
                                            and isinstance(b, (int, float)) and not isinstance(b, bool) and a == b)


def restated_defaults(root: Path, dirs: tuple[str, ...] = SCANNED) -> list[str]:
    """``file:line  code`` of every read that restates a typed key's default beside it:
    ``x.get("log_every", 10)`` or ``getattr(x, "min_current_fraction", 0.5)`` where the literal is the
    schema's default of that key (a display placeholder such as ``.get("preset", "?")`` is not one)."""
    defaults = schema_defaults()
    found = []
    for top in dirs:
        for path in sorted((root / top).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            for node in ast.walk(ast.parse(text)):
                if not isinstance(node, ast.Call) or len(node.args) < 2:
                    continue
                func = node.func
                if isinstance(func, ast.Attribute) and func.attr == "get" and len(node.args) == 2:
                    key, default = node.args
                elif isinstance(func, ast.Name) and func.id == "getattr" and len(node.args) == 3:
                    key, default = node.args[1:]
                else:
                    continue
                if not (isinstance(key, ast.Constant) and key.value in defaults):
                    continue
                try:
                    value = ast.literal_eval(default)
                except ValueError:
                    continue  # a fallback to another value (``sel.preset``), not a restated default
                if any(_same(value, d) for d in defaults[key.value]):
                    found.append(f"{path.relative_to(root)}:{node.lineno}  {ast.get_source_segment(text, node)}")
    return sorted(found)


def test_no_typed_default_is_restated_in_the_runtime() -> None:
    found = restated_defaults(REPO)
    assert not found, ("defaults restated beside a read (read the typed object of medkit.config.typed / "
                       "medkit.finetune.config instead; its schema is the one place a default lives):\n  "
                       + "\n  ".join(found))


def test_the_scan_finds_what_the_runtime_used_to_restate(tmp_path: Path) -> None:
    """The check has teeth: the reads of commit 796c25f (before the typed objects) are found."""
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "engine.py").write_text(
        'every = int(tr.get("checkpoint_every", 50))\n'
        'keep = int(cfg["trainer"].get(\n    "keep_checkpoints", 2))\n'
        'f = getattr(self.strategy, "min_current_fraction", 0.5)\n'
        'power = float(oc.get("poly_power", 0.9))\n'
        "amp = enc_cfg.get('legacy', False)\n"
        'shown = enc.get("preset", "?")\n'  # a display placeholder, not the schema's default
        'preset = arch["encoder"].get("preset", sel.preset)\n', encoding="utf-8")  # a fallback value
    found = restated_defaults(tmp_path, ("core",))
    assert sorted(f.split("  ")[0] for f in found) == [f"core/engine.py:{n}" for n in (1, 2, 4, 5, 6)]


def test_finetune_defaults_are_the_previous_ones() -> None:
    assert FT_OPTIM == OLD_FINETUNE["optim"] and list(FT_OPTIM) == list(OLD_FINETUNE["optim"])
    assert FT_TRAINER == OLD_FINETUNE["trainer"] and list(FT_TRAINER) == list(OLD_FINETUNE["trainer"])
    assert FT_BACKBONE == OLD_FINETUNE["backbone"] and list(FT_BACKBONE) == list(OLD_FINETUNE["backbone"])


def test_typed_objects_take_the_config_values_and_the_schema_defaults() -> None:
    cfg = {"trainer": {"max_steps": 7, "log_every": 3, "from_a_newer_medkit": 1}, "optim": {"lr": 1, "betas": [0.8, 0.9]},
           "encoder": {"preset": "tiny"}}
    before = copy.deepcopy(cfg)
    settings = RunSettings.of(cfg)
    assert settings.trainer.max_steps == 7 and settings.trainer.log_every == 3
    assert settings.trainer.checkpoint_every == SCHEMAS["trainer"]().checkpoint_every  # absent: the schema's
    assert settings.optim.lr == 1.0 and isinstance(settings.optim.lr, float)  # typed as the schema says
    assert settings.encoder.preset == "tiny" and settings.encoder.drop_path == SCHEMAS["encoder"]().drop_path
    assert trainer_config(cfg) == settings.trainer and optim_config(cfg) == settings.optim
    assert encoder_config(cfg) == settings.encoder and cfg == before, "building them changes nothing"
    assert trainer_config({}) == SCHEMAS["trainer"]()


def test_a_wrong_type_names_the_key_and_the_file() -> None:
    with pytest.raises(ConfigError, match=r"runs/a/config.yaml: trainer.log_every='often'") as info:
        trainer_config({"trainer": {"log_every": "often"}}, where="runs/a/config.yaml: ")
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="backbone.features"):
        FinetuneSettings.of({"backbone": {"features": "many"}})
    assert typed_section(None, FinetuneOptimConfig, section="optim") == FinetuneOptimConfig()
