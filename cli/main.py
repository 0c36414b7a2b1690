"""The ``medkit`` command line. Importing this module stays light: commands import what they use."""

from __future__ import annotations

import logging
import sys
import traceback
from typing import Any

import click

from medkit.api.components import COMPONENTS_KEY

from medkit.cli.common import setup_logging


class MedkitGroup(click.Group):
    """Adds plugin commands on first use and prints errors as one line (``-v`` for a traceback)."""

    _plugins_added = False

    def _add_plugin_commands(self) -> None:
        if self._plugins_added:
            return
        self._plugins_added = True
        from medkit.registry import get_host

        get_host().call_guarded("medkit_register_commands", cli=self)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._add_plugin_commands()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        cmd = super().get_command(ctx, name)
        if cmd is None:
            self._add_plugin_commands()
            cmd = super().get_command(ctx, name)
        return cmd

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Exception as exc:  # noqa: BLE001 - the CLI's one-line error contract
            from medkit.api.errors import MedkitError

            verbose = bool(ctx.obj and ctx.obj.get("verbose"))
            if verbose:
                traceback.print_exc()
            kind = "" if isinstance(exc, MedkitError) else f"{type(exc).__name__}: "
            msg = " ".join(str(exc).split()) or type(exc).__name__
            hint = "" if verbose else " (run with -v for the traceback)"
            click.echo(f"error: {kind}{msg}{hint}" if not isinstance(exc, MedkitError)
                       else f"error: {msg}", err=True)
            sys.exit(1)


@click.group(cls=MedkitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Show debug logs and tracebacks.")
@click.version_option(package_name="medkit")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """medkit: continual self-supervised pre-training of one encoder over medical data
    (reports, X-rays, CT, MRI, pathology) and fine-tuning it downstream."""
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    from medkit.registry import get_host

    ctx.obj[COMPONENTS_KEY] = get_host  # plugin commands reach the host through components_of(ctx)
    setup_logging(logging.DEBUG if verbose else logging.INFO)


def _register_builtin_commands() -> None:
    from medkit.cli.config_cmd import config
    from medkit.cli.convert_cmd import convert
    from medkit.cli.data_cmd import data
    from medkit.cli.doctor_cmd import doctor
    from medkit.cli.finetune_cmd import embed, evaluate, finetune
    from medkit.cli.hub_cmd import pull, push
    from medkit.cli.plugins_cmd import plugins
    from medkit.cli.prepare_cmd import prepare
    from medkit.cli.report_cmd import compare, report
    from medkit.cli.run_cmd import run

    for command in (run, plugins, doctor, config, data, push, pull, finetune, evaluate, embed, report,
                    compare, convert, prepare):
        cli.add_command(command)


_register_builtin_commands()


def main() -> None:
    cli(prog_name="medkit")


if __name__ == "__main__":
    main()
