"""``medkit push`` and ``medkit pull``: share a run through the Hugging Face Hub."""

from __future__ import annotations

import click


def component_provider(kind: str, name: str) -> str | None:
    """The distribution that provides ``name`` of ``kind``: the installed plugin, else the known table
    (for the model card's install line)."""
    from medkit.api.errors import MedkitError
    from medkit.registry import get_host
    from medkit.registry.known import provider_of

    try:
        dist = get_host().provider(kind, name).dist
    except MedkitError:
        dist = None
    return dist or provider_of(kind, name)


def strategy_publishable(name: str) -> list[str]:
    """The strategy state roots strategy ``name`` declares publishable (its spec's ``publishable_state``);
    none when its plugin is not installed."""
    from medkit.api.errors import MedkitError
    from medkit.hub.publish import PUBLISHABLE_STATE
    from medkit.registry import get_host

    try:
        return [str(r) for r in get_host().spec("strategy", name).meta.get(PUBLISHABLE_STATE, ())]
    except MedkitError as exc:
        click.echo(f"warning: no strategy state is published: {exc}", err=True)
        return []


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--repo-id", required=True, help="Hub repository, USER/NAME (created if needed).")
@click.option("--private", is_flag=True, help="Create the repository private (ignored if it exists).")
@click.option("--revision", default=None, help="Branch to commit to (created from main if needed).")
@click.option("--license", "license_", default=None,
              help="Licence identifier for the model card (a Hub licence id, or 'other'); none by default: "
                   "the card then states that no licence was chosen.")
@click.option("--include-strategy-state", is_flag=True,
              help="Also publish the strategy state the run's strategy declares publishable (teacher "
                   "weights, masks); buffer ids, cached features and Fisher information are never published.")
@click.option("-m", "--message", default=None, help="Commit message.")
def push(run_dir: str, repo_id: str, private: bool, revision: str | None, license_: str | None,
         include_strategy_state: bool, message: str | None) -> None:
    """Upload RUN_DIR's model, config, tokenizer assets and a model card to the Hub.

    The token comes from HF_TOKEN or `hf auth login`; HF_ENDPOINT selects another Hub.

    \b
    Examples:
      medkit push runs/my-run --repo-id alice/medkit-ct-tiny
      medkit push runs/my-run --repo-id alice/medkit-ct-tiny --revision v2 --private
    """
    from medkit.hub.push import push as push_run
    from medkit.registry import get_host

    result = push_run(run_dir, repo_id, private=private, revision=revision, license=license_,
                      include_strategy_state=include_strategy_state, commit_message=message,
                      components=get_host(), provider=component_provider, publishable=strategy_publishable)
    click.echo(f"pushed {len(result.files)} files to {result.url} ({result.revision} @ {result.commit[:12]})")
    click.echo(f"load it with: medkit pull hf-hub:{result.repo_id}"
               + (f"@{result.revision}" if result.revision != "main" else ""))


@click.command()
@click.argument("ref")
@click.option("--to", "to", type=click.Path(file_okay=False), default=None,
              help="Write the files into this folder instead of the Hugging Face cache.")
def pull(ref: str, to: str | None) -> None:
    """Fetch a checkpoint: hf-hub:USER/NAME[@REV], local-dir:PATH or a path; prints its folder.

    \b
    Examples:
      medkit pull hf-hub:alice/medkit-ct-tiny
      medkit pull hf-hub:alice/medkit-ct-tiny@v2 --to models/ct
    """
    from medkit.hub.hub import pull as pull_ref

    click.echo(str(pull_ref(ref, to=to)))
