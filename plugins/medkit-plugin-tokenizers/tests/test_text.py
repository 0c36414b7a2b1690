"""The word-piece text tokenizer ``text_1d``, its vocabulary training and ``medkit tokenizer train``."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from medkit.api import ConfigError, DataError
from medkit.testing import TokenizerContract
from medkit_plugin_tokenizers.text import (
    SPECIAL_TOKENS,
    TextTokenizer,
    default_corpus,
    load_vocab,
    train_tokenizer,
)

TEXTS = ["No acute cardiopulmonary process.", "Small left pleural effusion; the lungs are otherwise clear."]


class TestTextTokenizer(TokenizerContract):
    name = "text_1d"

    def make_samples(self) -> list[dict[str, Any]]:
        return [{"input": t, "id": f"r{k}.txt"} for k, t in enumerate(TEXTS)]

    def make_bad_sample(self) -> dict[str, Any]:
        return {"input": torch.zeros(1, 8, 8), "id": "img.png"}


@pytest.fixture(scope="module")
def tok() -> TextTokenizer:
    return TextTokenizer(embed_dim=32)


@pytest.fixture(scope="module")
def small_vocab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained vocabulary, so that most words split into several pieces."""
    return train_tokenizer(default_corpus()[:100], 80, tmp_path_factory.mktemp("vocab"))


def test_default_vocabulary(tok: TextTokenizer) -> None:
    assert [tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id] == \
        [0, 1, 2, 3, 4]
    assert tok.special_ids == (0, 1, 2, 3, 4) and 100 < tok.vocab_size < 5000
    assert tok.word_embed.num_embeddings == tok.vocab_size and tok.adds_cls is False and tok.dims == 1
    ids, _ = tok.encode(default_corpus()[:50] + ["Quixotic zebra, Jürgen!"])  # lowercased, accents kept
    assert not (ids == tok.unk_token_id).any(), "every ASCII word maps to pieces; the corpus is covered"


def test_shipped_resources_are_small_and_match_the_generator() -> None:
    from importlib import resources

    data = resources.files("medkit_plugin_tokenizers").joinpath("data")
    assert len(data.joinpath("report_corpus.txt").read_bytes()) < 200_000
    vocab = data.joinpath("default_vocab.txt").read_text(encoding="utf-8").splitlines()
    assert tuple(vocab[:5]) == SPECIAL_TOKENS
    pytest.importorskip("medkit_plugin_report")
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_text_corpus", Path(__file__).with_name("make_text_corpus.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    assert module.corpus_lines() == default_corpus(), "rerun tests/make_text_corpus.py"


def test_collate_pads_and_truncates(tok: TextTokenizer) -> None:
    samples = [{"input": TEXTS[0], "id": "a"}, {"input": "heart " * 500, "id": "b"}]
    parts = tok.collate(samples, "report")
    ids, mask = parts["inputs"], parts["attention_mask"]
    assert ids.shape == mask.shape == (2, 112) and ids.dtype == torch.long
    assert tok.tokens(ids[0][:7]) == ["[CLS]", "no", "acute", "cardiopulmonary", "process", ".", "[SEP]"]
    assert mask[0].tolist() == [1] * 7 + [0] * 105 and (ids[0, 7:] == tok.pad_token_id).all()
    assert mask[1].all() and ids[1, 0] == tok.cls_token_id and ids[1, -1] == tok.sep_token_id


def test_collate_rejects_non_text_naming_modality_and_sample(tok: TextTokenizer) -> None:
    with pytest.raises(DataError, match=r"'xray'.*'scan\.png'.*\[1, 4, 4\]"):
        tok.collate([{"input": TEXTS[0], "id": "a"}, {"input": torch.zeros(1, 4, 4), "id": "scan.png"}], "xray")


