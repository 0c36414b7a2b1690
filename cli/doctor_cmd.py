"""``medkit doctor``: diagnose the environment (wiring only; the checks live in medkit.registry.doctor)."""

from __future__ import annotations

import json

import click


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def doctor(as_json: bool) -> None:
    """Check this environment: a foreign 'medkit' package (e.g. from medkit-lib), broken or missing
    plugins, timm too old, a CUDA torch on a machine without a GPU. Exits 1 on a problem."""
    from medkit.registry.doctor import diagnose

    findings = diagnose()
    if as_json:
        click.echo(json.dumps([f.__dict__ for f in findings], indent=2))
    else:
        for f in findings:
            click.echo(f.line())
    problems = sum(f.level == "problem" for f in findings)
    if not as_json:
        click.echo(f"{problems} problem(s)" if problems else "no problems found")
    if problems:
        raise SystemExit(1)
