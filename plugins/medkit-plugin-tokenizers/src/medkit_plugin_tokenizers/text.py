"""Word-piece text tokenizer ``text_1d``: HF word-pieces → token + learned position → LayerNorm."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import string
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from medkit.api import ConfigError, DataError, Tokens, atomic_write_text

log = logging.getLogger(__name__)

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)  # ids 0..4 in vocabularies medkit trains
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "medkit_tokenizer.json"
#: Shipped resources: the demo-like report corpus and the vocabulary trained from it once
#: (``tests/make_text_corpus.py`` regenerates both).
CORPUS_RESOURCE = "data/report_corpus.txt"
VOCAB_RESOURCE = "data/default_vocab.txt"


def _bert_pipeline(model: Any, lowercase: bool) -> Any:
    """A BertWordPiece-style tokenizer around a WordPiece ``model`` (no post-processor yet)."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers

    tok = Tokenizer(model)
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                strip_accents=None, lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def _finish(tok: Any, source: str) -> Any:
    """Check the special tokens and add the ``[CLS] $A [SEP]`` template."""
    from tokenizers import models, processors

    missing = [t for t in SPECIAL_TOKENS if tok.token_to_id(t) is None]
    if missing:
        raise ConfigError(f"tokenizer text_1d: vocabulary {source} lacks the special token(s) "
                          f"{', '.join(missing)}; text_1d needs {', '.join(SPECIAL_TOKENS)} "
                          f"(train one with: medkit tokenizer train --modality report --data DIR)")
    if not isinstance(tok.model, models.WordPiece):
        raise ConfigError(f"tokenizer text_1d: {source} holds a {type(tok.model).__name__} model; text_1d "
                          f"needs a WordPiece vocabulary (whole-word masking reads '##' continuations)")
    tok.add_special_tokens(list(SPECIAL_TOKENS))  # already in the vocabulary: keeps their ids
    tok.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}", pair=f"{CLS} $A {SEP} $B:1 {SEP}:1",
        special_tokens=[(CLS, tok.token_to_id(CLS)), (SEP, tok.token_to_id(SEP))])
    return tok


def load_vocab(vocab_file: str | os.PathLike[str], *, lowercase: bool = True) -> Any:
    """A ``tokenizers.Tokenizer`` from a ``tokenizer.json``, a BERT ``vocab.txt`` or a folder
    holding either (``lowercase`` applies to ``vocab.txt`` only; tokenizer.json keeps its own)."""
    from tokenizers import Tokenizer, models

    path = Path(vocab_file).expanduser()
    if path.is_dir():
        found = [path / n for n in (TOKENIZER_FILE, "vocab.txt") if (path / n).is_file()]
        if not found:
            raise ConfigError(f"tokenizer text_1d: folder {path} has no tokenizer.json or vocab.txt; point "
                              f"tokenizer.text_1d.vocab_file at one")
        path = found[0]
    if not path.is_file():
        raise ConfigError(f"tokenizer text_1d: vocab_file {path} does not exist; set tokenizer.text_1d.vocab_file "
                          f"to a tokenizer.json or vocab.txt (or null for the built-in vocabulary)")
    try:
        if path.suffix == ".json":
            tok = Tokenizer.from_file(str(path))
        else:
            tok = _bert_pipeline(models.WordPiece.from_file(str(path), unk_token=UNK), lowercase)
    except Exception as exc:  # the Rust errors are plain Exceptions
        raise ConfigError(f"tokenizer text_1d: cannot read vocabulary {path}: {exc}; expected a HF "
                          f"tokenizer.json or a vocab.txt with one word-piece per line") from exc
    return _finish(tok, str(path))


@lru_cache(maxsize=2)
def _default_json(lowercase: bool) -> str:
    text = resources.files("medkit_plugin_tokenizers").joinpath(VOCAB_RESOURCE).read_text(encoding="utf-8")
    vocab = {token: i for i, token in enumerate(text.splitlines())}
    from tokenizers import models

    tok = _bert_pipeline(models.WordPiece(vocab, unk_token=UNK, continuing_subword_prefix="##"), lowercase)
    return _finish(tok, f"medkit_plugin_tokenizers/{VOCAB_RESOURCE}").to_str()