def test_forward_known_answer(tok: TextTokenizer) -> None:
    parts = tok.collate([{"input": t, "id": str(k)} for k, t in enumerate(TEXTS)], "report")
    ids, mask = parts["inputs"][:, :20], parts["attention_mask"][:, :20]
    out = tok(ids, mask)
    expected = torch.nn.functional.layer_norm(tok.word_embed.weight[ids] + tok.pos_embed.weight[:20], (32,),
                                              tok.norm.weight, tok.norm.bias, eps=1e-5)
    assert torch.allclose(out.x, expected, atol=1e-6)
    assert torch.equal(out.padding_mask, mask == 0) and out.grid == (20,)
    assert torch.equal(tok(ids).padding_mask, ids == tok.pad_token_id)  # no mask given: from [PAD]
    with pytest.raises(DataError, match="max_length"):
        tok(torch.zeros(1, 113, dtype=torch.long))
    with pytest.raises(DataError, match=r"\[B, L\]"):
        tok(torch.zeros(1, 3, 4))


def test_init_statistics() -> None:
    big = TextTokenizer(embed_dim=256)
    assert abs(big.word_embed.weight.std().item() - 0.02) < 0.002
    assert abs(big.pos_embed.weight.std().item() - 0.02) < 0.002
    assert big.pos_embed.num_embeddings == 112


def test_word_ids_group_continuation_pieces(small_vocab: Path) -> None:
    tok = TextTokenizer(embed_dim=16, vocab_file=str(small_vocab), max_length=24)
    ids, _ = tok.encode(["pneumothorax is small"])
    pieces = tok.tokens(ids[0])
    words = tok.word_ids(ids)[0].tolist()
    n = pieces.index("[SEP]")
    assert pieces[0] == "[CLS]" and words[0] == -1 and words[n] == -1 and set(words[n + 1:]) == {-1}
    # a piece starts a new word exactly when it is not a "##" continuation
    expected, w = [], -1
    for p in pieces[1:n]:
        w += 0 if p.startswith("##") else 1
        expected.append(w)
    assert words[1:n] == expected and max(expected) == 2
    assert len(pieces[1:n]) > 3, "the tiny vocabulary must split words into pieces"
    assert tok.decode(ids[0]) == "pneumothorax is small"


def test_save_pretrained_round_trip(tmp_path: Path, small_vocab: Path) -> None:
    tok = TextTokenizer(embed_dim=16, vocab_file=str(small_vocab), max_length=40)
    out = tok.save_pretrained(tmp_path / "tok")
    assert (out / "tokenizer.json").is_file()
    config = json.loads((out / "medkit_tokenizer.json").read_text())
    assert config["max_length"] == 40 and config["vocab_size"] == tok.vocab_size
    again = TextTokenizer.from_pretrained(out)
    also = TextTokenizer(embed_dim=16, vocab_file=str(out / "tokenizer.json"), max_length=40)
    texts = default_corpus()[:20] + ["Unseen wordz here."]
    assert torch.equal(tok.encode(texts)[0], again.encode(texts)[0])
    assert torch.equal(tok.encode(texts)[0], also.encode(texts)[0])
    assert again.max_length == 40 and again.embed_dim == 16


def test_vocab_txt_and_bad_vocabularies(tmp_path: Path, small_vocab: Path) -> None:
    tok = TextTokenizer(embed_dim=8, vocab_file=str(small_vocab.with_name("vocab.txt")))
    ref = TextTokenizer(embed_dim=8, vocab_file=str(small_vocab))
    assert torch.equal(tok.encode(TEXTS)[0], ref.encode(TEXTS)[0])
    dup = tmp_path / "dup" / "vocab.txt"  # a repeated line: ids go up to the line count
    dup.parent.mkdir()
    dup.write_text("\n".join([*SPECIAL_TOKENS, "heart", "##s", "size", "##s", "h", "##e"]) + "\n", encoding="utf-8")
    odd = TextTokenizer(embed_dim=8, vocab_file=str(dup.parent))
    ids, _ = odd.encode(["hearts size"])
    assert odd.vocab_size == 11 and int(ids.max()) < odd.vocab_size and odd.word_ids(ids)[0, :5].tolist() == \
        [-1, 0, 0, 1, -1]
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\nheart\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"lacks.*\[CLS\]"):
        load_vocab(tmp_path / "vocab.txt")
    with pytest.raises(ConfigError, match="does not exist"):
        TextTokenizer(embed_dim=8, vocab_file=str(tmp_path / "missing.json"))


