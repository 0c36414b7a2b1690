"""``medkit data inspect``: what a run would read from a folder, and what it would skip."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def data() -> None:
    """Inspect data folders."""


@data.command("inspect")
@click.option("--modality", required=True, help="Modality whose readers to use.")
@click.option("--data", "path", required=False, type=click.Path(), default=None,
              help="Folder to inspect (default: the modality's built-in demo data).")
@click.option("--on-error", type=click.Choice(["raise", "skip"]), default="skip", show_default=True,
              help="Stop at the first unreadable file, or list every skipped file.")
@click.option("--limit", type=int, default=16, show_default=True, help="Samples to load for ranges.")
def inspect(modality: str, path: str | None, on_error: str, limit: int) -> None:
    """Print sample count, shapes, value ranges, labels and skipped files."""
    import inspect as pyinspect

    import torch

    from medkit.data.demo import demo_root
    from medkit.registry import create, get_host

    host = get_host()
    spec = host.spec("modality", modality)
    try:  # a plugin whose code needs a module that is not installed: name the plugin, not just the module
        factory = spec.load_factory()
        kwargs = {"on_error": on_error} if "on_error" in pyinspect.signature(factory).parameters else {}
        mod = create("modality", modality, **kwargs)
        root = Path(path) if path else mod.demo_data(demo_root() / modality)
        from medkit.data.prepared import is_prepared, read_manifest

        prepared = is_prepared(root)  # a medkit prepare folder: its samples, whatever config prepared them
        if not prepared:
            ds = mod.dataset(root, train=False)
    except ImportError as exc:
        from medkit.api.errors import PluginError

        dist = host.provider("modality", modality).dist
        missing = getattr(exc, "name", None) or str(exc)
        raise PluginError(f"modality {modality!r} from plugin {dist} cannot import {missing!r} "
                          f"({type(exc).__name__}: {exc}); install what {dist} needs (pip install "
                          f"{missing.split('.')[0]}) or reinstall {dist}") from exc
    if prepared:
        from medkit.data.prepared_dataset import PreparedDataset

        ds = PreparedDataset(mod, root, read_manifest(root), train=False)
    click.echo(f"modality: {modality}  data: {root}")
    click.echo(f"samples: {len(ds)}")
    indexed = len(list(getattr(ds, "skipped", []) or []))  # loading samples below may skip more
    shapes: dict[str, int] = {}
    words: list[int] = []
    lo, hi = float("inf"), float("-inf")
    bad: dict[str, tuple[int, int]] = {}  # sample id -> (NaN, Inf) in the loaded input
    shown = min(limit, len(ds))
    for i in range(shown):
        sample = ds.load(i, seed=None)
        x = sample["input"]
        if torch.is_tensor(x) and x.is_floating_point() and not bool(torch.isfinite(x).all()):
            bad[str(sample.get("id", i))] = (int(torch.isnan(x).sum()), int(torch.isinf(x).sum()))
            x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        if torch.is_tensor(x):
            shapes[str(list(x.shape))] = shapes.get(str(list(x.shape)), 0) + 1
            lo, hi = min(lo, float(x.min())), max(hi, float(x.max()))
        else:
            words.append(len(str(x).split()))
    for shape, n in shapes.items():
        click.echo(f"  shape {shape}: {n} of the first {shown}")
    if words:  # one line for texts, not one per distinct length
        ordered = sorted(words)
        click.echo(f"  text: {len(words)} of the first {shown}, words per text min {ordered[0]}, "
                   f"median {ordered[len(ordered) // 2]}, max {ordered[-1]}")
    if lo != float("inf"):
        click.echo(f"  value range: [{lo:.4g}, {hi:.4g}]")
    describe = getattr(ds, "describe", None)  # optional: a modality's own summary lines
    if callable(describe):
        for line in describe():
            click.echo(f"  {line}")
    labels = getattr(ds, "labels", None)
    if labels is not None:
        names = list(getattr(ds, "class_names", None) or [])
        counts: dict[int, int] = {}
        for y in labels:
            counts[int(y)] = counts.get(int(y), 0) + 1
        summary = ", ".join(f"{names[k] if 0 <= k < len(names) else k}: {v}" for k, v in sorted(counts.items()))
        click.echo(f"labels: {summary}")
    skipped = list(getattr(ds, "skipped", []) or [])
    later = len(skipped) - indexed
    click.echo(f"skipped: {len(skipped)}" + (f" ({indexed} while indexing, {later} when their pixels were read)"
                                             if later > 0 else ""))
    for file, reason in skipped:
        click.echo(f"  {file}: {reason}")
    _fail_on_nonfinite(bad, [f for f, reason in skipped if "non-finite" in reason])


def _fail_on_nonfinite(samples: dict[str, tuple[int, int]], files: list[str]) -> None:
    """Report NaN/Inf counts and exit non-zero (a run would stop on a NaN loss)."""
    from medkit.api.errors import DataError

    for sid, (nan, inf) in samples.items():
        click.echo(f"  non-finite: {sid}: {nan} NaN, {inf} Inf")
    if samples or files:
        names = ", ".join(sorted(files) + sorted(samples))
        raise DataError(f"non-finite values (NaN/Inf) in {len(files) + len(samples)} file(s): {names}; "
                        f"fix or remove them before training")


from medkit.cli.data_preview_cmd import preview  # noqa: E402  (its own module; registered on this group)

data.add_command(preview)
