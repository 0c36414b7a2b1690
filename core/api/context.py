"""What the engine hands strategies: the live model, data and stage of a run."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import torch
from torch import nn

from medkit.api.batch import Batch, collate

if TYPE_CHECKING:  # pragma: no cover
    from medkit.models.encoder import EncoderOutput, UniversalEncoder
    from medkit.api.features import FeatureCache
    from medkit.api.protocols import Modality, SampleDataset


@dataclass
class LossOutput:
    """A scalar loss and the metrics to log with it (``{"mae": 0.8}``): floats, or detached 0-d
    tensors, which stay on the device until the engine's next sync point reads them (no host sync per
    step; :mod:`medkit.engine.steplog`)."""

    loss: torch.Tensor
    metrics: dict[str, float | torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class StageState:
    """What the engine tells a strategy about the stage it is in (read-only; a new one per stage).

    Attributes:
        index: 0-based index of the stage in :attr:`RunContext.stages`.
        max_steps: optimizer steps the stage runs (0 for a strategy that does not train).
        start_step: the step it starts from (above 0 when resumed mid-stage).
        resumed: the stage continues from a checkpoint taken in its middle (``medkit run --resume``):
            the optimizer and the strategy's saved state were restored, so a strategy must not rebuild
            what :meth:`before_stage` builds at a stage's start (CaSSLe's predictor, MedCoSS's teacher).
    """

    index: int = 0
    max_steps: int = 0
    start_step: int = 0
    resumed: bool = False


@dataclass
class EvaluationState:
    """The evaluator's bookkeeping over a run (``medkit.eval.evaluate``): probes skipped and the
    modalities whose skipping was already logged."""

    probe_skipped: dict[str, str] = field(default_factory=dict)
    not_evaluated_logged: set[str] = field(default_factory=set)


class SampleMemo:
    """Un-augmented samples kept in memory for later readers, up to ``max_bytes`` of tensor data.

    An un-augmented load (``seed=None``) is a pure function of the index, so the evaluation after
    every stage (probes, refitted decoders) can reuse what an earlier stage read instead of decoding
    the same files again; the batches are the same either way. Samples past the budget are loaded
    every time, never evicted: the memo only ever saves work.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes, self.used, self.hits, self.misses = int(max_bytes), 0, 0, 0
        self._rows: dict[tuple[str, int], Any] = {}

    def get(self, modality: str, index: int, load: Any) -> Any:
        """Sample ``index`` of ``modality``: the kept one, else ``load()`` (kept while under budget)."""
        key = (modality, int(index))
        if key in self._rows:
            self.hits += 1
            return self._rows[key]
        self.misses += 1
        sample = load()
        size = sum(v.element_size() * v.nelement() for v in sample.values() if isinstance(v, torch.Tensor)) \
            + sum(len(v) for v in sample.values() if isinstance(v, str))
        if self.used + size <= self.max_bytes:
            self._rows[key] = sample
            self.used += size
        return sample


#: The fields the engine moves on during a run (through :meth:`RunContext.begin_stage`, its step counter,
#: the stage's optimizer); every other field is fixed once the context is built.
ENGINE_OWNED = frozenset({"stage_index", "step", "max_steps", "optimizer", "step_factory", "stage_state"})


