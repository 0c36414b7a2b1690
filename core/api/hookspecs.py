"""The hook specifications of medkit: documented stubs only (project name ``medkit``).

Two families:

* **Registration** hooks are called once when the plugin manager loads; a plugin calls
  ``register(spec)`` for every component it provides.
* **Event** hooks observe a run (loggers, progress, notifications). Observers never change training;
  their return values are ignored.

Specs only ever gain arguments, so a plugin written for an older medkit keeps working.
"""

from __future__ import annotations

from typing import Any, Callable

import pluggy

PROJECT = "medkit"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def medkit_register_modalities(register: Callable[[Any], None]) -> None:
    """Register the modalities (kinds of data) this plugin provides.

    Called once, when the plugin manager loads plugins.

    Args:
        register: call it with one :class:`medkit.api.specs.ModalitySpec` per modality. Its ``meta``
            carries ``dims`` (1, 2 or 3), ``default_tokenizer`` and ``default_objective``.

    Example::

        @hookimpl
        def medkit_register_modalities(register):
            register(ModalitySpec("ct", "medkit_plugin_ct.modality:CTModality",
                                  summary="CT volumes", meta={"dims": 3, ...}))
    """


@hookspec
def medkit_register_tokenizers(register: Callable[[Any], None]) -> None:
    """Register tokenizers: modules turning one sample into tokens for the shared trunk.

    Called once, when the plugin manager loads plugins.

    Args:
        register: call it with one :class:`medkit.api.specs.TokenizerSpec` per tokenizer. The engine
            passes ``embed_dim`` to the factory itself (declare it in ``context``).

    Example::

        @hookimpl
        def medkit_register_tokenizers(register):
            register(TokenizerSpec("patch_3d", "medkit_plugin_tokenizers.patch:Patch3D",
                                   context=("embed_dim",)))
    """


@hookspec
def medkit_register_objectives(register: Callable[[Any], None]) -> None:
    """Register self-supervised pretext objectives (losses with their own heads).

    Called once, when the plugin manager loads plugins.

    Args:
        register: call it with one :class:`medkit.api.specs.ObjectiveSpec` per objective. The engine
            passes ``encoder`` and ``tokenizer`` (declare them in ``context``).

    Example::

        @hookimpl
        def medkit_register_objectives(register):
            register(ObjectiveSpec("mae", "medkit_plugin_mae.objective:MAEObjective",
                                   context=("encoder", "tokenizer")))
    """


@hookspec
def medkit_register_strategies(register: Callable[[Any], None]) -> None:
    """Register continual-learning strategies (how stages follow each other).

    Called once, when the plugin manager loads plugins.

    Args:
        register: call it with one :class:`medkit.api.specs.StrategySpec` per strategy.

    Example::

        @hookimpl
        def medkit_register_strategies(register):
            register(StrategySpec("er", "medkit_plugin_er.strategy:ER", summary="random replay"))
    """


@hookspec
def medkit_register_tasks(register: Callable[[Any], None]) -> None:
    """Register downstream tasks (a head, its loss and its metrics).

    Called once, when the plugin manager loads plugins.

    Args:
        register: call it with one :class:`medkit.api.specs.TaskSpec` per task.

    Example::

        @hookimpl
        def medkit_register_tasks(register):
            register(TaskSpec("classification", "medkit_plugin_classification.task:Classification"))
    """


@hookspec
def medkit_register_backbones(register: Callable[[Any], None]) -> None:
    """Register released comparison backbones for ``medkit finetune --backbone NAME:PATH``.

    Called once, when the plugin manager loads plugins. ``medkit convert NAME`` turns a backbone's
    released checkpoint into safetensors.

    Args:
        register: call it with one :class:`medkit.api.specs.BackboneSpec` per backbone. Its factory is a
            :class:`medkit.api.Family` (what the release is, which dimensions it takes, how to build
            the model and map the released keys onto it), or ``"module:attr"`` naming one.

    Example::

        @hookimpl
        def medkit_register_backbones(register):
            register(BackboneSpec("desd", "medkit_plugin_backbones.desd:FAMILY",
                                  summary="DeSD: 3D ResNet-50 (yeerwen/DeSD)"))
    """


