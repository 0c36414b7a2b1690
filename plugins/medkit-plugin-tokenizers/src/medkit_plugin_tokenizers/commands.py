"""``medkit tokenizer train``: train a word-piece vocabulary for ``text_1d`` on a modality's texts."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import click

from medkit.api import ConfigError, DataError


@click.group("tokenizer")
def tokenizer_group() -> None:
    """Build tokenizer assets (word-piece vocabularies for text_1d)."""


@tokenizer_group.command("train")
@click.option("--modality", required=True, help="a text modality (dims 1), e.g. report")
@click.option("--data", required=True, type=click.Path(exists=True, path_type=Path),
              help="folder (or file) the modality reads")
@click.option("--vocab-size", type=click.IntRange(min=16), default=8000, show_default=True,
              help="target vocabulary size, special tokens included")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="output folder [default: ./tokenizer-<modality>]")
@click.option("--min-frequency", type=click.IntRange(min=1), default=2, show_default=True,
              help="pairs seen fewer times are not merged")
@click.option("--lowercase/--cased", default=True, show_default=True, help="lowercase texts first")
def train_command(modality: str, data: Path, vocab_size: int, out: Path | None, min_frequency: int,
                  lowercase: bool) -> None:
    """Train a BertWordPiece vocabulary on the texts of --data and write tokenizer.json + vocab.txt."""
    from medkit.api import components_of
    from medkit_plugin_tokenizers.text import train_tokenizer

    component = components_of(click.get_current_context()).create("modality", modality)
    if int(getattr(component, "dims", 0)) != 1:
        raise ConfigError(f"modality {modality!r} has dims {getattr(component, 'dims', '?')}; word-piece "
                          f"vocabularies are trained on text modalities (dims 1) such as report")
    dataset = component.dataset(data, train=False)

    def texts() -> Iterator[str]:
        for i in range(len(dataset)):
            sample = dataset.load(i, seed=None)
            if not isinstance(sample["input"], str):
                raise DataError(f"modality {modality!r} sample {sample.get('id', i)!r}: expected text (str), "
                                f"got {type(sample['input']).__name__}")
            yield sample["input"]

    target = out if out is not None else Path(f"tokenizer-{modality}")
    path = train_tokenizer(texts(), vocab_size, target, lowercase=lowercase, min_frequency=min_frequency)
    click.echo(f"wrote {path} (vocabulary trained on {len(dataset)} {modality} texts)")
    click.echo(f"use it with: tokenizer.text_1d.vocab_file={path}")
