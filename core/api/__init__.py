"""medkit.api: the whole plugin contract — one public namespace over the runtime's own modules.

A plugin imports only this namespace (``from medkit.api import StrategySpec, hookimpl, RunContext``);
its tests may also import :mod:`medkit.testing`. The names live in the runtime's modules
(``medkit.api.errors``, ``medkit.models.encoder``, ``medkit.data.walk``…) and are re-exported here, as
timm re-exports its private modules in one ``__init__``. The runtime itself imports those leaf modules,
never this namespace, so the packages stay acyclic with this namespace on top (tests/test_layering.py).

Names load on first use (PEP 562 ``__getattr__``): ``from medkit.api import hookimpl`` stays light (no
torch) and listing plugins stays fast. :data:`MEDKIT_API_VERSION` (``"major.minor"``) versions this
surface: a name added grows the minor, a name removed or changed grows the major, and the host refuses a
plugin that declares another major (:func:`medkit.api.version.check_plugin_api`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medkit.api.lazy import lazy_exports as _lazy_exports

#: public name → ``"module"`` or ``"module:attribute"`` (the attribute's name where it differs).
_EXPORTS: dict[str, str] = {
    # version
    "MEDKIT_API_VERSION": "medkit.api.version",
    "API_VERSION": "medkit.api.version:API_MAJOR",
    # errors
    "MedkitError": "medkit.api.errors", "PluginError": "medkit.api.errors", "ConfigError": "medkit.api.errors",
    "DataError": "medkit.api.errors", "CheckpointError": "medkit.api.errors",
    # hooks and specs
    "hookimpl": "medkit.api.hookspecs",
    "KINDS": "medkit.api.specs", "ComponentSpec": "medkit.api.specs", "ModalitySpec": "medkit.api.specs",
    "TokenizerSpec": "medkit.api.specs", "ObjectiveSpec": "medkit.api.specs", "StrategySpec": "medkit.api.specs",
    "TaskSpec": "medkit.api.specs", "BackboneSpec": "medkit.api.specs",
    # the interfaces the engine drives components through, and the host
    "SampleDataset": "medkit.api.protocols", "Modality": "medkit.api.protocols",
    "Tokenizer": "medkit.api.protocols", "Objective": "medkit.api.protocols", "Strategy": "medkit.api.protocols",
    "Task": "medkit.api.protocols",
    "Components": "medkit.api.components", "components_of": "medkit.api.components",
    # batches
    "Sample": "medkit.api.batch", "Batch": "medkit.api.batch", "Source": "medkit.api.batch",
    "collate": "medkit.api.batch", "stack_inputs": "medkit.api.batch",
    "TrainViewMixin": "medkit.api.views",
    # the run, as strategies and observers see it
    "RunContext": "medkit.api.context", "StageState": "medkit.api.context", "LossOutput": "medkit.api.context",
    "RunInfo": "medkit.api.events", "StageInfo": "medkit.api.events",
    "Reporter": "medkit.api.progress", "LogReporter": "medkit.api.progress", "track": "medkit.api.progress",
    "work_reporter": "medkit.api.progress",
    # what experiment loggers (TensorBoard, W&B, MLflow observers) record, named alike
    "step_scalars": "medkit.api.tracking", "stage_scalars": "medkit.api.tracking",
    "stage_marker": "medkit.api.tracking", "stage_title": "medkit.api.tracking",
    "flat_config": "medkit.api.tracking", "global_step": "medkit.api.tracking",
    "is_main_rank": "medkit.api.tracking", "matrix_tables": "medkit.api.tracking",
    "matrix_markdown": "medkit.api.tracking", "observer_hooks": "medkit.api.tracking",
    "BaseStrategy": "medkit.strategies.base",
    # collectives (one process or torchrun)
    "gather_cat": "medkit.api.collectives", "all_gather_cat": "medkit.api.collectives",
    "broadcast_": "medkit.api.collectives", "barrier": "medkit.api.collectives",
    "rank": "medkit.api.collectives", "world_size": "medkit.api.collectives",
    "per_sample_rand": "medkit.api.randomness",
    # the encoder and masking
    "UniversalEncoder": "medkit.models.encoder", "Tokens": "medkit.models.encoder",
    "EncoderOutput": "medkit.models.encoder", "Block": "medkit.models.encoder",
    "init_vit_weights": "medkit.models.encoder", "interpolate_grid": "medkit.models.encoder",
    "sincos_init": "medkit.models.encoder", "FlatPositions": "medkit.models.legacy",
    "Masking": "medkit.models.masking", "make_noise": "medkit.models.masking",
    "random_masking": "medkit.models.masking", "gather_tokens": "medkit.models.masking",
    # modality bases
    "Image2DModality": "medkit.data.modality2d", "Image2DDataset": "medkit.data.modality2d",
    "Entry2D": "medkit.data.modality2d", "Index": "medkit.data.modality2d",
    "raster_kind": "medkit.data.image2d",
    "WindowedVolumeModality": "medkit.data.volume_modality", "write_nifti_demo": "medkit.data.volume_modality",
    "Volume": "medkit.data.volumes", "load_volume": "medkit.data.volumes",
    "pad_depth": "medkit.data.windows", "resampled_slices": "medkit.data.windows",
    "DEFAULT_CACHE_BYTES": "medkit.data.cache",
    # data helpers
    "IMAGE_SUFFIXES": "medkit.data.readers", "NIFTI_SUFFIXES": "medkit.data.readers",
    "file_stem": "medkit.data.readers", "header_shape": "medkit.data.readers",
    "read_array": "medkit.data.readers", "read_mask": "medkit.data.readers",
    "TASK_NORMALIZE_MODES": "medkit.data.transforms", "hu_window": "medkit.data.transforms",
    "clip_zscore": "medkit.data.transforms", "normalize": "medkit.data.transforms",
    "resize": "medkit.data.transforms", "generator": "medkit.data.transforms",
    "random_flips": "medkit.data.transforms",
    "OnError": "medkit.data.walk", "walk": "medkit.data.walk", "relative_id": "medkit.data.walk",
    "check_on_error": "medkit.data.walk", "has_suffix": "medkit.data.walk",
    "parse_label": "medkit.data.labels", "encode_labels": "medkit.data.labels",
    "split_three": "medkit.data.split",
    "check_max_upsample": "medkit.data.upsample", "screen_upsampled": "medkit.data.finetune_upsample",
    "Table": "medkit.data.tables", "read_table": "medkit.data.tables",
    "SPLITS": "medkit.data.items", "Item": "medkit.data.items", "ItemDataset": "medkit.data.items",
    "check_splits": "medkit.data.items",
    "check_edges": "medkit.data.checks", "check_finite": "medkit.data.checks",
    "warnings_of": "medkit.data.checks", "convert_all": "medkit.data.checks",
    "check_dicom_modality": "medkit.data.dicom_checks",
    "check_dicom_decodable": "medkit.data.dicom_codecs:check_decodable",
    "dicom_decode_error": "medkit.data.dicom_codecs:decode_error",
    "decode_dicom": "medkit.data.dicom:decode", "dicom_file_key": "medkit.data.dicom:file_key",
    "cached_image": "medkit.data.dicom:cached",
    "demo_is_current": "medkit.data.demo", "mark_demo": "medkit.data.demo", "save_image": "medkit.data.demo",
    "write_csv": "medkit.data.demo",
    # the ``backbone`` kind (medkit_register_backbones): the released models' building blocks
    "ExternalBackbone": "medkit.finetune.external.base", "Family": "medkit.finetune.external.base",
    "StateDict": "medkit.finetune.external.base", "entry": "medkit.finetune.external.base",
    "load_into": "medkit.finetune.external.base", "resize_to": "medkit.finetune.external.base",
    "split_keys": "medkit.finetune.external.base", "default_blocks": "medkit.finetune.backbones",
    # storage
    "atomic_write_bytes": "medkit.storage.files", "atomic_write_text": "medkit.storage.files",
    "load_state_checked": "medkit.storage.files",
}

#: the contract, sorted (tests/api/test_public_api.py: the same names as ``_EXPORTS``)
__all__ = [
    "API_VERSION", "BackboneSpec", "BaseStrategy", "Batch", "Block", "CheckpointError", "ComponentSpec",
    "Components", "ConfigError", "DEFAULT_CACHE_BYTES", "DataError", "EncoderOutput", "Entry2D", "ExternalBackbone",
    "Family", "FlatPositions", "IMAGE_SUFFIXES", "Image2DDataset", "Image2DModality", "Index", "Item",
    "ItemDataset", "KINDS", "LogReporter", "LossOutput", "MEDKIT_API_VERSION", "Masking", "MedkitError", "Modality",
    "ModalitySpec", "NIFTI_SUFFIXES", "Objective", "ObjectiveSpec", "OnError", "PluginError", "Reporter",
    "RunContext", "RunInfo", "SPLITS", "Sample", "SampleDataset", "Source", "StageInfo", "StageState", "StateDict",
    "Strategy", "StrategySpec", "TASK_NORMALIZE_MODES", "Table", "Task", "TaskSpec", "Tokenizer", "TokenizerSpec",
    "Tokens", "TrainViewMixin", "UniversalEncoder", "Volume", "WindowedVolumeModality", "all_gather_cat",
    "atomic_write_bytes", "atomic_write_text", "barrier", "broadcast_", "cached_image", "check_dicom_decodable",
    "check_dicom_modality", "check_edges", "check_finite", "check_max_upsample", "check_on_error", "check_splits",
    "clip_zscore", "collate", "components_of", "convert_all", "decode_dicom", "default_blocks", "demo_is_current",
    "dicom_decode_error", "dicom_file_key", "encode_labels", "entry", "file_stem", "flat_config", "gather_cat",
    "gather_tokens", "generator", "global_step", "has_suffix", "header_shape", "hookimpl", "hu_window",
    "init_vit_weights", "interpolate_grid", "is_main_rank", "load_into", "load_state_checked", "load_volume",
    "make_noise", "mark_demo", "matrix_markdown", "matrix_tables", "normalize", "observer_hooks", "pad_depth",
    "parse_label", "per_sample_rand", "random_flips", "random_masking", "rank", "raster_kind", "read_array",
    "read_mask", "read_table", "relative_id", "resampled_slices", "resize", "resize_to", "save_image",
    "screen_upsampled", "sincos_init", "split_keys", "split_three", "stack_inputs", "stage_marker",
    "stage_scalars", "stage_title", "step_scalars", "track", "walk", "warnings_of", "work_reporter", "world_size",
    "write_csv", "write_nifti_demo",
]


__getattr__, __dir__ = _lazy_exports(globals(), _EXPORTS, __all__, "the plugin contract is "
    "medkit.api.__all__ (docs/writing-a-plugin.md)")


if TYPE_CHECKING:  # the same names for type checkers (tests/api/test_public_api.py keeps both in step)
    from medkit.api.batch import Batch, Sample, Source, collate, stack_inputs
    from medkit.api.views import TrainViewMixin
    from medkit.api.collectives import all_gather_cat, barrier, broadcast_, gather_cat, rank, world_size
    from medkit.api.components import Components, components_of
    from medkit.api.context import LossOutput, RunContext, StageState
    from medkit.api.errors import CheckpointError, ConfigError, DataError, MedkitError, PluginError
    from medkit.api.events import RunInfo, StageInfo
    from medkit.api.hookspecs import hookimpl
    from medkit.api.progress import LogReporter, Reporter, track, work_reporter
    from medkit.api.protocols import Modality, Objective, SampleDataset, Strategy, Task, Tokenizer
    from medkit.api.randomness import per_sample_rand
    from medkit.api.tracking import (flat_config, global_step, is_main_rank, matrix_markdown, matrix_tables,
                                     observer_hooks, stage_marker, stage_scalars, stage_title, step_scalars)
    from medkit.api.specs import (KINDS, BackboneSpec, ComponentSpec, ModalitySpec, ObjectiveSpec, StrategySpec,
                                  TaskSpec, TokenizerSpec)
    from medkit.api.version import API_MAJOR as API_VERSION
    from medkit.api.version import MEDKIT_API_VERSION
    from medkit.data.cache import DEFAULT_CACHE_BYTES
    from medkit.data.checks import check_edges, check_finite, convert_all, warnings_of
    from medkit.data.dicom_checks import check_dicom_modality
    from medkit.data.dicom_codecs import check_decodable as check_dicom_decodable
    from medkit.data.dicom_codecs import decode_error as dicom_decode_error
    from medkit.data.demo import demo_is_current, mark_demo, save_image, write_csv
    from medkit.data.dicom import cached as cached_image
    from medkit.data.dicom import decode as decode_dicom
    from medkit.data.dicom import file_key as dicom_file_key
    from medkit.data.image2d import raster_kind
    from medkit.data.items import SPLITS, Item, ItemDataset, check_splits
    from medkit.data.labels import encode_labels, parse_label
    from medkit.data.modality2d import Entry2D, Image2DDataset, Image2DModality, Index
    from medkit.data.readers import IMAGE_SUFFIXES, NIFTI_SUFFIXES, file_stem, header_shape, read_array, read_mask
    from medkit.data.finetune_upsample import screen_upsampled
    from medkit.data.split import split_three
    from medkit.data.upsample import check_max_upsample
    from medkit.data.tables import Table, read_table
    from medkit.data.transforms import (TASK_NORMALIZE_MODES, clip_zscore, generator, hu_window, normalize,
                                        random_flips, resize)
    from medkit.data.volume_modality import WindowedVolumeModality, write_nifti_demo
    from medkit.data.volumes import Volume, load_volume
    from medkit.finetune.backbones import default_blocks
    from medkit.finetune.external.base import (ExternalBackbone, Family, StateDict, entry, load_into, resize_to,
                                               split_keys)
    from medkit.data.walk import OnError, check_on_error, has_suffix, relative_id, walk
    from medkit.data.windows import pad_depth, resampled_slices
    from medkit.models.encoder import (Block, EncoderOutput, Tokens, UniversalEncoder, init_vit_weights,
                                       interpolate_grid, sincos_init)
    from medkit.models.legacy import FlatPositions
    from medkit.models.masking import Masking, gather_tokens, make_noise, random_masking
    from medkit.storage.files import atomic_write_bytes, atomic_write_text, load_state_checked
    from medkit.strategies.base import BaseStrategy
