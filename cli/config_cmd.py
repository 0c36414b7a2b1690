"""``medkit config show``: the composed config a run with the same options would use."""

from __future__ import annotations

import click

from medkit.cli.common import make_selection, selection_options


@click.group()
def config() -> None:
    """Inspect configuration."""


@config.command("show")
@selection_options
def show(modality: tuple[str, ...], strategy: str, data: tuple[str, ...], preset: str,
         max_steps: int | None, seed: int, overrides: tuple[str, ...]) -> None:
    """Print the config `medkit run` would compose from the same options."""
    from medkit.config.compose import compose, to_yaml
    from medkit.registry import get_host

    click.echo(to_yaml(compose(make_selection(modality, strategy, data, preset, max_steps, seed,
                                              overrides), host=get_host())), nl=False)
