"""``medkit config show``: the composed config a run with the same options would use."""

from __future__ import annotations

import re
from typing import Any

import click
from click.core import ParameterSource

from medkit.cli.common import selection_options


@click.group()
def config() -> None:
    """Inspect configuration."""


def with_preset_values(text: str, cfg: dict[str, Any]) -> str:
    """``text`` (the YAML of ``cfg``) with the encoder's ``null`` shape keys shown as the values the
    preset resolves them to (``depth: 2  # preset tiny``); the saved config keeps ``null`` (= the preset's)."""
    from medkit.models.build import trunk_shape

    shape = trunk_shape(cfg)
    preset = cfg["encoder"].get("preset")
    out, section = [], None
    for line in text.splitlines(keepends=True):
        if not line.startswith(" "):
            section = line.split(":", 1)[0]
        found = re.match(r"^(  )(\w+): null$", line.rstrip("\n"))
        if section == "encoder" and found and found.group(2) in shape:
            line = f"{found.group(1)}{found.group(2)}: {shape[found.group(2)]}  # preset {preset}\n"
        out.append(line)
    return "".join(out)


@config.command("show")
@selection_options
@click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="A YAML config to start from, as `medkit run --config FILE`.")
def show(modality: tuple[str, ...], strategy: str, data: tuple[str, ...], preset: str,
         max_steps: int | None, seed: int, overrides: tuple[str, ...], config_file: str | None) -> None:
    """Print the config `medkit run` would compose from the same options (the encoder's shape as the
    preset resolves it)."""
    from medkit.config.compose import compose, to_yaml
    from medkit.engine.launch import RunOptions, selection
    from medkit.registry import get_host

    ctx = click.get_current_context()

    def given(name: str, value: Any) -> Any:
        return value if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE else None

    opts = RunOptions(modality=modality, strategy=given("strategy", strategy), data=data,
                      preset=given("preset", preset), max_steps=max_steps, seed=given("seed", seed),
                      overrides=overrides, config_file=config_file)
    cfg = compose(selection(opts), host=get_host())
    click.echo(with_preset_values(to_yaml(cfg), cfg), nl=False)
