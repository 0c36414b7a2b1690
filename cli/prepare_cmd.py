"""``medkit prepare``: preprocess a folder once into streaming shards that ``medkit run --data`` reads."""

from __future__ import annotations

from pathlib import Path

import click


def _shard(value: str) -> tuple[int, int]:
    from medkit.api.errors import ConfigError

    try:
        i, n = (int(v) for v in value.split("/"))
    except ValueError as exc:
        raise ConfigError(f"--shard must be i/n (e.g. 0/4), got {value!r}") from exc
    if not (n >= 1 and 0 <= i < n):
        raise ConfigError(f"--shard {value}: needs 0 <= i < n")
    return i, n


@click.command()
@click.option("--modality", default=None, help="Modality whose readers and preprocessing to run.")
@click.option("--data", "data", type=click.Path(exists=True), default=None,
              help="Folder to prepare (default: the modality's built-in demo data).")
@click.option("--out", "out", type=click.Path(file_okay=False), required=True, help="Prepared folder to write.")
@click.option("--workers", type=int, default=1, show_default=True, help="Processes writing parts.")
@click.option("--shard", "shard", default="0/1", show_default=True,
              help="i/n: prepare only every n-th part, starting at part i (one of n machines); join with --merge.")
@click.option("--part-size", type=int, default=256, show_default=True,
              help="Samples per part: the unit of work, of --shard and of resuming a killed prepare.")
@click.option("--store", type=click.Choice(["auto", "float32"]), default="auto", show_default=True,
              help="auto: uint8/uint16/float16 where that loses nothing training uses; float32: exact.")
@click.option("--canvas", type=click.Choice(["view", "region"]), default="view", show_default=True,
              help="2D: view: store the un-augmented input_size² view (training crops and flips it, as the "
                   "reference); region: store the decoded region (training crops it as the folder path does).")
@click.option("--max-side", type=int, default=0, show_default=True,
              help="2D with --canvas region: store regions resized to at most this many pixels on the longer "
                   "side (0: as decoded; e.g. 2× input_size).")
@click.option("--merge", is_flag=True, help="Join the parts of every shard into OUT (ARGS: other shard folders).")
@click.argument("args", nargs=-1)
def prepare(modality: str | None, data: str | None, out: str, workers: int, shard: str, part_size: int,
            store: str, canvas: str, max_side: int, merge: bool, args: tuple[str, ...]) -> None:
    """Run every deterministic preprocessing step of a modality once and write litdata shards with a
    manifest (ARGS: KEY=VALUE config overrides such as modality.ct.spacing=1.5; they must match the
    run that trains on the output).

    \b
    Examples:
      medkit prepare --modality ct --data /data/ct --out /data/ct-prepared --workers 8
      medkit prepare --modality report --data /data/reports --out /data/reports-prepared   # token ids
      medkit prepare --modality xray --data /data/cxr --out /shared/cxr --shard 3/16   # one of 16 jobs
      medkit prepare --merge --out /shared/cxr
      medkit run --modality ct --data ct=/data/ct-prepared
    """
    from medkit.api.errors import ConfigError
    from medkit.data import prepare as runtime

    if merge:
        summary = runtime.finalize(Path(out), [Path(a) for a in args])
    else:
        if not modality:
            raise ConfigError("medkit prepare: give --modality (e.g. --modality ct), or --merge to join shards")
        mod, tokenizer = _modality(modality, args)
        root = Path(data) if data else _demo(mod, modality)
        summary = runtime.prepare(mod, root, Path(out), workers=workers, shard=_shard(shard),
                                  part_size=part_size, store=store, max_side=max_side, canvas=canvas,
                                  tokenizer=tokenizer,
                                  groups=_group_options(modality, args))
    click.echo(f"prepared: {summary.out}  parts written: {summary.written}, reused: {summary.reused}")
    if summary.finished:
        click.echo(f"samples: {summary.samples} in {summary.parts} parts  content sha256: {summary.content_sha256}")
        click.echo(f"skipped: {len(summary.skipped)}")
        for file, reason in summary.skipped:
            click.echo(f"  {file}: {reason}")
        click.echo(f"filtered: {len(summary.filtered)}")
        for file, reason in summary.filtered:
            click.echo(f"  {file}: {reason}")
    else:
        click.echo("this shard is done; run `medkit prepare --merge --out OUT` once every shard has finished")


def _modality(name: str, overrides: tuple[str, ...]):
    from medkit.cli.common import make_selection
    from medkit.config.compose import compose
    from medkit.registry import create, get_host

    cfg = compose(make_selection((name,), "sequential", (), "base", None, 0, overrides), host=get_host())
    kwargs = dict(cfg["modality"].get(name, {}))
    if "on_error" in kwargs and not any(o.startswith(f"modality.{name}.on_error=") for o in overrides):
        kwargs["on_error"] = "skip"  # list every unreadable file in the manifest instead of stopping
    mod = create("modality", name, **kwargs)
    tokenizer = None
    if getattr(mod, "dims", None) == 1:  # text is stored as the word-piece ids of the run's tokenizer
        tok = cfg["run"]["uses"][name]["tokenizer"]
        # embed_dim only sizes the embedding tables, which preparing never uses: the smallest will do
        tokenizer = create("tokenizer", tok, **{**dict(cfg["tokenizer"].get(tok, {})), "embed_dim": 8})
    return mod, tokenizer


def _group_options(name: str, overrides: tuple[str, ...]):
    """The split-key options (``trainer.patient_column``, ``trainer.group_folder_level``) of the overrides."""
    from medkit.cli.common import make_selection
    from medkit.config.compose import compose
    from medkit.data.groups import GroupOptions
    from medkit.registry import get_host

    cfg = compose(make_selection((name,), "sequential", (), "base", None, 0, overrides), host=get_host())
    return GroupOptions.from_trainer(cfg["trainer"])


def _demo(mod, name: str) -> Path:
    from medkit.data.demo import demo_root

    return Path(mod.demo_data(demo_root() / name))