@dataclass
class RunContext:
    """The live state of a run, passed to every strategy call.

    Attributes:
        run_dir: the run directory (rank 0 writes there).
        encoder: the shared encoder (unwrapped, never DDP).
        heads: pretext objectives by modality name (each an ``nn.Module`` with its heads).
        modalities: modality components by name.
        tokenizer_of: tokenizer name by modality name.
        train_sets / eval_sets: datasets by modality (with / without augmentation).
        train_indices / val_indices: the split of each modality's dataset.
        stages: every stage of the run, as lists of modality names.
        stage_index: 0-based index of the current stage; ``stage`` its modalities.
        step: optimizer steps done in the current stage; ``max_steps`` its length.
        config: the strategy's own config values.
        device, seed, rank, world_size: where and how the run executes.
        model: the module the optimizer trains (encoder + heads, DDP-wrapped when distributed).
        optimizer: the current stage's optimizer (``None`` outside a stage).
        data_paths: the folder each modality was read from.
        step_factory: builds the run's :class:`medkit.engine.step.TrainStep` for an optimizer
            (use :meth:`make_step`): strategies that train on their own (PackNet's post-pruning
            fine-tuning) step through the same primitive as the engine, DDP and AMP included.
        feature_cache: rows of :meth:`features` kept for a later reader of the same weights
            (:class:`medkit.api.features.FeatureCache`; the engine sets it, ``None`` keeps nothing).
        stage_state: the current stage as a read-only :class:`StageState` (``resumed``…); the engine
            replaces it at each stage start through :meth:`begin_stage`.
        not_evaluated: ``{modality: reason}`` of modalities the engine cannot evaluate honestly (trained
            in an earlier run whose data this run does not have); read-only.
        evaluation: the evaluator's own bookkeeping (:class:`EvaluationState`).
        batch_loader: loads index chunks as un-augmented batches in the run's DataLoader workers
            (:class:`medkit.engine.chunks.ChunkLoader`; the engine sets it when
            ``trainer.num_workers > 0``, ``None`` loads in the main process): use :meth:`load_batches`.
        sample_memo: un-augmented samples (of ``eval_sets``, training and held-out indices) kept across stages by
            :meth:`load_batch` (:class:`SampleMemo`; the engine sets it when
            ``trainer.eval_cache_mb > 0``, ``None`` keeps nothing).

    The engine owns this object: strategies, objectives and observers read it and keep their own state
    on themselves (a strategy's :meth:`state_dict` is what survives), never by writing to it. Once built,
    only the fields in :data:`ENGINE_OWNED` can be rebound; assigning any other raises
    ``dataclasses.FrozenInstanceError``.
    """

    run_dir: Path
    encoder: UniversalEncoder
    heads: nn.ModuleDict
    modalities: dict[str, Modality]
    tokenizer_of: dict[str, str]
    train_sets: dict[str, SampleDataset]
    eval_sets: dict[str, SampleDataset]
    train_indices: dict[str, list[int]]
    val_indices: dict[str, list[int]]
    stages: list[list[str]]
    config: dict[str, Any]
    device: torch.device
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    stage_index: int = 0
    step: int = 0
    max_steps: int = 0
    batch_size: int = 8
    model: nn.Module | None = None
    optimizer: torch.optim.Optimizer | None = None
    reporter: Any = None
    data_paths: dict[str, str] = field(default_factory=dict)
    step_factory: Any = None
    feature_cache: FeatureCache | None = None
    stage_state: StageState = field(default_factory=StageState)
    not_evaluated: Mapping[str, str] = field(default_factory=dict)
    evaluation: EvaluationState = field(default_factory=EvaluationState)
    batch_loader: Any = None
    sample_memo: SampleMemo | None = None

    def __post_init__(self) -> None:
        self.not_evaluated = MappingProxyType(dict(self.not_evaluated))
        object.__setattr__(self, "_built", True)

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in ENGINE_OWNED and self.__dict__.get("_built", False):
            raise FrozenInstanceError(f"RunContext.{name} is fixed once the run is built; a plugin keeps its own "
                                      f"state on itself (only {', '.join(sorted(ENGINE_OWNED))} move, by the engine)")
        object.__setattr__(self, name, value)

    def begin_stage(self, state: StageState) -> None:
        """Enter a stage (the engine's call): the read-only :attr:`stage_state` and the step counters
        :attr:`stage_index`, :attr:`step` and :attr:`max_steps` follow ``state``."""
        self.stage_state = state
        self.stage_index, self.step, self.max_steps = state.index, state.start_step, state.max_steps

    def make_step(self, optimizer: torch.optim.Optimizer, **hooks: Any) -> Any:
        """A training step bound to this run (device, AMP, clipping, DDP) for ``optimizer``;
        ``hooks``: ``after_backward`` / ``after_optimizer_step`` callables."""
        if self.step_factory is None:
            raise RuntimeError("this RunContext was not created by the engine; it cannot make training steps")
        return self.step_factory(optimizer, **hooks)

    @property
    def stage(self) -> list[str]:
        return self.stages[self.stage_index]

    @property
    def seen(self) -> list[str]:
        """Modalities trained so far, including the current stage, in order."""
        out: list[str] = []
        for stage in self.stages[: self.stage_index + 1]:
            out += [m for m in stage if m not in out]
        return out

    @property
    def previous(self) -> list[str]:
        """Modalities of earlier stages only."""
        out: list[str] = []
        for stage in self.stages[: self.stage_index]:
            out += [m for m in stage if m not in out]
        return out

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def pretext_loss(self, batch: Batch, *, generator: torch.Generator | None = None) -> LossOutput:
        """The modality's own self-supervised loss on ``batch``."""
        return self.heads[batch.modality](self.encoder, batch, generator=generator)

    def encode(self, batch: Batch, *, encoder: UniversalEncoder | None = None,
               ids_keep: torch.Tensor | None = None, return_hidden: bool = False) -> EncoderOutput:
        """Encode ``batch`` with its modality's tokenizer (``encoder`` defaults to the student)."""
        enc = encoder if encoder is not None else self.encoder
        return enc(self.tokenizer_of[batch.modality], batch.inputs, batch.attention_mask,
                   ids_keep=ids_keep, return_hidden=return_hidden)

    def load_batch(self, modality: str, indices: Sequence[int], *, seed: int | None = None,
                   train: bool = False, role: str = "current") -> Batch:
        """Load samples ``indices`` of ``modality`` as one batch on the run's device."""
        ds = (self.train_sets if train else self.eval_sets)[modality]
        memo = self.sample_memo if not train and seed is None else None
        if memo is not None:
            samples = [memo.get(modality, i, lambda i=i: ds.load(i, seed=None)) for i in indices]
        else:
            samples = [ds.load(i, seed=None if seed is None else seed + k) for k, i in enumerate(indices)]
        tok = self.encoder.tokenizers[self.tokenizer_of[modality]]
        return collate(samples, modality, tok, role=role).to(self.device)

    def load_batches(self, modality: str, chunks: Sequence[Sequence[int]], *, train: bool = False,
                     role: str = "current") -> Iterator[Batch]:
        """Un-augmented batches of the index ``chunks`` of ``modality``, in order, on the run's device:
        decoded by the run's DataLoader workers when there are some (:attr:`batch_loader`), else here,
        one :meth:`load_batch` per chunk; the batches are the same either way."""
        if self.batch_loader is None:
            for chunk in chunks:
                yield self.load_batch(modality, chunk, train=train, role=role)
            return
        for batch in self.batch_loader(modality, chunks, train=train, role=role):
            yield batch.to(self.device)

    @torch.no_grad()
    def features(self, modality: str, indices: Sequence[int], *, batch_size: int | None = None,
                 encoder: UniversalEncoder | None = None) -> torch.Tensor:
        """Pooled eval-mode features ``[N, D]`` (mask ratio 0, mean over non-padding tokens,
        un-augmented input). With the student encoder, rows the :attr:`feature_cache` kept for
        the current weights are reused and only the other samples are encoded."""
        enc = encoder if encoder is not None else self.encoder
        bs = batch_size or self.batch_size
        if self.feature_cache is None or enc is not self.encoder:
            return self._encode_features(modality, indices, bs, enc)
        return self.feature_cache.features(modality, indices,
                                           lambda some: self._encode_features(modality, some, bs, enc))

    @torch.no_grad()
    def _encode_features(self, modality: str, indices: Sequence[int], bs: int,
                         enc: UniversalEncoder) -> torch.Tensor:
        was_training = enc.training
        enc.eval()
        out = []
        try:
            chunks = [indices[k:k + bs] for k in range(0, len(indices), bs)]
            for batch in self.load_batches(modality, chunks):
                out.append(self.encode(batch, encoder=enc).pooled().float().cpu())
        finally:
            enc.train(was_training)
        return torch.cat(out) if out else torch.zeros(0, enc.embed_dim)
