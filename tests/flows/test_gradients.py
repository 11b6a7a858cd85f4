"""Gradients reach every parameter once the zero-initialised last layers are perturbed."""

from __future__ import annotations

import pytest
import torch

import avade


@pytest.mark.parametrize(
    "name, config",
    [
        ("realnvp", {"scales": 2, "hidden": 8, "blocks": 2}),
        ("realnvp", {"scales": 1, "hidden": 8, "blocks": 1, "norm": "none", "batch_norm": False}),
        ("glow", {"scales": 2, "steps": 2, "hidden": 8, "lu": True}),
        ("glow", {"scales": 2, "steps": 1, "hidden": 8, "lu": False}),
        ("affine-coupling", {"mask": "channel", "net": "conv", "hidden": 8}),
    ],
)
def test_gradients_reach_every_parameter(name, config, perturb) -> None:
    flow = avade.create("flow", name, in_shape=(3, 8, 8), **config).train()
    x = torch.randn(4, 3, 8, 8)
    flow(x)  # data-dependent init
    perturb(flow, 0.05)
    y, logdet = flow(x)
    loss = 0.5 * (y**2).sum() - logdet.sum()  # negative log-likelihood under N(0, I), up to a constant
    loss.backward()
    names = [n for n, _ in flow.named_parameters()]
    assert names
    for n, p in flow.named_parameters():
        assert p.grad is not None, f"no gradient for {n}"
        assert torch.isfinite(p.grad).all(), n
        assert p.grad.abs().max() > 0, f"zero gradient for {n}"


def test_zero_init_layers_still_learn() -> None:
    # Without perturbation the coupling is the identity, but its last layer must get a gradient.
    flow = avade.create("flow", "affine-coupling", in_shape=(3, 4, 4), hidden=8, blocks=1).train()
    x = torch.randn(4, 3, 4, 4)
    y, logdet = flow(x)
    (0.5 * (y**2).sum() - logdet.sum()).backward()
    assert flow.net.out.weight.grad.abs().max() > 0
