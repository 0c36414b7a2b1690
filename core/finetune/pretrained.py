"""A loaded model for notebooks: :func:`medkit.load_pretrained` returns a :class:`PretrainedModel`, which
preprocesses a file or an array through its modality plugin's own readers and deterministic
transforms (the evaluation view training uses) and embeds it with the eval-mode encoder."""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import torch

from medkit.api.components import Create
from medkit.api.errors import ConfigError, DataError
from medkit.models.build import Model

log = logging.getLogger(__name__)


def _is_array(x: Any) -> bool:
    return isinstance(x, torch.Tensor) or type(x).__module__.split(".")[0] == "numpy"


def _write_array(x: Any, dims: int, folder: Path) -> Path:
    """``x`` as a file the modality's readers take (they, not this function, do all preprocessing).

    Written rather than transformed here so that an array goes through exactly the readers and
    transforms a file does: 2D uint8 as PNG (``[H, W]`` grey or ``[H, W, 3]`` RGB), other 2D as a
    32-bit float TIFF; 3D as NIfTI in its voxel order ``[X, Y, Z]`` (Z: slices) with 1 mm spacing
    and an identity orientation — pass the file itself to keep its header.
    """
    import numpy as np

    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if dims == 2:
        from PIL import Image

        if a.dtype == np.uint8 and (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] == 3)):
            path = folder / "array.png"
            Image.fromarray(a).save(path)
        elif a.ndim == 2:
            path = folder / "array.tiff"
            Image.fromarray(a.astype(np.float32), mode="F").save(path)
        else:
            raise DataError(f"a 2D array must be [H, W] (or uint8 [H, W, 3]), got shape {list(a.shape)}")
        return path
    if dims == 3:
        import nibabel as nib

        if a.ndim != 3:
            raise DataError(f"a 3D array must be [X, Y, Z] (NIfTI voxel order), got shape {list(a.shape)}")
        path = folder / "array.nii.gz"
        nib.save(nib.Nifti1Image(a.astype(np.float32), np.eye(4)), str(path))
        return path
    raise DataError(f"a {dims}D modality takes text or a file, not an array")


@dataclass
class PretrainedModel(Model):
    """A :class:`~medkit.models.build.Model` (``encoder``, ``heads``, ``tokenizer_of``) that can also
    read and embed data.

    Attributes:
        create: builds a registered component (the plugin host's ``create``).
        modality_config: the run's ``modality`` section (the preprocessing it trained with).
        source: the reference the model was loaded from.
    """

    create: Create | None = None
    modality_config: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str = ""

    @classmethod
    def wrap(cls, model: Model, *, create: Create, modality_config: dict[str, dict[str, Any]],
             source: str) -> PretrainedModel:
        base = {f.name: getattr(model, f.name) for f in fields(Model)}
        return cls(**base, create=create, modality_config=modality_config, source=source)

    @property
    def modalities(self) -> list[str]:
        """The modalities the model was pre-trained on."""
        return list(self.tokenizer_of)

    def _modality(self, name: str) -> Any:
        if self.create is None:
            raise ConfigError("this model was built without a plugin host; load it with medkit.load_pretrained")
        return self.create("modality", name, **dict(self.modality_config.get(name, {})))

    def _tokenizer(self, modality: str, plugin: Any) -> str:
        if modality in self.tokenizer_of:
            return self.tokenizer_of[modality]
        name = str(plugin.default_tokenizer)
        if name not in self.encoder.tokenizers:
            raise ConfigError(f"{self.source}: modality {modality!r} needs tokenizer {name!r}, which this model "
                              f"does not have (trained on {', '.join(self.modalities)})")
        log.warning("%s was not pre-trained on %s (only %s); embedding it through its %s tokenizer",
                    self.source, modality, ", ".join(self.modalities), name)
        return name

    def _samples(self, x: Any, plugin: Any) -> list[dict[str, Any]]:
        """The samples one input gives (an image: one; a volume: its windows; a slide: its tiles)."""
        if isinstance(x, (str, os.PathLike)) and Path(x).exists():
            return self._read(Path(x), plugin)
        dims = int(plugin.dims)
        if isinstance(x, str) and dims == 1:
            with tempfile.TemporaryDirectory(prefix="medkit-text-") as tmp:
                path = Path(tmp) / "text.txt"
                path.write_text(x, encoding="utf-8")
                return self._read(path, plugin)
        if _is_array(x):
            with tempfile.TemporaryDirectory(prefix="medkit-array-") as tmp:
                return self._read(_write_array(x, dims, Path(tmp)), plugin)
        raise DataError(f"{x!r}: not an existing file or folder, nor an array"
                        + (" nor text" if dims == 1 else "") + f" (modality {plugin.name})")

    @staticmethod
    def _read(path: Path, plugin: Any) -> list[dict[str, Any]]:
        from medkit.data.open_data import open_data

        # the evaluation view (deterministic transforms only); a prepared folder from its shards, checked
        ds = open_data(plugin, path, train=False)
        return [ds.load(i, seed=None) for i in range(len(ds))]

    def preprocess(self, x: Any, modality: str) -> torch.Tensor | list[str]:
        """What the encoder is fed for ``x``: the modality plugin's readers and deterministic transforms.

        Args:
            x: a file or folder path; an array (numpy or torch: 2D ``[H, W]``/``[H, W, 3]``, 3D
                ``[X, Y, Z]``); or, for a text modality, the text itself.
            modality: a modality name (``ct``, ``xray``, ``report``, ...).

        Returns:
            images: a tensor ``[N, C, H, W]`` or ``[N, C, D, H, W]`` (N: the samples the input gives —
            one image, the windows of a volume, the tiles of a slide); text: the cleaned texts.
        """
        samples = self._samples(x, self._modality(modality))
        inputs = [s["input"] for s in samples]
        if inputs and isinstance(inputs[0], torch.Tensor):
            return torch.stack(inputs)
        return [str(t) for t in inputs]

    @torch.no_grad()
    def embed(self, x: Any, modality: str, *, batch_size: int = 16) -> torch.Tensor:
        """Pooled eval-mode features ``[len(inputs), D]``: one row per input (a path, an array, text,
        or a list of these); an input that gives several samples (a volume's windows, a slide's
        tiles) is the mean of their features. Pooling: the mean over patch tokens (CLS excluded) or,
        for text, over non-padding tokens — as ``medkit embed`` and the probes."""
        from medkit.api.batch import collate

        plugin = self._modality(modality)
        tok_name = self._tokenizer(modality, plugin)
        tok = self.encoder.tokenizers[tok_name]
        items: Sequence[Any] = x if isinstance(x, (list, tuple)) else [x]
        self.encoder.eval()
        rows = []
        for item in items:
            samples = self._samples(item, plugin)
            if not samples:
                raise DataError(f"{item!r}: the {modality} readers found no sample in it")
            feats = []
            for k in range(0, len(samples), batch_size):
                batch = collate(samples[k:k + batch_size], modality, tok)
                feats.append(self.encoder(tok_name, batch.inputs, batch.attention_mask).pooled().float())
            rows.append(torch.cat(feats).mean(dim=0))
        return torch.stack(rows)