@hookspec
def medkit_register_configs(store: Any) -> None:
    """Add named configs (recipes, presets) to medkit's isolated hydra-zen store.

    Called once, the first time a config is composed.

    Args:
        store: the :class:`hydra_zen.ZenStore` medkit composes from; add entries with
            ``store(config, group=..., name=...)``.

    Example::

        @hookimpl
        def medkit_register_configs(store):
            store(make_config(lr=1e-4, max_steps=25000), group="recipe", name="lits")
    """


@hookspec
def medkit_register_commands(cli: Any) -> None:
    """Add click commands to the ``medkit`` command line.

    Called once, when the CLI starts (after built-in commands exist).

    Args:
        cli: the root :class:`click.Group`; call ``cli.add_command(command)``. Inside a command,
            ``medkit.api.components.components_of(click.get_current_context())`` is the plugin
            host (``create``, ``spec``…): plugins never import the registry.

    Example::

        @hookimpl
        def medkit_register_commands(cli):
            cli.add_command(my_command)
    """


@hookspec
def medkit_on_run_start(run: Any) -> None:
    """Observe the start of a run, after the run directory and config exist.

    Args:
        run: a :class:`medkit.api.events.RunInfo` (run_dir, config, stages, resumed).

    Example::

        @hookimpl
        def medkit_on_run_start(run):
            print("training into", run.run_dir)
    """


@hookspec
def medkit_on_stage_start(run: Any, stage: Any) -> None:
    """Observe the start (or resumption) of a stage.

    Args:
        run: the :class:`medkit.api.events.RunInfo`.
        stage: a :class:`medkit.api.events.StageInfo` (index, modalities, max_steps, start_step).

    Example::

        @hookimpl
        def medkit_on_stage_start(run, stage):
            print("stage", stage.index, stage.modalities)
    """


@hookspec
def medkit_on_step_end(run: Any, stage: Any, step: int, metrics: dict[str, float], modality: str,
                       role: str) -> None:
    """Observe the end of one optimizer step.

    Called every step, in order, at the step log's sync points (every ``trainer.log_every`` steps,
    before a checkpoint and at the end of the stage), on every rank.

    Args:
        run: the :class:`medkit.api.events.RunInfo`.
        stage: the :class:`medkit.api.events.StageInfo`.
        step: the number of optimizer steps done in this stage (1-based).
        metrics: ``loss``, ``lr`` and the objective's and strategy's own terms (``mae``, ``mlm``,
            ``distill``…) of this step's batch.
        modality: the modality of this step's batch (each step trains on one modality's batch).
        role: ``"current"`` (this stage's data) or ``"buffer"`` (rehearsed data of an earlier stage).
            An implementation may leave out ``modality`` and ``role`` (pluggy passes the arguments an
            implementation names); :func:`medkit.api.step_scalars` tags the terms by modality.

    Example::

        @hookimpl
        def medkit_on_step_end(run, stage, step, metrics, modality):
            wandb.log({f"train/{modality}/{k}": v for k, v in metrics.items()}, step=step)
    """


@hookspec
def medkit_on_stage_end(run: Any, stage: Any, metrics: dict[str, float]) -> None:
    """Observe the end of a stage, after its evaluation.

    Args:
        run: the :class:`medkit.api.events.RunInfo`.
        stage: the :class:`medkit.api.events.StageInfo`.
        metrics: held-out metrics per seen modality, e.g. ``{"ct/pretext_loss": 0.8}``.

    Example::

        @hookimpl
        def medkit_on_stage_end(run, stage, metrics):
            print(metrics)
    """


@hookspec
def medkit_on_run_end(run: Any, results: dict[str, Any]) -> None:
    """Observe the end of a run, after the final files are written.

    Args:
        run: the :class:`medkit.api.events.RunInfo`.
        results: ``run_dir`` and the evaluation ``matrix`` (rows: after stage i; columns: modality).

    Example::

        @hookimpl
        def medkit_on_run_end(run, results):
            notify(f"done: {results['run_dir']}")
    """
