"""``medkit report`` and ``medkit compare``: click wiring over :mod:`medkit.eval.report` and
:mod:`medkit.eval.compare`."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--baseline", type=click.Path(file_okay=False, exists=True), default=None,
              help="An untrained run (strategy tfs, same modalities) whose values are FWT's b_j.")
def report(run_dir: str, baseline: str | None) -> None:
    """Write RUN_DIR/report/: heat-maps of the stage × modality matrices, loss curves and report.md
    with forgetting, BWT and FWT; prints a short summary of what changed.

    \b
    Example:
      medkit report runs/my-run
    """
    from medkit.eval.report import write_report
    from medkit.registry import get_host

    out = write_report(Path(run_dir), baseline=Path(baseline) if baseline else None, components=get_host())
    click.echo((out / "summary.txt").read_text(encoding="utf-8").rstrip())
    click.echo(f"report: {out / 'report.md'}")


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--baseline", type=click.Path(file_okay=False, exists=True), default=None,
              help="Untrained run for FWT's b_j (default: a tfs run among RUN_DIRS, if any).")
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
              help="Also write the comparison to FILE (.md: the table; .json: every metric).")
def compare(run_dirs: tuple[str, ...], baseline: str | None, out: str | None) -> None:
    """Compare runs side by side: final pretext loss per modality, forgetting (first- and
    max-value), BWT, FWT and probe accuracies; or, for fine-tuning runs, test metrics per backbone
    and dataset (supplement Table 2).

    \b
    Example:
      medkit compare runs/seq runs/rehearsal runs/tfs --out compare.md
      medkit compare runs/ft-ricord-desd runs/ft-ricord-medcoss runs/ft-chestxr-unimiss
    """
    from medkit.api.errors import ConfigError
    from medkit.eval.compare import compare_runs, compare_table, identical_note, text_table, write_comparison

    if out and Path(out).suffix not in (".md", ".json"):
        raise ConfigError(f"--out {out}: expected a .md or .json file name")
    from medkit.finetune.compare import compare_finetune, finetune_kinds, write_finetune_comparison

    if any(finetune_kinds([Path(d) for d in run_dirs])):  # fine-tuning runs: the Table 2 layout
        from medkit.registry import get_host

        table = compare_finetune([Path(d) for d in run_dirs], get_host())
        click.echo(text_table(table["header"], table["rows"]))
        if out:
            click.echo(f"wrote {write_finetune_comparison(Path(out), table)}")
        return
    result = compare_runs([Path(d) for d in run_dirs], baseline=Path(baseline) if baseline else None)
    header, rows = compare_table(result)
    click.echo(text_table(header, rows))
    if result["identical"]:
        click.echo(identical_note(result), err=True)
    if out:
        click.echo(f"wrote {write_comparison(Path(out), result)}")
