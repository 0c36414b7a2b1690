"""Preparing text (reports): cleaned by the modality and tokenised by the run's tokenizer once, stored as ids."""

from __future__ import annotations

import hashlib
from typing import Any, Iterator, Sequence

import numpy as np

from medkit.api.errors import ConfigError, MedkitError


def is_text(dataset: Any) -> bool:
    """Whether ``dataset``'s samples are text (a 1D modality such as ``report``)."""
    try:
        return len(dataset) > 0 and isinstance(dataset.load(0).get("input"), str)
    except (AttributeError, TypeError):
        return False


def ids_dtype(num_pieces: int) -> str:
    """The smallest unsigned dtype that holds every id of a ``num_pieces``-piece vocabulary."""
    return "uint16" if num_pieces <= 1 << 16 else "uint32"


def tokenizer_config(tokenizer: Any, modality: str) -> dict[str, Any]:
    """What the stored ids depend on (``tokenizer.encoding_config()``) plus their dtype.

    Raises:
        MedkitError: the tokenizer cannot encode text to ids ahead of time.
    """
    config = getattr(tokenizer, "encoding_config", None)
    if tokenizer is None or not callable(config) or not callable(getattr(tokenizer, "encode_ids", None)):
        raise MedkitError(f"medkit prepare: modality {modality} holds text; preparing it needs a tokenizer with "
                          f"encode_ids() and encoding_config() (text_1d has both), got {type(tokenizer).__name__}")
    out = dict(config())
    out["ids_dtype"] = ids_dtype(int(out["num_pieces"]))
    return out


def texts_sha256(texts: Sequence[str]) -> str:
    """sha256 over the (cleaned) texts of a part, each length-prefixed."""
    h = hashlib.sha256()
    for text in texts:
        raw = text.encode()
        h.update(len(raw).to_bytes(8, "little"))
        h.update(raw)
    return h.hexdigest()


def text_items(dataset: Any, samples: Sequence[int], tokenizer: Any, dtype: str) -> Iterator[tuple[int, dict]]:
    """(sample index, stored item ``{"ids": [L] uint16/uint32}``) of every sample, tokenised once."""
    texts = [dataset.load(i)["input"] for i in samples]
    for i, ids in zip(samples, tokenizer.encode_ids(texts)):
        yield i, {"ids": np.asarray(ids, dtype=dtype)}


def check_tokenizer(made: dict[str, Any], tokenizer: Any, where: str, name: str) -> None:
    """Refuse prepared token ids made by another vocabulary or ``max_length`` than the run's tokenizer.

    Raises:
        ConfigError: one line naming the first key that differs and the fix.
    """
    now = tokenizer_config(tokenizer, name)
    tok = now.get("name", "text_1d")
    for key in sorted(set(made) | set(now)):
        if made.get(key) != now.get(key):
            raise ConfigError(f"{where} was tokenised with {tok} {key}={made.get(key)!r} but this run's tokenizer has "
                              f"{now.get(key)!r}; use the vocabulary and tokenizer.{tok} options it was prepared "
                              f"with, or run medkit prepare again with the run's config")


def token_sample(item: dict[str, Any], sid: str, label: int | None) -> dict[str, Any]:
    """The training sample of a stored text item: its ids as a 1-D int64 tensor (the tokenizer pads them)."""
    import torch

    sample: dict[str, Any] = {"input": torch.from_numpy(np.asarray(item["ids"]).astype(np.int64)), "id": sid}
    if label is not None:
        sample["label"] = int(label)
    return sample


def no_max_side(max_side: int, modality: str) -> None:
    """Raises: ConfigError for ``--max-side`` on text (it resizes 2D images)."""
    if max_side:
        raise ConfigError(f"medkit prepare: --max-side resizes 2D images; modality {modality} holds text")
