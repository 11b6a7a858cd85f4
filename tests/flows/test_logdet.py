"""The reported log-determinants equal brute-force ``log|det J|`` from autograd Jacobians."""

from __future__ import annotations

import pytest
import torch

import avade


def _check(flow, x, warm_up, perturb, brute_logdet, *, train: bool = False) -> None:
    warm_up(flow, torch.randn(8, *x.shape[1:]))
    perturb(flow, 0.1)
    flow.train(train)
    _, logdet = flow(x)
    torch.testing.assert_close(logdet[0], brute_logdet(flow, x), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("net", ["resnet", "reference"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("scales", [1, 2])
@pytest.mark.parametrize("blocks", [1, 2])
def test_realnvp_logdet(channels, scales, blocks, net, warm_up, perturb, brute_logdet) -> None:
    flow = avade.create("flow", "realnvp", in_shape=(channels, 4, 4), scales=scales, blocks=blocks, hidden=8,
                        net=net)
    _check(flow, torch.randn(1, channels, 4, 4), warm_up, perturb, brute_logdet)


@pytest.mark.parametrize("net", ["resnet", "reference"])
def test_realnvp_logdet_in_train_mode(net, warm_up, perturb, brute_logdet) -> None:
    # With batch statistics (batch of one), s and t still depend on the conditioning half only.
    flow = avade.create("flow", "realnvp", in_shape=(3, 4, 4), scales=2, blocks=1, hidden=8, net=net)
    _check(flow, torch.randn(1, 3, 4, 4), warm_up, perturb, brute_logdet, train=True)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("scales", [1, 2])
@pytest.mark.parametrize("lu", [True, False])
def test_glow_logdet(channels, scales, lu, warm_up, perturb, brute_logdet) -> None:
    flow = avade.create("flow", "glow", in_shape=(channels, 4, 4), scales=scales, steps=2, hidden=8, lu=lu)
    _check(flow, torch.randn(1, channels, 4, 4), warm_up, perturb, brute_logdet)


@pytest.mark.parametrize(
    "name, config",
    [
        ("actnorm", {}),
        ("invconv", {"lu": True}),
        ("invconv", {"lu": False}),
        ("affine-coupling", {"mask": "checkerboard", "hidden": 8, "blocks": 1}),
        ("affine-coupling", {"mask": "checkerboard", "reverse": True, "hidden": 8, "blocks": 1}),
        ("affine-coupling", {"mask": "channel", "hidden": 8, "blocks": 1}),
        ("affine-coupling", {"mask": "channel", "reverse": True, "hidden": 8, "blocks": 1}),
        ("affine-coupling", {"mask": "channel", "net": "conv", "hidden": 8, "norm": "none"}),
        ("affine-coupling", {"mask": "checkerboard", "net": "reference", "hidden": 8, "blocks": 1}),
        ("affine-coupling", {"mask": "checkerboard-packed", "net": "reference", "hidden": 8, "blocks": 1}),
        ("affine-coupling", {"mask": "channel", "reverse": True, "net": "reference", "hidden": 8, "blocks": 2}),
        ("affine-coupling", {"mask": "checkerboard", "norm": "batch-norm", "batch_norm": False, "hidden": 8}),
        ("squeeze", {}),
        ("identity", {}),
    ],
)
def test_building_block_logdet(name, config, warm_up, perturb, brute_logdet) -> None:
    flow = avade.create("flow", name, in_shape=(3, 4, 4), **config)
    _check(flow, torch.randn(1, 3, 4, 4), warm_up, perturb, brute_logdet)


@pytest.mark.parametrize(
    "name, config",
    [
        ("actnorm", {}),
        ("actnorm", {"logscale_factor": 3.0}),
        ("invconv", {"lu": True}),
        ("invconv", {"lu": False}),
        ("batch-norm", {}),
        ("affine-coupling", {"mask": "checkerboard-packed", "reverse": True, "hidden": 8, "blocks": 1}),
        ("realnvp", {"scales": 2, "hidden": 8, "blocks": 1}),
        ("glow", {"scales": 2, "steps": 1, "hidden": 8}),
    ],
)
def test_logdet_on_non_square_images(name, config, warm_up, perturb, brute_logdet) -> None:
    # Per-pixel log-determinants are counted H * W times: with H != W a count of H * H or W * W shows.
    flow = avade.create("flow", name, in_shape=(2, 4, 8), **config)
    _check(flow, torch.randn(1, 2, 4, 8), warm_up, perturb, brute_logdet)
