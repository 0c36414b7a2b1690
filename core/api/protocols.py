"""The interfaces the engine drives plugin components through (``typing.Protocol``s)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from medkit.api.context import LossOutput, RunContext
    from medkit.api.batch import Batch, Sample, Source
    from medkit.models.encoder import Tokens, UniversalEncoder


@runtime_checkable
class SampleDataset(Protocol):
    """Samples of one modality, addressed by index, each with a stable id.

    ``ids[i]`` is a string that identifies sample ``i`` across runs (a path relative to the data root
    plus a window index, say): buffers store ids, never copies. ``labels`` is ``None`` when the data
    carry no labels, otherwise one int per sample (``-1`` for unlabelled ones) and ``class_names``.
    ``sources[i]`` names the volume / image / patient / report sample ``i`` comes from: held-out
    splits take whole sources, joined further by patient, study or case and by duplicate images
    where the host can read them from the files (:mod:`medkit.data.groups`).
    """

    ids: Sequence[str]
    sources: Sequence[str]
    labels: Sequence[int] | None
    class_names: Sequence[str] | None

    def __len__(self) -> int: ...

    # Optional: ``view(train: bool) -> SampleDataset``, the same index with augmentation on or off
    # (see medkit.api.batch.TrainViewMixin); without it the engine indexes the folder twice.

    def load(self, index: int, seed: int | None = None) -> Sample:
        """Return sample ``index``; ``seed=None`` gives the un-augmented view, otherwise augmentation
        is drawn from ``seed`` alone (so a resumed run sees the same batches)."""


@runtime_checkable
class Modality(Protocol):
    """A kind of data: readers, preprocessing, demo data and defaults."""

    name: str
    dims: int  # 1 (text), 2 or 3
    default_tokenizer: str
    default_objective: str

    def demo_data(self, root: Path) -> Path:
        """Write the built-in demo data under ``root`` (idempotent) and return the folder to read."""

    def dataset(self, data: Path, *, train: bool) -> SampleDataset:
        """Index the files under ``data``; ``train`` enables augmentation in ``load(i, seed)``.

        Raises:
            DataError: naming the file and what was expected, when nothing usable is found.
        """


@runtime_checkable
class Tokenizer(Protocol):
    """An ``nn.Module`` turning a batch of one dimensionality into trunk tokens with positions."""

    dims: int
    embed_dim: int
    adds_cls: bool  # images: True, the encoder prepends its CLS after masking; text: False

    def collate(self, samples: Sequence[Sample], modality: str) -> dict[str, torch.Tensor]:
        """Stack samples into ``{"inputs": ..., "attention_mask": ...}`` (mask only for text),
        checking every shape and naming the modality and the expected shape on error."""

    def __call__(self, inputs: torch.Tensor, attention_mask: torch.Tensor | None = None) -> Tokens:
        """Embed ``inputs`` into ``Tokens`` (``x [B, N, D]`` with positions added)."""


@runtime_checkable
class Objective(Protocol):
    """An ``nn.Module`` computing a self-supervised loss with its own heads."""

    def __call__(self, encoder: UniversalEncoder, batch: Batch, *,
                 generator: torch.Generator | None = None) -> LossOutput:
        """Return the pretext loss of ``batch``; random masking draws from ``generator``."""


@runtime_checkable
class Strategy(Protocol):
    """How stages follow each other without forgetting: the one strategy interface, which the engine
    types against. A strategy subclasses :class:`medkit.strategies.base.BaseStrategy` (exported as
    ``medkit.api.BaseStrategy``), the interface's reference implementation with every method a no-op
    (tests/api/test_public_api.py checks it implements every method here, with the same parameters)."""

    name: str
    trains: bool  # False: no pre-training at all (``tfs``)
    min_current_fraction: float  # least share of a stage's steps on its own data (buffers interleaved)

    def plan(self, modalities: Sequence[str]) -> list[list[str]]:
        """Group the selected modalities (in order) into stages."""

    def setup(self, ctx: RunContext) -> None:
        """Called once the model exists, before the first stage (also on resume and --from)."""

    def before_stage(self, ctx: RunContext) -> None: ...

    def sources(self, ctx: RunContext) -> list[Source]:
        """Data streams of this stage; the engine interleaves them in proportion to their weights."""

    def loss(self, ctx: RunContext, batch: Batch) -> LossOutput:
        """Loss of one homogeneous batch (default: the modality's pretext loss)."""

    def after_backward(self, ctx: RunContext) -> None:
        """After the backward pass of a step, before clipping (PackNet masks gradients here)."""

    def after_optimizer_step(self, ctx: RunContext) -> None:
        """Right after every optimizer step (PackNet re-imposes frozen weights here)."""

    def after_stage(self, ctx: RunContext) -> None: ...

    def eval_context(self, ctx: RunContext, modality: str) -> AbstractContextManager[Any]:
        """Context in which ``modality`` is evaluated (PackNet swaps in that stage's weights)."""

    def parameters_groups(self, ctx: RunContext) -> list[dict[str, Any]]:
        """Extra optimizer parameter groups the strategy trains (CaSSLe's predictor)."""

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Tensors (saved as safetensors) and JSON metadata needed to resume or continue."""

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None: ...


@runtime_checkable
class Task(Protocol):
    """A downstream task driven by ``medkit finetune``: the data layouts it reads, a head on a
    backbone, its loss, metrics and pictures.

    The factory receives ``dims`` (1, 2 or 3) and ``modality`` from the engine (declare them in the
    spec's ``context``); every other factory parameter is a ``task.*`` config field.
    ``backbone_output`` says what the head consumes: ``"pooled"`` features ``[B, D]`` (a
    classifier) or per-block feature ``"maps"`` (a dense decoder). A backbone (see
    :mod:`medkit.finetune.backbones`) offers ``collate``, ``pooled``, ``feature_maps`` and
    ``default_blocks``; an external network that is already a whole segmenter has ``is_segmenter``.
    """

    name: str
    dims: int
    modality: str
    backbone_output: str  # "pooled" or "maps"
    eval_batch_size: int | None  # None: the training batch size

    def demo_data(self, root: Path) -> Path:
        """Write small labelled demo data of ``dims`` under ``root`` (idempotent, deterministic,
        in a layout :meth:`splits` reads) and return the path to pass to :meth:`splits`."""

    def splits(self, data: Path, *, seed: int) -> dict[str, SampleDataset]:
        """``{"train": ..., "val": ..., "test": ...}``: official split files when the layout has
        them, otherwise a deterministic split by sample id. Each dataset has ``class_names``.

        Raises:
            DataError: naming the file for unreadable data, a label outside the class list, a
                mask whose shape differs from its image, or an empty split.
        """

    def out_channels(self, class_names: Sequence[str]) -> int:
        """Logit channels of the head for ``class_names``."""

    def build_model(self, backbone: torch.nn.Module, class_names: Sequence[str]) -> torch.nn.Module:
        """The backbone (as ``model.backbone``) with a freshly initialised head."""

    def collate(self, samples: Sequence[Sample], backbone: torch.nn.Module) -> Batch:
        """One batch; ``labels`` are class ids ``[B]`` (classification) or masks ``[B, *S]``."""

    def loss(self, model: torch.nn.Module, batch: Batch) -> LossOutput:
        """The training loss of ``batch`` (the model is in train mode)."""

    def evaluate(self, model: torch.nn.Module, batches: Any, class_names: Sequence[str]) -> dict[str, Any]:
        """Metrics over an iterable of batches in eval mode without gradients:
        ``{"metrics": {name: float}, "score": float, ...}``; ``score`` (higher is better) selects
        the best checkpoint; other keys feed :meth:`pictures`."""

    def pictures(self, evaluation: dict[str, Any], out_dir: Path, class_names: Sequence[str]) -> list[Path]:
        """Write PNG figures of an :meth:`evaluate` result into ``out_dir``; return their paths."""