def test_train_tokenizer_writes_a_loadable_vocabulary(tmp_path: Path) -> None:
    path = train_tokenizer(iter(default_corpus()[:50]), 120, tmp_path / "out")
    assert path == tmp_path / "out" / "tokenizer.json"
    loaded = load_vocab(path)
    assert [loaded.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert 100 <= loaded.get_vocab_size() <= 120 + 36 * 2 + 32  # + alphabet completion
    with pytest.raises(DataError, match="no texts"):
        train_tokenizer([], 120, tmp_path / "none")


def test_deepcopy_keeps_the_vocabulary(tok: TextTokenizer) -> None:
    twin = copy.deepcopy(tok)
    assert torch.equal(twin.encode(TEXTS)[0], tok.encode(TEXTS)[0])
    ids, mask = tok.encode(TEXTS)
    assert torch.equal(twin(ids, mask).x, tok(ids, mask).x)


def test_factory_config_builds() -> None:
    hydra_zen = pytest.importorskip("hydra_zen")
    cfg = hydra_zen.builds(TextTokenizer, populate_full_signature=True, zen_exclude=("embed_dim",))
    tok = hydra_zen.instantiate(cfg, embed_dim=24, max_length=64)
    assert tok.max_length == 64 and tok.pos_embed.weight.shape == (64, 24)


def test_commands_hook_registers_the_tokenizer_group() -> None:
    import click

    import medkit_plugin_tokenizers

    root = click.Group("medkit")
    medkit_plugin_tokenizers.medkit_register_commands(root)
    assert "train" in root.commands["tokenizer"].commands


def test_train_command_on_report_data(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from medkit.testing import get_host
    from medkit_plugin_tokenizers.commands import tokenizer_group

    if "report" not in get_host().names("modality"):
        pytest.skip("medkit-plugin-report is not installed")
    data = tmp_path / "reports"
    data.mkdir()
    for k, text in enumerate(default_corpus()[:30]):
        (data / f"r{k}.txt").write_text(text, encoding="utf-8")
    out = tmp_path / "vocab"
    from medkit.testing import COMPONENTS_KEY

    result = CliRunner().invoke(tokenizer_group, ["train", "--modality", "report", "--data", str(data),
                                                  "--vocab-size", "150", "--out", str(out)],
                                obj={COMPONENTS_KEY: get_host})  # what the medkit command hands over
    assert result.exit_code == 0, result.output
    assert str(out / "tokenizer.json") in result.output and "tokenizer.text_1d.vocab_file=" in result.output
    tok = TextTokenizer(embed_dim=8, vocab_file=str(out / "tokenizer.json"))
    assert tok.vocab_size <= 150 + 36 * 2 + 32 and tok.pad_token_id == 0
    bad = CliRunner().invoke(tokenizer_group, ["train", "--modality", "report", "--data", str(data),
                                               "--vocab-size", "3"])
    assert bad.exit_code != 0 and "--vocab-size" in bad.output


def test_collating_encode_ids_gives_the_text_batch(tok):
    """Prepared data stores ``encode_ids``; collating them gives the very batch collating the texts gives."""
    texts = ["no acute cardiopulmonary process .", "heart size is normal " * 40, "x"]
    want = tok.collate([{"input": t} for t in texts], "report")
    ids = tok.encode_ids(texts)
    assert len(ids[1]) == tok.max_length and ids[0][0] == tok.cls_token_id and ids[0][-1] == tok.sep_token_id
    import numpy as np

    got = tok.collate([{"input": torch.from_numpy(np.asarray(i, dtype=np.uint16).astype(np.int64))} for i in ids],
                      "report")
    assert torch.equal(got["inputs"], want["inputs"]) and torch.equal(got["attention_mask"], want["attention_mask"])
    with pytest.raises(DataError, match="at most max_length"):
        tok.collate([{"input": torch.zeros(tok.max_length + 1, dtype=torch.long)}], "report")


def test_encoding_config_names_what_the_ids_depend_on(tok):
    same = TextTokenizer(embed_dim=16)
    assert same.encoding_config() == tok.encoding_config()
    assert TextTokenizer(embed_dim=16, max_length=32).encoding_config()["max_length"] == 32
    assert TextTokenizer(embed_dim=16, lowercase=False).encoding_config()["vocab_sha256"] != \
        tok.encoding_config()["vocab_sha256"]
