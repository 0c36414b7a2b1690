"""Typed section objects built once from a composed (or loaded) config: what the runtime reads.

The schemas (:mod:`medkit.config.schemas` for pre-training, :mod:`medkit.finetune.config` for
fine-tuning) are the one place a section's defaults live; the runtime reads the objects built here
(``trainer.log_every``) instead of the plain dict with a default restated beside each read.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any, TypeVar, cast

from medkit.api.errors import ConfigError
from medkit.config.schemas import EncoderConfig, OptimConfig, TrainerConfig

log = logging.getLogger(__name__)
T = TypeVar("T")


def typed_section(values: Mapping[str, Any] | None, schema: type[T], *, section: str, where: str = "") -> T:
    """``values`` (one section of a plain config) as an instance of the dataclass ``schema``.

    Keys the config lacks take the schema's defaults (a run saved by an older medkit); keys the schema
    does not know are left out (kept in the plain config, as :func:`medkit.config.overrides.typed_sections`
    keeps them). Values are converted to the field types as OmegaConf does (``1`` for a float field
    is ``1.0``), so what the runtime reads is exactly what the schema says.

    Args:
        values: the section (``cfg["trainer"]``); ``None`` or absent: every default.
        schema: the section's dataclass (:class:`TrainerConfig`...).
        section: the section's name, for messages.
        where: a prefix for messages (the file the config came from).

    Raises:
        ConfigError: a value that is not of its field's type (naming ``section.key`` and the value).
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    known = {f.name for f in dataclasses.fields(cast(Any, schema))}
    given = dict(values or {})
    unknown = sorted(set(given) - known)
    if unknown:
        log.debug("%s%s: keys %s are not in the schema; the runtime does not read them", where, section,
                  ", ".join(unknown))
    node = OmegaConf.structured(schema)
    for key in sorted(set(given) & known):
        try:
            node[key] = given[key]
        except OmegaConfBaseException as exc:
            raise ConfigError(f"{where}{section}.{key}={given[key]!r}: {str(exc).splitlines()[0]}; "
                              f"fix the value in the config (see medkit.config.schemas)") from exc
    return cast(T, OmegaConf.to_object(node))  # the instance of ``schema`` (a structured config)


def trainer_config(cfg: Mapping[str, Any], *, where: str = "") -> TrainerConfig:
    """``cfg["trainer"]`` of a pre-training config as a :class:`TrainerConfig`."""
    return typed_section(cfg.get("trainer"), TrainerConfig, section="trainer", where=where)


def optim_config(cfg: Mapping[str, Any], *, where: str = "") -> OptimConfig:
    """``cfg["optim"]`` of a pre-training config as an :class:`OptimConfig`."""
    return typed_section(cfg.get("optim"), OptimConfig, section="optim", where=where)


def encoder_config(cfg: Mapping[str, Any], *, where: str = "") -> EncoderConfig:
    """``cfg["encoder"]`` of a config (pre-training, fine-tuning, a checkpoint's ``config.json``) as
    an :class:`EncoderConfig`."""
    return typed_section(cfg.get("encoder"), EncoderConfig, section="encoder", where=where)


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """The typed sections of one pre-training run, built once from its composed config."""

    trainer: TrainerConfig
    optim: OptimConfig
    encoder: EncoderConfig

    @classmethod
    def of(cls, cfg: Mapping[str, Any], *, where: str = "") -> RunSettings:
        return cls(trainer=trainer_config(cfg, where=where), optim=optim_config(cfg, where=where),
                   encoder=encoder_config(cfg, where=where))
