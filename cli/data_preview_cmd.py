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
def preview(modalities: tuple[str, ...], paths: tuple[str, ...], samples: int, seed: int, out: str) -> None:
    """Draw what the model is fed: for each modality a PNG with one row as read, one preprocessed
    and one augmented, the file and the transform under every panel (2D as images, 3D as three
    orthogonal slices, reports as text, tiles with their place in the slide).

    \b
    Example:
      medkit data preview --modality xray --modality ct --out preview
    """
    from medkit.api.errors import ConfigError
    from medkit.data.demo import demo_root
    from medkit.data.prepared import is_prepared
    from medkit.eval.preview import preview_png
    from medkit.registry import create

    if len(paths) > len(modalities):
        raise ConfigError(f"--data given {len(paths)} times for {len(modalities)} --modality; give one "
                          f"folder per modality, in the same order")
    for k, name in enumerate(modalities):
        mod = create("modality", name)
        root = Path(paths[k]) if k < len(paths) else mod.demo_data(demo_root() / name)
        dataset = None
        if is_prepared(root):  # a medkit prepare folder: its samples, as training streams them
            from medkit.data.prepared_dataset import open_prepared

            dataset = open_prepared(mod, root, train=False)
        png = preview_png(Path(out) / f"preview_{name}.png", name, mod, root, samples=samples, seed=seed,
                          dataset=dataset)
        click.echo(f"{name}: {png}")
