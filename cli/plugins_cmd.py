"""``medkit plugins list|check``: what is installed, what it provides, and what is broken."""

from __future__ import annotations

import json

import click


@click.group()
def plugins() -> None:
    """Inspect installed medkit plugins."""


@plugins.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_plugins(as_json: bool) -> None:
    """Every plugin distribution, its version, what it provides per kind, and its error if broken."""
    from medkit.registry import get_host

    host = get_host()
    records = [r.as_dict() for r in host.records]
    if as_json:
        click.echo(json.dumps({"plugins": records}, indent=2))
        return
    for r in records:
        status = "ok" if not r["error"] else "BROKEN"
        click.echo(f"{r['distribution']} {r['version']} ({r['name']}) [{status}]")
        for kind, names in sorted(r["provides"].items()):
            click.echo(f"  {kind}: {', '.join(names)}")
        if r["error"]:
            click.echo(f"  error: {r['error']}")


@plugins.command("check")
def check_plugins() -> None:
    """Exit non-zero when any installed plugin is broken (every registered factory is imported)."""
    from medkit.registry import get_host

    get_host().check_factories()  # imports every registered factory: a dangling spec is broken
    broken = [r for r in get_host().records if r.error]
    for r in broken:
        click.echo(f"{r.dist} {r.version} ({r.entry_point}): {r.error}", err=True)
    if broken:
        raise SystemExit(1)
    click.echo(f"{len(get_host().records)} plugin(s) loaded, none broken")
