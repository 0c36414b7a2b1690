"""Typed trainer/optim/encoder sections: every key the runtime reads, its default, and refusals at compose."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from medkit.api.errors import ConfigError
from medkit.config.compose import Selection, compose
from medkit.config.schemas import SCHEMAS, defaults, field_names

SRC = Path(__file__).resolve().parents[2] / "core"  # the runtime (import name medkit)
#: The values of the untyped dicts these schemas replaced (behaviour must not change).
OLD_DEFAULTS = {
    "optim": {"lr": None, "blr": 1.5e-4, "weight_decay": 0.05, "betas": [0.9, 0.95],
              "warmup_fraction": 40 / 300, "min_lr": 0.0, "clip_grad": None},
    "trainer": {"max_steps": 1000, "batch_size": 8, "checkpoint_every": 50, "log_every": 10,
                "eval_batches": 4, "val_fraction": 0.1, "num_workers": "auto", "device": "auto", "amp": False,
                "probe_knn_k": 5, "probe_linear_steps": 100, "probe_unseen": False, "probe_max_train": 256,
                "probe_max_query": 128},
    "encoder": {"preset": "base", "depth": None, "embed_dim": None, "num_heads": None, "mlp_ratio": None,
                "drop_path": 0.1, "layer_scale_init": 1e-3, "final_norm": False, "legacy": False},
}


@pytest.fixture()
def host():
    from medkit.testing.synthetic import use_synthetic_host

    return use_synthetic_host()


def _sel(*overrides: str, preset: str = "tiny") -> Selection:
    return Selection(modalities=["synth_a"], strategy="sequential", preset=preset, overrides=list(overrides))


def test_defaults_are_the_previous_ones() -> None:
    for section, old in OLD_DEFAULTS.items():
        new = defaults(section)
        assert {k: new[k] for k in old} == old, section
    # keys the runtime read with a default but no schema listed (so they could not be set)
    new = {"probe_knn_vote": "weighted", "keep_checkpoints": 2, "accum_steps": 1, "grad_checkpointing": False,
           "compile": False, "probe_refit_steps": 100, "probe_refit_lr": 1e-3, "patient_column": None,
           "group_folder_level": None, "reduce": "allreduce", "reduce_group": 0, "eval_cache_mb": 0}
    assert {k: v for k, v in defaults("trainer").items() if k not in OLD_DEFAULTS["trainer"]} == new


#: The names the runtime reads a section through: plain dicts (``cfg["trainer"]["x"]``) and the typed
#: objects of medkit.config.typed / medkit.models.options (``settings.trainer.x``, ``tr.x``, ``enc.x``).
_DICT_ALIASES = {"trainer": r"(?:cfg\[\"trainer\"\]|\btr)", "optim": r"(?:cfg\[\"optim\"\]|\bopt_cfg)",
                 "encoder": r"(?:cfg\[\"encoder\"\]|\benc_cfg|\benc)"}
_TYPED_ALIASES = {"trainer": r"(?:\bsettings\.trainer|\btr|\btrainer)", "optim": r"(?:\bsettings\.optim|\bopt_cfg)",
                  "encoder": r"(?:\bsettings\.encoder|\benc_cfg)"}


def _code_only(text: str) -> str:
    """``text`` without its comments and string literals (docstrings name keys as ``trainer.x`` too)."""
    import io
    import tokenize

    drop = {tokenize.COMMENT, tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING)}
    kept = [t for t in tokenize.generate_tokens(io.StringIO(text).readline) if t.type not in drop]
    return tokenize.untokenize(kept)


def _keys_read(section: str) -> set[str]:
    """Keys read from cfg[section] (directly, through the usual local names, or as attributes of the
    typed section objects) across the runtime."""
    found: set[str] = set()
    for path in SRC.rglob("*.py"):
        if path.relative_to(SRC).parts[0] in ("finetune", "config"):
            continue  # fine-tuning has its own trainer/optim sections
        text = path.read_text(encoding="utf-8")
        found |= set(re.findall(_DICT_ALIASES[section] + r"(?:\.get\(|\[)\"(\w+)\"", text))
        found |= set(re.findall(_TYPED_ALIASES[section] + r"\.(\w+)\b(?!\s*\()", _code_only(text)))
    return found


@pytest.mark.parametrize("section", sorted(SCHEMAS))
def test_every_key_the_runtime_reads_is_in_the_schema(section: str) -> None:
    from medkit.eval.probes import PROBE_TRAINER_DEFAULTS  # read through ProbeOptions.from_trainer

    read = _keys_read(section) | (set(PROBE_TRAINER_DEFAULTS) if section == "trainer" else set())
    assert len(read) >= 3, f"the scan found almost nothing for {section}: {read}"
    assert read <= set(field_names(section)), f"{section} keys read but not typed: {read - set(field_names(section))}"


@pytest.mark.parametrize("override, key, words", [
    ("trainer.max_steps=abc", "trainer.max_steps", ["int", "'abc'"]),
    ("optim.lr=fast", "optim.lr", ["float", "'fast'"]),
    ("encoder.depth=2.5", "encoder.depth", ["int", "'2.5'"]),
    ("trainer.amp=0", "trainer.amp", ["bool", "'0'"]),
    ("optim.betas=abc", "optim.betas", ["list of float"]),
])
def test_wrong_type_is_refused_naming_key_value_and_type(host, override: str, key: str, words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        compose(_sel(override), host=host)
    message = str(info.value)
    assert "\n" not in message and key in message
    assert all(w in message for w in words), message


@pytest.mark.parametrize("override, hint", [("trainer.nope=1", "trainer."), ("optim.lrr=1", "did you mean optim.lr"),
                                            ("encoder.dept=2", "did you mean encoder.depth")])
def test_unknown_key_is_refused_with_did_you_mean(host, override: str, hint: str) -> None:
    with pytest.raises(ConfigError, match="no config key") as info:
        compose(_sel(override), host=host)
    assert hint in str(info.value) and "_target_" not in str(info.value)


@pytest.mark.parametrize("override, words", [
    ("trainer.batch_size=0", "trainer.batch_size=0: must be at least 1"),
    ("trainer.checkpoint_every=0", "at least 1"), ("trainer.val_fraction=1.0", "below 1"),
    ("encoder.preset=huge", "choose one of tiny"), ("trainer.probe_knn_vote=most", "weighted, majority"),
    ("optim.betas=[0.9]", "two values"),
])
def test_out_of_range_values_are_refused(host, override: str, words: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(words)):
        compose(_sel(override), host=host)


def test_good_overrides_are_typed_and_presets_still_apply(host) -> None:
    cfg = compose(_sel("optim.lr=1e-4", "trainer.max_steps=7", "trainer.amp=true", "optim.clip_grad=1"),
                  host=host)
    assert cfg["optim"]["lr"] == 1e-4 and cfg["trainer"]["max_steps"] == 7 and cfg["trainer"]["amp"] is True
    assert isinstance(cfg["optim"]["clip_grad"], float)
    base = compose(_sel(preset="base"), host=host)
    assert base["trainer"]["batch_size"] == 128 and base["optim"]["lr"] is None
    assert base["encoder"]["preset"] == "base" and compose(_sel(), host=host)["optim"]["lr"] == 1e-3


def test_data_paths_are_never_interpolated(host) -> None:
    sel = Selection(modalities=["synth_a"], strategy="sequential", preset="tiny",
                    data={"synth_a": "${oc.env:HOME}/x"})
    with pytest.raises(ConfigError, match="synth_a="):
        compose(sel, host=host)


def test_compose_needs_no_registry_import() -> None:
    import ast

    for name in ("compose", "store", "schemas", "overrides", "yaml"):
        tree = ast.parse((SRC / "config" / f"{name}.py").read_text(encoding="utf-8"))
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | \
            {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not any(m and m.startswith(("medkit.registry", "medkit.cli")) for m in imported), name
        assert len((SRC / "config" / f"{name}.py").read_text().splitlines()) < 400
