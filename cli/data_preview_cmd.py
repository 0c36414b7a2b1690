"""``medkit data preview``: a PNG grid per modality of raw, preprocessed and augmented samples."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("preview")
@click.option("--modality", "modalities", required=True, multiple=True,
              help="Modality whose readers and transforms to use (repeat for several).")
@click.option("--data", "paths", multiple=True, type=click.Path(), default=(),
              help="Folder to preview, one per --modality in order (default: the built-in demo data).")
@click.option("--samples", type=click.IntRange(1, 16), default=4, show_default=True,
              help="Samples per modality (columns of the grid).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the augmented views.")
@click.option("--out", "out", type=click.Path(file_okay=False), default="preview", show_default=True,
              help="Folder for the PNGs (one preview_<modality>.png each).")
@click.argument("overrides", nargs=-1)
def preview(modalities: tuple[str, ...], paths: tuple[str, ...], samples: int, seed: int, out: str,
            overrides: tuple[str, ...]) -> None:
    """Draw what the model is fed: for each modality a PNG with one row as read, one preprocessed
    and one augmented, the file and the transform under every panel (2D as images, 3D as three
    orthogonal slices, reports as text, tiles with their place in the slide). OVERRIDES:
    KEY=VALUE config overrides such as modality.xray.input_size=64, as a run would be given; a
    folder written by medkit prepare is previewed only with the config it was prepared with.

    \b
    Examples:
      medkit data preview --modality xray --modality ct --out preview
      medkit data preview --modality xray --data /data/cxr-prepared modality.xray.input_size=64
    """
    from medkit.api.errors import ConfigError
    from medkit.cli.common import make_selection
    from medkit.config.compose import compose
    from medkit.data.open_data import open_eval_dataset
    from medkit.eval.preview import preview_png
    from medkit.registry import create, get_host

    if len(paths) > len(modalities):
        raise ConfigError(f"--data given {len(paths)} times for {len(modalities)} --modality; give one "
                          f"folder per modality, in the same order")
    cfg = compose(make_selection(modalities, "sequential", (), "base", None, 0, overrides), host=get_host())
    for k, name in enumerate(modalities):
        mod = create("modality", name, **dict(cfg["modality"].get(name, {})))
        # a medkit prepare folder: its samples as training streams them, if prepared with this config
        dataset, root = open_eval_dataset(mod, name, paths[k] if k < len(paths) else None, who="medkit data preview",
                                          hint="give an existing folder to --data")
        png = preview_png(Path(out) / f"preview_{name}.png", name, mod, Path(root), samples=samples, seed=seed,
                          dataset=dataset)
        click.echo(f"{name}: {png}")