def default_vocab(lowercase: bool = True) -> Any:
    """The built-in vocabulary, trained once from the shipped demo-like report corpus.

    It only knows radiology template words; train your own on your reports with
    ``medkit tokenizer train --modality report --data DIR --vocab-size N``.
    """
    from tokenizers import Tokenizer

    return Tokenizer.from_str(_default_json(lowercase))


def default_corpus() -> list[str]:
    """The shipped demo-like report corpus, one cleaned report per line."""
    text = resources.files("medkit_plugin_tokenizers").joinpath(CORPUS_RESOURCE).read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


def _complete_alphabet(tok: Any, lowercase: bool) -> Any:
    """Add every ASCII letter/digit (and its ``##`` form) and punctuation mark the trainer did not
    see, so that any ASCII word maps to word-pieces instead of ``[UNK]``."""
    from tokenizers import models

    vocab = tok.get_vocab()
    chars = string.digits + (string.ascii_lowercase if lowercase else string.ascii_letters)
    wanted = list(chars) + [f"##{c}" for c in chars] + list(string.punctuation)
    extra = [w for w in wanted if w not in vocab]
    if not extra:
        return tok
    next_id = max(vocab.values()) + 1
    for k, w in enumerate(extra):
        vocab[w] = next_id + k
    model = models.WordPiece(vocab, unk_token=UNK, continuing_subword_prefix="##")
    return _finish(_bert_pipeline(model, lowercase), "trained vocabulary")


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str | os.PathLike[str], *,
                    lowercase: bool = True, min_frequency: int = 2) -> Path:
    """Train a BertWordPiece-style vocabulary on ``texts`` and write ``tokenizer.json`` + ``vocab.txt``.

    Special tokens get ids 0..4 (``[PAD]`` = 0, ``[UNK]``, ``[CLS]``, ``[SEP]``, ``[MASK]``). HF's
    ``WordPieceTrainer`` breaks ties between equally frequent pairs in hash order, so two trainings
    on the same texts can differ slightly: keep the written files with the runs that use them
    (``save_pretrained`` writes the same ``tokenizer.json`` into a run's tokenizer folder).

    Args:
        texts: report texts (any iterable; consumed once).
        vocab_size: target vocabulary size (special tokens and the ASCII alphabet included).
        out_dir: folder to write into (created).
        lowercase: lowercase before splitting (as BERT uncased).
        min_frequency: pairs seen fewer times are not merged.

    Returns:
        the path of the written ``tokenizer.json``.
    """
    from tokenizers import models, trainers

    if vocab_size < len(SPECIAL_TOKENS) + 1:
        raise ConfigError(f"vocab_size must be > {len(SPECIAL_TOKENS)}, got {vocab_size}")
    count = 0

    def counted() -> Iterable[str]:
        nonlocal count
        for text in texts:
            if not isinstance(text, str):
                raise DataError(f"train_tokenizer expects str texts, got {type(text).__name__}")
            count += 1
            yield text

    tok = _bert_pipeline(models.WordPiece(unk_token=UNK, continuing_subword_prefix="##"), lowercase)
    alphabet = list(string.digits + (string.ascii_lowercase if lowercase else string.ascii_letters))
    trainer = trainers.WordPieceTrainer(vocab_size=int(vocab_size), min_frequency=int(min_frequency),
                                        special_tokens=list(SPECIAL_TOKENS), initial_alphabet=alphabet,
                                        continuing_subword_prefix="##", show_progress=False)
    tok.train_from_iterator(counted(), trainer)
    if count == 0:
        raise DataError("train_tokenizer got no texts; the dataset is empty")
    tok = _complete_alphabet(_finish(tok, "trained vocabulary"), lowercase)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / TOKENIZER_FILE
    atomic_write_text(path, tok.to_str(pretty=True))
    atomic_write_text(out / "vocab.txt", "".join(f"{t}\n" for t, _ in sorted(tok.get_vocab().items(),
                                                                         key=lambda kv: kv[1])))
    log.info("trained a %d-piece vocabulary on %d texts -> %s", tok.get_vocab_size(), count, path)
    return path


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape [{', '.join(str(int(s)) for s in x.shape)}]"
    return f"a {type(x).__name__}"


