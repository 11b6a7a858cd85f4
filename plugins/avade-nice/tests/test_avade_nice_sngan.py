"""The `sngan` discriminator: the discriminator interface, spectral normalization, conditioning."""

from __future__ import annotations

import pytest
import torch

import avade
from avade.errors import ConfigError
from avade.losses.adversarial import gradient_penalty

pytest.importorskip("avade_nice")

SMALL = {"channels": [16, 16, 16], "down": [True, True, False]}


def make(resolution: int, num_classes: int | None = None, **cfg) -> torch.nn.Module:
    torch.manual_seed(0)
    return avade.create("discriminator", "sngan", in_shape=(3, resolution, resolution),
                        num_classes=num_classes, **cfg)


def test_registered_by_the_plugin_distribution() -> None:
    assert avade.get_registry().get("discriminator", "sngan").dist == "avade-nice"


@pytest.mark.parametrize("resolution", [32, 64])
def test_scores_and_input_gradient(resolution: int) -> None:
    d = make(resolution, **SMALL)
    x = (torch.rand(2, 3, resolution, resolution) * 2 - 1).requires_grad_(True)
    out = d(x)
    assert out.shape == (2,)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_layers_are_spectrally_normalized() -> None:
    d = make(32, **SMALL)
    # A few training passes let the power iteration converge; eval mode then freezes it.
    for _ in range(30):
        d(torch.zeros(1, 3, 32, 32))
    d.eval()
    conv = d.blocks[1].conv2
    sigma = torch.linalg.matrix_norm(conv.weight.flatten(1), ord=2).item()
    assert sigma == pytest.approx(1.0, rel=0.05)
    assert any("parametrizations" in n for n, _ in d.head.named_modules())


def test_projection_uses_labels_and_gp_trains_it() -> None:
    d = make(32, num_classes=5, **SMALL)
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert not torch.allclose(d(x, torch.tensor([0, 1, 2])), d(x, torch.tensor([3, 4, 0])))
    gp = gradient_penalty(d, x, torch.zeros_like(x), y=torch.tensor([0, 1, 2]), weight=1.0)
    gp.backward()
    assert torch.isfinite(gp)
    assert d.blocks[0].conv1.parametrizations.weight.original.grad is not None


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="one entry per block"):
        make(32, channels=[8, 8], down=[True])
    with pytest.raises(ConfigError, match="too small"):
        make(4, channels=[8, 8, 8], down=[True, True, True])
