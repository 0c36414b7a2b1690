"""The one way a pre-training run starts: from options (the CLI's ``medkit run`` and :func:`medkit.run`
both call :func:`plan_run` then :func:`execute_run`), so a run started from Python behaves and writes
its run directory exactly as the command does."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from medkit.api.errors import ConfigError

log = logging.getLogger(__name__)

#: What a run falls back to where neither the options nor a ``--config`` file say.
DEFAULTS: dict[str, Any] = {"strategy": "sequential", "preset": "base", "seed": 0}


@dataclass
class RunOptions:
    """What ``medkit run`` was asked (``None``/empty: not given, so the config file or the default).

    Attributes:
        modality: modality names, one stage each (``"ct"``, ``"report,xray"``, repeatable).
        data: ``PATH`` (one modality) or ``MODALITY=PATH`` strings, or a ``{modality: path}`` mapping.
        overrides: ``KEY=VALUE`` strings (the command line's trailing arguments).
        config_file: a YAML file (a run's saved ``config.yaml`` or one's own) the options apply on top of.
        config_values: the same as a mapping (from Python); checked like a file.
    """

    modality: Sequence[str] = ()
    strategy: str | None = None
    data: Sequence[str] | Mapping[str, str | None] = ()
    preset: str | None = None
    max_steps: int | None = None
    seed: int | None = None
    overrides: Sequence[str] = ()
    run_dir: str | os.PathLike[str] | None = None
    resume: str | os.PathLike[str] | None = None
    from_ref: str | None = None
    config_file: str | os.PathLike[str] | None = None
    config_values: Mapping[str, Any] | None = field(default=None)


def default_run_dir(strategy: str, modalities: Sequence[str]) -> str:
    """``runs/<time>-<strategy>-<modalities>`` (the default ``--run-dir``)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return f"runs/{stamp}-{strategy}-{'-'.join(modalities)}"


def _file(opts: RunOptions) -> tuple[dict[str, Any], str]:
    """The config file's (or mapping's) content through the received-file gate, and its name."""
    from medkit.config.from_file import read_config_file
    from medkit.config.yaml import check_inert

    if opts.config_file is not None and opts.config_values is not None:
        raise ConfigError("give a config file or a config mapping, not both")
    if opts.config_file is not None:
        return read_config_file(opts.config_file), str(opts.config_file)
    if opts.config_values is not None:
        import copy

        values = copy.deepcopy(dict(opts.config_values))
        check_inert(values, "the config mapping")
        return values, "the config mapping"
    return {}, ""


def _data(opts: RunOptions, modalities: list[str], file_data: Mapping[str, Any]) -> dict[str, str | None]:
    from medkit.config.compose import parse_data

    if isinstance(opts.data, Mapping):
        given = {str(k): (None if v is None else os.fspath(v)) for k, v in opts.data.items()}
        unknown = sorted(set(given) - set(modalities))
        if unknown:
            raise ConfigError(f"data for {unknown[0]!r}: not a selected modality ({', '.join(modalities)})")
        data = {m: given.get(m) for m in modalities}
    else:
        data = parse_data(list(opts.data), modalities)
    for m in modalities:  # the file's folders where the options name none
        if data.get(m) is None and file_data.get(m):
            data[m] = file_data[m]
    return data


def selection(opts: RunOptions) -> Any:
    """The :class:`~medkit.config.compose.Selection` of ``opts`` (a config file below the options)."""
    from medkit.config.compose import Selection, parse_modalities
    from medkit.config.from_file import file_values, selection_from_file

    cfg, source = _file(opts)
    chosen = selection_from_file(cfg, source) if cfg else {}
    mods = parse_modalities(list(opts.modality)) or chosen.get("modalities", [])
    if not mods:
        raise ConfigError("select at least one modality, e.g. --modality ct (see medkit plugins list)")
    strategy = opts.strategy or chosen.get("strategy") or DEFAULTS["strategy"]
    base = file_values(cfg, strategy=strategy, file_strategy=chosen.get("strategy"), source=source) if cfg else {}
    for given, section, key in ((opts.preset, "encoder", "preset"), (opts.max_steps, "trainer", "max_steps")):
        if given is not None and section in base:  # the option wins over the file
            base[section] = {k: v for k, v in base[section].items() if k != key}
    seed = opts.seed if opts.seed is not None else chosen.get("seed", DEFAULTS["seed"])
    return Selection(modalities=mods, strategy=strategy, preset=opts.preset or chosen.get("preset") or
                     DEFAULTS["preset"], data=_data(opts, mods, chosen.get("data") or {}), seed=int(seed),
                     max_steps=opts.max_steps, overrides=list(opts.overrides), base=base, base_source=source)


def plan_run(opts: RunOptions, *, host: Any) -> tuple[dict[str, Any], Path]:
    """The resolved config of the run ``opts`` asks for and its run directory; nothing is written.

    ``--resume`` keeps the run's own config (only the safe overrides apply); ``--from`` composes the
    continuation of a finished model; otherwise the config is composed from the options on top of
    ``config_file`` (if any).
    """
    from medkit.config.compose import compose

    if opts.resume and opts.from_ref:
        raise ConfigError("--resume and --from do not mix: --resume continues an interrupted run, --from "
                          "adds stages to a finished one")
    if opts.resume:
        from medkit.config.overrides import apply_resume_overrides
        from medkit.engine.engine import load_config

        given = [f"--{name}" for name, value in (("modality", opts.modality), ("data", opts.data),
                 ("strategy", opts.strategy), ("preset", opts.preset), ("seed", opts.seed),
                 ("config", opts.config_file or opts.config_values)) if value not in (None, (), [], {})]
        if given:
            raise ConfigError(f"--resume continues {opts.resume} with the modalities, data, strategy, preset and "
                              f"seed of its config.yaml; drop {', '.join(given)}")
        safe = list(opts.overrides) + ([f"trainer.max_steps={opts.max_steps}"] if opts.max_steps is not None
                                       else [])
        resume = Path(opts.resume)
        return apply_resume_overrides(load_config(resume), safe, source=str(resume / "config.yaml")), resume
    sel = selection(opts)
    if opts.from_ref:
        from medkit.engine.continuation import compose_continuation
        from medkit.hub.hub import resolve_checkpoint

        cfg = compose_continuation(opts.from_ref, resolve_checkpoint(opts.from_ref), sel, host=host)
        return cfg, Path(opts.run_dir or default_run_dir(sel.strategy, sel.modalities))
    cfg = compose(sel, host=host)
    return cfg, Path(opts.run_dir or default_run_dir(sel.strategy, cfg["run"]["modalities"]))


def execute_run(cfg: dict[str, Any], run_dir: Path, *, resume: bool, host: Any,
                reporter: Any = None) -> dict[str, Any]:
    """Run (or resume) the pre-training ``cfg`` in ``run_dir`` with the plugin ``host``; returns the
    engine's results. ``reporter``: progress (default: log lines every ``trainer.log_every`` steps)."""
    from medkit.engine.engine import Engine

    if reporter is None:
        from medkit.api.progress import LogReporter
        from medkit.config.typed import trainer_config

        reporter = LogReporter(every=trainer_config(cfg).log_every)
    return Engine(cfg, Path(run_dir), components=host, reporter=reporter, resume=resume).run()