class TextTokenizer(nn.Module):
    """Report text → word-piece ids ``[B, L]`` → trunk tokens ``[B, L, D]`` (``text_1d``).

    Order of operations (without the legacy type embedding): token embedding + learned
    absolute position (rows ``0..L-1``) → LayerNorm (eps 1e-5) → no dropout. Both tables are
    initialised N(0, 0.02). The word-piece ``[CLS]`` is the first token, so ``adds_cls`` is False.

    With ``legacy`` the module has the reference's ``token_embed`` layout: a
    ``legacy_vocab_rows``-row token table (49,411; the vocabulary's ids must be below it), a
    ``legacy_position_rows``-row position table (512) and a 2-row type table whose row 0 is added to
    every token, before the LayerNorm; tables keep PyTorch's N(0, 1) init. ``vocab_size`` is then the
    table's row count (the reference's MLM head predicts over all of it) and ``num_pieces`` the
    vocabulary's. The official weights expect Bio_ClinicalBERT's ``vocab.txt`` as ``vocab_file``.

    Args:
        embed_dim: trunk width ``D`` (supplied by the engine).
        vocab_file: a ``tokenizer.json``, a BERT ``vocab.txt`` or a folder holding one; ``None``
            uses the built-in vocabulary trained on demo-like reports (train your own with
            ``medkit tokenizer train``).
        max_length: every text is truncated/padded to this many word-pieces ([CLS] and [SEP] included).
        lowercase: lowercase texts (built-in vocabulary and ``vocab.txt`` files).
        legacy: the reference's embedding (type row added, big tables, N(0, 1) init).
        legacy_vocab_rows: rows of the token table in legacy mode.
        legacy_position_rows: rows of the position table in legacy mode (>= ``max_length``).
    """

    special_mask: torch.Tensor  # buffers registered in __init__
    continuation_mask: torch.Tensor

    dims = 1
    adds_cls = False

    def __init__(self, embed_dim: int, vocab_file: str | None = None, max_length: int = 112,
                 lowercase: bool = True, legacy: bool = False, legacy_vocab_rows: int = 49411,
                 legacy_position_rows: int = 512) -> None:
        super().__init__()
        if max_length < 3:
            raise ConfigError(f"tokenizer text_1d: max_length must be >= 3 ([CLS] word [SEP]), got {max_length}")
        self.embed_dim, self.max_length, self.lowercase = int(embed_dim), int(max_length), bool(lowercase)
        self.legacy = bool(legacy)
        self.legacy_vocab_rows, self.legacy_position_rows = int(legacy_vocab_rows), int(legacy_position_rows)
        if self.legacy and self.max_length > self.legacy_position_rows:
            raise ConfigError(f"tokenizer text_1d (legacy): max_length {max_length} exceeds the position table's "
                              f"{legacy_position_rows} rows; lower tokenizer.text_1d.max_length")
        if self.legacy and vocab_file is None:
            log.warning("tokenizer text_1d (legacy): no vocab_file, using the built-in vocabulary; its ids are not "
                        "the official MedCoSS ones (set tokenizer.text_1d.vocab_file to Bio_ClinicalBERT's vocab.txt)")
        self.vocab_file = None if vocab_file is None else str(vocab_file)
        self._tok = default_vocab(self.lowercase) if vocab_file is None else load_vocab(vocab_file,
                                                                                      lowercase=self.lowercase)
        self._configure()
        self.word_embed = nn.Embedding(self.vocab_size, self.embed_dim)  # [V, D]
        rows = self.legacy_position_rows if self.legacy else self.max_length
        self.pos_embed = nn.Embedding(rows, self.embed_dim)  # [L_max, D] (legacy: [512, D])
        if self.legacy:
            self.type_embed = nn.Embedding(2, self.embed_dim)  # [2, D], row 0 added to every token
        self.norm = nn.LayerNorm(self.embed_dim, eps=1e-5)
        if not self.legacy:  # legacy tables keep nn.Embedding's N(0, 1), as the reference
            nn.init.normal_(self.word_embed.weight, std=0.02)
            nn.init.normal_(self.pos_embed.weight, std=0.02)

    def _configure(self) -> None:
        tok = self._tok
        tok.enable_truncation(self.max_length)
        tok.enable_padding(pad_id=tok.token_to_id(PAD), pad_token=PAD, length=self.max_length)
        # max id + 1, not the count: a vocab.txt with a repeated line leaves an unused id behind
        self.num_pieces = max(tok.get_vocab(with_added_tokens=True).values()) + 1
        self.vocab_size = self.num_pieces
        if self.legacy:
            if self.num_pieces > self.legacy_vocab_rows:
                raise ConfigError(f"tokenizer text_1d (legacy): the vocabulary has ids up to {self.num_pieces - 1} "
                                  f"but the token table has {self.legacy_vocab_rows} rows; use the vocabulary the "
                                  f"weights were trained with or raise tokenizer.text_1d.legacy_vocab_rows")
            self.vocab_size = self.legacy_vocab_rows
        ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
        self.pad_token_id, self.unk_token_id = ids[PAD], ids[UNK]
        self.cls_token_id, self.sep_token_id, self.mask_token_id = ids[CLS], ids[SEP], ids[MASK]
        self.special_ids = tuple(sorted(set(ids.values())))
        prefix = tok.model.continuing_subword_prefix
        special = torch.zeros(self.vocab_size, dtype=torch.bool)
        special[list(self.special_ids)] = True
        continuing = [i for token, i in tok.get_vocab(with_added_tokens=True).items()
                      if token.startswith(prefix) and len(token) > len(prefix)]
        cont = torch.zeros(self.vocab_size, dtype=torch.bool)
        cont[continuing] = True
        self.register_buffer("special_mask", special, persistent=False)  # [V] True = special token
        self.register_buffer("continuation_mask", cont & ~special, persistent=False)  # [V] "##..."

    # -- text → ids --------------------------------------------------------------------------
    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Word-piece ids and attention mask, both ``[B, max_length]`` (1 = real token)."""
        enc = [self._tok.encode(t) for t in texts]  # one at a time: no thread pool in loader workers
        ids = torch.tensor([e.ids for e in enc], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.long)
        return ids, mask

    def encode_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Word-piece ids of every text without the padding: what :meth:`encode` gives before it pads
        (``medkit prepare`` stores these; :meth:`collate` pads them back)."""
        return [e.ids[:sum(e.attention_mask)] for e in (self._tok.encode(t) for t in texts)]

    def encoding_config(self) -> dict[str, Any]:
        """What decides the ids of a text: the vocabulary and its pipeline (sha256 of its canonical
        JSON), ``max_length`` and the id range. Prepared token ids are only valid for an equal one."""
        canonical = json.dumps(json.loads(self._tok.to_str()), sort_keys=True)
        return {"name": "text_1d", "vocab_sha256": hashlib.sha256(canonical.encode()).hexdigest(),
                "max_length": self.max_length, "num_pieces": self.num_pieces}

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Text of one id sequence, special tokens dropped."""
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def tokens(self, ids: Sequence[int] | torch.Tensor) -> list[str]:
        """Word-piece strings of one id sequence."""
        return [self._tok.id_to_token(int(i)) for i in ids]

    def collate(self, samples: Sequence[dict[str, Any]], modality: str) -> dict[str, torch.Tensor]:
        """``{"inputs": ids [B, L], "attention_mask": [B, L]}`` with ``L = max_length``.

        An input is report text, or the 1-D integer word-piece ids :meth:`encode_ids` gave for it
        (prepared data): those are padded exactly as :meth:`encode` pads, so both give the same batch.
        """
        if samples and all(isinstance(s.get("input"), torch.Tensor) for s in samples):
            return self._collate_ids(samples, modality)
        texts = []
        for k, sample in enumerate(samples):
            text = sample.get("input")
            if not isinstance(text, str):
                raise DataError(f"modality {modality!r}, sample {sample.get('id', k)!r}: tokenizer text_1d "
                                f"expects the input to be report text (str), got {_describe(text)}; "
                                f"use text_1d only with text modalities such as report")
            texts.append(text)
        ids, mask = self.encode(texts)
        return {"inputs": ids, "attention_mask": mask}

    def _collate_ids(self, samples: Sequence[dict[str, Any]], modality: str) -> dict[str, torch.Tensor]:
        ids = torch.full((len(samples), self.max_length), self.pad_token_id, dtype=torch.long)  # [B, L]
        mask = torch.zeros((len(samples), self.max_length), dtype=torch.long)  # [B, L]
        for k, sample in enumerate(samples):
            x = sample["input"]
            if x.ndim != 1 or x.is_floating_point() or x.is_complex() or len(x) > self.max_length:
                raise DataError(f"modality {modality!r}, sample {sample.get('id', k)!r}: tokenizer text_1d expects "
                                f"text or 1-D word-piece ids of at most max_length={self.max_length}, got "
                                f"{_describe(x)} of {x.dtype}; prepare the data again with this tokenizer")
            ids[k, :len(x)] = x.long()
            mask[k, :len(x)] = 1
        return {"inputs": ids, "attention_mask": mask}

    # -- ids → tokens --------------------------------------------------------------------------
    def forward(self, inputs: torch.Tensor, attention_mask: torch.Tensor | None = None) -> Tokens:
        """Embed ids ``[B, L]`` (``L <= max_length``) into ``Tokens(x [B, L, D], padding_mask [B, L])``."""
        if inputs.ndim != 2 or inputs.dtype not in (torch.long, torch.int, torch.int16, torch.uint8):
            raise DataError(f"tokenizer text_1d expects token ids [B, L] of integers, got {_describe(inputs)} "
                            f"of {inputs.dtype}; build batches with its collate()")
        length = inputs.shape[1]
        if length > self.max_length:
            raise DataError(f"tokenizer text_1d: sequence length {length} exceeds max_length "
                            f"{self.max_length}; raise tokenizer.text_1d.max_length")
        positions = torch.arange(length, device=inputs.device)
        x = self.word_embed(inputs.long()) + self.pos_embed(positions)[None]  # [B, L, D]
        if self.legacy:
            x = x + self.type_embed.weight[0][None, None].to(x.dtype)  # reference: type row 0 for every token
        x = self.norm(x)
        if attention_mask is not None:
            padding = attention_mask == 0  # [B, L] True = pad
        else:
            padding = inputs == self.pad_token_id
        return Tokens(x=x, padding_mask=padding, grid=(int(length),))

    # -- whole words ---------------------------------------------------------------------------
    def word_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Word index of every piece, ``[B, L]``: pieces of one word share an index (0, 1, ...
        within the sample); special tokens and padding get ``-1``."""
        special = self.special_mask.to(ids.device)[ids]  # [B, L]
        starts = ~self.continuation_mask.to(ids.device)[ids] & ~special
        words = (torch.cumsum(starts.long(), dim=1) - 1).clamp_min(0)
        return words.masked_fill(special, -1)

    # -- assets ----------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``tokenizer.json`` and ``medkit_tokenizer.json`` (no weights: they live in the model)."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / TOKENIZER_FILE, self._tok.to_str(pretty=True))
        config = {"name": "text_1d", "format": 1, "max_length": self.max_length, "lowercase": self.lowercase,
                  "vocab_size": self.vocab_size, "embed_dim": self.embed_dim, "legacy": self.legacy,
                  "legacy_vocab_rows": self.legacy_vocab_rows, "legacy_position_rows": self.legacy_position_rows}
        atomic_write_text(out / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
        return out

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str], embed_dim: int | None = None) -> TextTokenizer:
        """Rebuild (weights freshly initialised) from a :meth:`save_pretrained` folder."""
        directory = Path(directory)
        try:
            config = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"tokenizer text_1d: cannot read {directory / CONFIG_FILE}: {exc}") from exc
        return cls(embed_dim=int(embed_dim if embed_dim is not None else config["embed_dim"]),
                   vocab_file=str(directory / TOKENIZER_FILE), max_length=int(config["max_length"]),
                   lowercase=bool(config.get("lowercase", True)), legacy=bool(config.get("legacy", False)),
                   legacy_vocab_rows=int(config.get("legacy_vocab_rows", 49411)),
                   legacy_position_rows=int(config.get("legacy_position_rows", 512)))

    def extra_repr(self) -> str:
        legacy = ", legacy=True" if self.legacy else ""
        return f"vocab_size={self.vocab_size}, max_length={self.max_length}, embed_dim={self.embed_dim}{legacy}"
