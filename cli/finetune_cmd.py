"""``medkit finetune``, ``medkit evaluate`` and ``medkit embed``: downstream use of a pre-trained encoder."""

from __future__ import annotations

from pathlib import Path

import click

from medkit.cli.common import make_reporter


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--task", default=None, help="classification or segmentation (implied by --recipe).")
@click.option("--data", default=None, help="Data folder or file (default: the task's built-in demo data).")
@click.option("--from", "source", default=None,
              help="Pre-trained run directory (or hf-hub:ID) whose encoder is fine-tuned.")
@click.option("--scratch", is_flag=True, help="Random init of the same architecture (the TFS baseline).")
@click.option("--recipe", default=None,
              help="Named dataset recipe, e.g. lits (`--recipe list` or --list-recipes lists them).")
@click.option("--modality", default=None, help="Modality of the data: report, xray, ct, mri, pathology.")
@click.option("--backbone", default="medkit", show_default=True,
              help="medkit, timm:<model>, monai:<network>, or a released model: desd:PATH, pcrlv2-2d:PATH, "
                   "pcrlv2-3d:PATH, path-dino:PATH, unimiss:PATH (supplement Table 2).")
@click.option("--preset", type=click.Choice(["tiny", "small", "base"]), default=None,
              help="Encoder size with --scratch (default base).")
@click.option("--max-steps", type=int, default=None, help="Optimizer steps (default: the recipe's iterations).")
@click.option("--run-dir", type=click.Path(file_okay=False), default=None,
              help="Run directory (default: runs/finetune-<time>-<task>-<modality>).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--resume", type=click.Path(file_okay=False, exists=True), default=None,
              help="Continue an interrupted fine-tuning run where its last checkpoint left it.")
@click.option("--show", is_flag=True, help="Print the recipe and the composed config, then exit.")
@click.option("--list-recipes", is_flag=True,
              help="List the installed recipes (task, modality, classes, data set), then exit.")
@click.argument("overrides", nargs=-1)
def finetune(task: str | None, data: str | None, source: str | None, scratch: bool, recipe: str | None,
             modality: str | None, backbone: str, preset: str | None, max_steps: int | None,
             run_dir: str | None, seed: int, resume: str | None, show: bool, list_recipes: bool,
             overrides: tuple[str, ...]) -> None:
    """Fine-tune a pre-trained encoder on a downstream task (OVERRIDES are KEY=VALUE, e.g.
    optim.lr=1e-4 task.head=one_layer task.patch_size=[96,96]).

    \b
    Examples:
      medkit finetune --task classification --modality xray --from runs/pretrain --max-steps 200
      medkit finetune --recipe lits --from runs/pretrain --data /data/Task03_Liver
      medkit finetune --task segmentation --modality ct --scratch --preset tiny --max-steps 20
      medkit finetune --task classification --modality xray --backbone timm:vit_tiny_patch16_224
      medkit finetune --recipe ricord --backbone desd:DeSD_Res50.pth
      medkit finetune --recipe lits --show
      medkit finetune --resume runs/finetune-lits
    """
    from medkit.api.errors import ConfigError
    from medkit.finetune.config import FinetuneSelection, FinetuneSettings, compose_finetune, describe_recipe
    from medkit.finetune.launch import execute_finetune, plan_finetune
    from medkit.finetune.recipes import format_recipes
    from medkit.registry import get_host

    host = get_host()
    if list_recipes or recipe == "list":
        click.echo(format_recipes(host))
        return
    if resume:
        if any((task, data, source, scratch, recipe, modality, overrides, max_steps is not None)):
            raise ConfigError(f"--resume continues {resume} exactly as its config.yaml says; drop the other "
                              f"options")
        cfg, target = plan_finetune(None, host=host, resume=resume)
    else:
        sel = FinetuneSelection(task=task, modality=modality, data=data, source=source, scratch=scratch,
                                recipe=recipe, backbone=backbone, preset=preset, max_steps=max_steps,
                                seed=seed, overrides=list(overrides))
        if show:
            from medkit.config.compose import to_yaml

            cfg = compose_finetune(sel, host=host, require_source=False)
            if recipe:
                click.echo(describe_recipe(recipe, host))
                click.echo("")
            click.echo(to_yaml(cfg), nl=False)
            return
        cfg, target = plan_finetune(sel, host=host, run_dir=run_dir)
    reporter = make_reporter(FinetuneSettings.of(cfg).trainer.log_every)
    results = execute_finetune(cfg, target, resume=bool(resume), host=host, reporter=reporter)
    if results.get("already_finished"):
        click.echo(f"{target} already finished at step {results.get('steps')}; nothing to resume "
                   f"(results: {target / 'metrics.json'})")
    shown = " ".join(f"{k}={v:.4f}" for k, v in results["test"].items() if "/" not in k)
    click.echo(f"test ({cfg['run']['task']}, best step {results['best_step']}): {shown}")
    note = (results.get("notes") or {}).get("recipe", {}).get("note")
    if note:
        click.echo(f"note: {note}")
    click.echo(f"run directory: {target}")


@click.command("evaluate")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--data", default=None, help="Other data in the same layout (default: the run's data).")
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True)
@click.option("--weights", type=click.Choice(["best", "last"]), default="best", show_default=True)
def evaluate(run_dir: str, data: str | None, split: str, weights: str) -> None:
    """Evaluate a fine-tuning run on the held-out split of its data (or of --data)."""
    from medkit.finetune.evaluate import evaluate_run

    from medkit.registry import get_host

    out = evaluate_run(Path(run_dir), data=data, split=split, weights=weights, components=get_host())
    for key, value in out["metrics"].items():
        click.echo(f"{key}\t{value:.4f}")
    click.echo(f"results: {Path(run_dir) / 'metrics' / f'evaluate-{split}.json'}")


@click.command("embed")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--modality", "modality", multiple=True, required=True,
              help="Modalities to embed (repeat or comma-separate).")
@click.option("--data", "data", multiple=True, help="MODALITY=PATH (default: each modality's demo data).")
@click.option("--max-samples", type=int, default=200, show_default=True, help="Samples per modality.")
@click.option("--method", type=click.Choice(["auto", "sklearn", "torch", "pca"]), default="auto",
              show_default=True, help="t-SNE implementation (auto: scikit-learn if installed).")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="PNG to write (default: RUN_DIR/embed/tsne-<modalities>.png).")
@click.option("--seed", type=int, default=0, show_default=True)
def embed(run_dir: str, modality: tuple[str, ...], data: tuple[str, ...], max_samples: int, method: str,
          out: str | None, seed: int) -> None:
    """t-SNE of pooled encoder embeddings coloured by modality (supplement F)."""
    from medkit.config.compose import parse_data, parse_modalities
    from medkit.finetune.embed import embed_modalities

    mods = parse_modalities(modality)
    from medkit.registry import get_host

    result = embed_modalities(Path(run_dir), mods, parse_data(data, mods), components=get_host(),
                              max_samples=max_samples,
                              method=method, out=Path(out) if out else None, seed=seed)
    click.echo(f"the model was trained on: {', '.join(result['trained_on']) or 'no finished stage'}")
    click.echo(f"t-SNE ({result['method']}) of {result['count']} samples: {result['png']}")
