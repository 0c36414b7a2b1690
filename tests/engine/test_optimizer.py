"""The engine's AdamW (medkit.engine.schedule.adamw): torch's fused kernel on CPU, and a resume through
medkit's optimizer checkpoint that is bit-exact with it, parameters with a non-contiguous layout
(the position tables) included."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medkit.api.errors import ConfigError
from medkit.engine.schedule import adamw, param_groups
from medkit.models.encoder import sincos_init
from medkit.storage.files import load_optimizer, save_optimizer


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    m = torch.nn.Module()
    m.pos = torch.nn.Parameter(sincos_init(24, (5, 7)))  # [1, D, 5, 7], channels-last like every position table
    m.fc = torch.nn.Linear(24, 37)  # 37 outputs: the fused kernel's scalar tail runs too
    return m


def _step(m: torch.nn.Module, opt: torch.optim.Optimizer, k: int) -> None:
    g = torch.Generator().manual_seed(k)
    x = torch.randn(3, 5 * 7, 24, generator=g)
    opt.zero_grad(set_to_none=True)
    out = m.fc(x + m.pos.flatten(2).transpose(1, 2))
    (out.square().mean() + out.sin().mean()).backward()
    opt.step()


def _make(m: torch.nn.Module, impl: str = "auto") -> torch.optim.Optimizer:
    return adamw(param_groups(list(m.named_parameters()), 0.05), lr=1e-2, betas=(0.9, 0.95), impl=impl)


@pytest.mark.parametrize("impl", ["auto", "foreach"])
def test_resume_through_a_checkpoint_is_bit_exact(tmp_path: Path, impl: str) -> None:
    torch.set_num_threads(1)
    assert not _model().pos.is_contiguous(), "the case the fused kernel got wrong: a channels-last parameter"
    whole = _model()
    opt = _make(whole, impl)
    if impl == "auto":
        assert opt.defaults["fused"] is True, "the engine uses the fused kernel on CPU"
    for k in range(6):
        _step(whole, opt, k)

    first = _model()
    opt = _make(first, impl)
    for k in range(3):
        _step(first, opt, k)
    save_optimizer(tmp_path, opt)
    resumed = _model()
    resumed.load_state_dict({k: v.clone() for k, v in first.state_dict().items()})
    opt = _make(resumed, impl)
    load_optimizer(tmp_path, opt)
    state = opt.state[resumed.pos]
    assert state["exp_avg"].stride() == resumed.pos.stride(), "moments restored with their parameter's layout"
    for k in range(3, 6):
        _step(resumed, opt, k)
    for (name, a), b in zip(whole.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), f"{name} differs after resume ({impl})"


def test_an_unknown_or_unavailable_impl_is_refused() -> None:
    with pytest.raises(ConfigError, match="auto, fused or foreach"):
        _make(_model(), "loop")
