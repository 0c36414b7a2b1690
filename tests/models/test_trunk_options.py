"""trainer.grad_checkpointing and trainer.compile: the same step, less memory or compiled blocks."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from medkit.api.batch import Batch
from medkit.api.context import LossOutput
from medkit.api.errors import ConfigError
from medkit.engine.step import TrainStep
from medkit.models.encoder import Tokens, UniversalEncoder
from medkit.testing.synthetic import run_synthetic


class _Tokens(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(6, 24)

    def forward(self, inputs: torch.Tensor, attention_mask: torch.Tensor | None = None) -> Tokens:
        return Tokens(x=self.proj(inputs), grid=(inputs.shape[1],))


def _one_step(checkpointing: bool, seeds: list[int]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    enc = UniversalEncoder({"t": _Tokens()}, depth=3, embed_dim=24, num_heads=2, drop_path=0.5)
    enc.grad_checkpointing = checkpointing
    enc.train()
    opt = torch.optim.AdamW(enc.parameters(), lr=1e-2)
    step = TrainStep(opt, params=list(enc.parameters()), device=torch.device("cpu"))
    batch = Batch("m", torch.randn(4, 5, 6), ids=list("abcd"), seeds=seeds)

    def loss(b: Batch) -> LossOutput:
        return LossOutput((enc("t", b.inputs).x ** 2).mean())

    torch.manual_seed(1)  # the global RNG too (unused inside the streams; checkpoint restores it)
    step(loss, batch, sync=False)
    grads = {n: p.grad.clone() for n, p in enc.named_parameters() if p.grad is not None}
    return grads, {n: p.detach().clone() for n, p in enc.named_parameters()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture()
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bit-identity is promised at one thread (docs/checkpoints.md)
    yield
    torch.set_num_threads(threads)


def test_grad_checkpointing_gives_the_same_gradients_and_weights_bit_for_bit(monkeypatch, one_thread):
    """Drop path 0.5 drawn from per-sample streams: the recomputation in backward (outside the
    streams' context) replays the forward's draws, so gradients and weights are identical."""
    seeds = [11, 12, 13, 14]
    plain_g, plain_w = _one_step(False, seeds)
    ckpt_g, ckpt_w = _one_step(True, seeds)
    assert len(plain_g) > 10 and _same(plain_g, ckpt_g) and _same(plain_w, ckpt_w)
    other_g, _ = _one_step(False, [21, 22, 23, 24])
    assert not _same(plain_g, other_g), "the drop-path draws do not depend on the streams: nothing is tested"
    import medkit.models.encoder as encoder

    monkeypatch.setattr(encoder, "replayable", lambda fn: fn)  # a recompute that draws anew
    naive_g, _ = _one_step(True, seeds)
    assert not _same(plain_g, naive_g), "a recompute with fresh draws went unnoticed"


def _losses(run):
    return [json.loads(line)["loss"] for line in (run / "metrics" / "steps.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_compiled_blocks_give_the_eager_losses(tmp_path):
    """trainer.compile=aot_eager (no C++ compiler needed): a 3-step run's losses equal the eager run's
    to 1e-5, also with grad checkpointing around the compiled blocks."""
    runs = {name: run_synthetic(tmp_path / name, "sequential", ("synth_a",), max_steps=3, overrides=over,
                                demo_dir=tmp_path / "demo")
            for name, over in [("eager", ()), ("compiled", ("trainer.compile=aot_eager",)),
                               ("both", ("trainer.compile=aot_eager", "trainer.grad_checkpointing=true"))]}
    eager = _losses(runs["eager"])
    assert len(eager) == 3
    for name in ("compiled", "both"):
        assert _losses(runs[name]) == pytest.approx(eager, abs=1e-5, rel=0), name


def test_an_unknown_backend_is_a_config_error_naming_the_key():
    from medkit.config.compose import Selection, compose
    from medkit.testing.synthetic import use_synthetic_host

    host = use_synthetic_host()
    with pytest.raises(ConfigError, match="trainer.compile=nope") as info:
        compose(Selection(modalities=["synth_a"], strategy="sequential", preset="tiny",
                          overrides=["trainer.compile=nope"]), host=host)
    assert "aot_eager" in str(info.value) and "\n" not in str(info.value)
    cfg = compose(Selection(modalities=["synth_a"], strategy="sequential", preset="tiny",
                            overrides=["trainer.compile=true"]), host=host)
    assert cfg["trainer"]["compile"] is True and cfg["trainer"]["grad_checkpointing"] is False


@pytest.mark.slow
def test_inductor_compiled_blocks_give_the_eager_losses(tmp_path):
    """The real backend (needs a C++ compiler on CPU): the same losses to 1e-5."""
    import shutil

    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("inductor on CPU needs a C++ compiler")
    runs = [run_synthetic(tmp_path / name, "sequential", ("synth_a",), max_steps=3, overrides=over,
                          demo_dir=tmp_path / "demo") for name, over in [("e", ()), ("i", ("trainer.compile=true",))]]
    assert _losses(runs[1]) == pytest.approx(_losses(runs[0]), abs=1e-5, rel=0)
