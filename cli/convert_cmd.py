"""``medkit convert medcoss`` (the official MedCoSS weights → a medkit run directory) and ``medkit convert
<desd|pcrlv2-2d|pcrlv2-3d|path-dino|unimiss>`` (a released comparison model → safetensors)."""

from __future__ import annotations

from collections import defaultdict

import click


class _ConvertGroup(click.Group):
    """Adds ``medkit convert <released model>`` on first use, so that ``medkit --help`` stays light."""

    _added = False

    def _add(self) -> None:
        if not self._added:
            self._added = True
            _add_release_commands(self)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._add()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        self._add()
        return super().get_command(ctx, name)


@click.group(cls=_ConvertGroup)
def convert() -> None:
    """Convert checkpoints of other codebases into medkit run directories."""


@convert.command("medcoss")
@click.argument("checkpoint", type=click.Path(dir_okay=False, exists=True))
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--vocab", "vocab", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Bio_ClinicalBERT's vocab.txt, so that report text gets the official model's ids.")
@click.option("--modality", "modalities", multiple=True,
              help="Keep only these modalities (repeatable; default: every installed MedCoSS modality).")
@click.option("--force", is_flag=True, help="Replace OUT_DIR if it is a medkit run directory.")
@click.option("--to", "to", type=click.Choice(["legacy", "native"]), default="legacy", show_default=True,
              help="legacy: the official layout (encoder.legacy=true); native: positions folded into the "
                   "corrected layout (same eval-mode image features).")
def medcoss(checkpoint: str, out_dir: str, vocab: str | None, modalities: tuple[str, ...], force: bool,
            to: str) -> None:
    """Convert the official MedCoSS CHECKPOINT (checkpoint-299.pth) into the run directory OUT_DIR.

    The run uses the legacy encoder (encoder.legacy=true), which reproduces the reference's numerics
    (flat position tables, random temporal row in training, causal text attention with its
    batch-scrambled padding mask), so the converted weights give the official features. The file is
    read with torch.load(weights_only=True); any pickled class other than argparse.Namespace is refused.

    \b
    Examples:
      medkit convert medcoss checkpoint-299.pth runs/medcoss-official --vocab Bio_ClinicalBERT/vocab.txt
      medkit convert medcoss checkpoint-299.pth runs/medcoss-xray --modality xray
      medkit convert medcoss checkpoint-299.pth runs/medcoss-native --to native
    """
    from medkit.config.compose import parse_modalities
    from medkit.interop.medcoss.convert import convert_medcoss
    from medkit.registry import get_host

    report = convert_medcoss(checkpoint, out_dir, vocab_file=vocab, modalities=parse_modalities(modalities) or None,
                             force=force, components=get_host(), to=to)
    layout = "encoder.legacy=true" if to == "legacy" else "native layout, encoder.legacy=false"
    click.echo(f"wrote {report.run_dir} ({', '.join(report.modalities)}; {layout})")
    click.echo(f"converted {len(report.converted)} of {report.official_keys} official tensors into "
               f"{report.medkit_keys} medkit tensors (sha256 {report.sha256[:12]}, epoch {report.epoch})")
    for key, target in report.folded.items():
        click.echo(f"folded {key} into {target}")
    by_reason: dict[str, list[str]] = defaultdict(list)
    for key, reason in report.dropped.items():
        by_reason[reason].append(key)
    for reason, keys in by_reason.items():
        click.echo(f"dropped {len(keys)}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''} ({reason})")
    if report.fresh:
        click.echo(f"left at initialisation {len(report.fresh)}: {', '.join(report.fresh[:4])}"
                   f"{' ...' if len(report.fresh) > 4 else ''}")
    for note in report.notes:
        click.echo(f"note: {note}")
    click.echo(f"use it with: medkit finetune --from {report.run_dir} ... or medkit run --from {report.run_dir} ...")


def _release_command(name: str) -> click.Command:
    """``medkit convert <name> CHECKPOINT OUT``: a released comparison model → safetensors."""

    @click.command(name)
    @click.argument("checkpoint", type=click.Path(dir_okay=False, exists=True))
    @click.argument("out", type=click.Path(dir_okay=False))
    @click.option("--force", is_flag=True, help="Replace OUT if it exists.")
    def command(checkpoint: str, out: str, force: bool) -> None:
        from medkit.finetune.external import convert_release, family
        from medkit.registry import get_host

        fam = family(name, get_host())
        report = convert_release(name, checkpoint, out, components=get_host(), force=force)
        click.echo(f"wrote {out}: {len(report.converted)} {fam.title} tensors ({report.coverage:.0%} of the model) "
                   f"from {report.released} released ones")
        by_reason: dict[str, list[str]] = defaultdict(list)
        for key, reason in report.dropped.items():
            by_reason[reason].append(key)
        for reason, keys in by_reason.items():
            click.echo(f"dropped {len(keys)}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''} ({reason})")
        click.echo(f"use it with: medkit finetune --backbone {name}:{out} ...")

    command.help = (f"Convert the released {name} CHECKPOINT (read with torch.load(weights_only=True); "
                    f"any pickled class but argparse.Namespace is refused) into OUT (.safetensors).")
    return command


def _add_release_commands(group: click.Group) -> None:
    """One ``medkit convert NAME`` per registered backbone (``medkit_register_backbones``)."""
    from medkit.finetune.external import names
    from medkit.registry import get_host

    for name in names(get_host()):
        group.add_command(_release_command(name))
