"""Shared fixtures for the flow tests: float64 everywhere, seeded, plus small helpers as fixtures."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch
from torch import nn


@pytest.fixture(autouse=True)
def float64_seeded() -> Iterator[None]:
    """Exactness checks need float64; every test starts from the same seed."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(old)


def _perturb(module: nn.Module, scale: float = 0.1) -> None:
    """Add noise to every parameter, so zero-initialised last layers no longer make couplings trivial."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))


def _warm_up(flow: nn.Module, x: torch.Tensor) -> None:
    """One training-mode forward (data-dependent init, batch-norm statistics), then eval mode."""
    flow.train()
    with torch.no_grad():
        flow(x)
    flow.eval()


def _brute_logdet(flow: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``log|det J|`` of ``flow`` at the single sample ``x`` ([1, C, H, W]) from the full Jacobian."""
    assert x.shape[0] == 1

    def f(v: torch.Tensor) -> torch.Tensor:
        return flow(v.view_as(x))[0].reshape(-1)

    jac = torch.autograd.functional.jacobian(f, x.reshape(-1))
    sign, logabsdet = torch.linalg.slogdet(jac)
    assert sign != 0
    return logabsdet


@pytest.fixture
def perturb() -> Callable[..., None]:
    return _perturb


@pytest.fixture
def warm_up() -> Callable[[nn.Module, torch.Tensor], None]:
    return _warm_up


@pytest.fixture
def brute_logdet() -> Callable[[nn.Module, torch.Tensor], torch.Tensor]:
    return _brute_logdet
