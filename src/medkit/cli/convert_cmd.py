"""``medkit convert medcoss``: turn the official MedCoSS weights into a medkit run directory."""

from __future__ import annotations

from collections import defaultdict

import click


@click.group()
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
