"""Configs, validation errors and the structure of the multi-scale flows."""

from __future__ import annotations

import pytest
import torch

import avade
from avade.flows.actnorm import ActNorm
from avade.flows.coupling import AffineCoupling
from avade.flows.realnvp import RealNVPConfig
from avade.flows.split_prior import LearnedSplitPrior


def test_realnvp_defaults_are_the_papers() -> None:
    assert RealNVPConfig() == RealNVPConfig(scales=1, blocks=2, layers=3, hidden=64, norm="weight-norm",
                                            batch_norm=True)


@pytest.mark.parametrize("scales, shape", [(2, (3, 5, 8)), (3, (3, 6, 6)), (3, (1, 8, 10))])
def test_realnvp_rejects_indivisible_resolution(scales, shape) -> None:
    with pytest.raises(avade.ConfigError, match=r"divisible by 2\*\*\(scales-1\)") as info:
        avade.create("flow", "realnvp", in_shape=shape, scales=scales, hidden=8, blocks=1)
    assert "\n" not in str(info.value)
    assert info.value.path == "scales"


def test_glow_rejects_indivisible_resolution() -> None:
    with pytest.raises(avade.ConfigError, match=r"use scales <= 1"):
        avade.create("flow", "glow", in_shape=(3, 6, 6), scales=2, steps=1, hidden=8)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("scales", [1, 2, 3])
def test_realnvp_structure(channels, scales) -> None:
    flow = avade.create("flow", "realnvp", in_shape=(channels, 8, 8), scales=scales, layers=2, hidden=8,
                        blocks=1)
    couplings = [m for m in flow.modules() if isinstance(m, AffineCoupling)]
    assert len(couplings) == 2 * scales + 3 * (scales - 1)
    assert sum(c.checker for c in couplings) == 2 * scales
    # alternating checkerboard masks within a scale
    first_scale = [c for c in couplings if c.checker][:2]
    assert torch.equal(first_scale[0].mask, first_scale[1].inv_mask)
    x = torch.randn(2, channels, 8, 8)
    assert flow(x)[0].shape == x.shape


@pytest.mark.parametrize("scales", [1, 2, 3])
def test_glow_structure(scales) -> None:
    flow = avade.create("flow", "glow", in_shape=(3, 8, 8), scales=scales, steps=2, hidden=8)
    assert sum(isinstance(m, ActNorm) for m in flow.modules()) == 2 * scales
    assert sum(isinstance(m, LearnedSplitPrior) for m in flow.modules()) == scales - 1
    x = torch.randn(2, 3, 8, 8)
    flow.train()
    y, logdet = flow(x)
    assert y.shape == x.shape and logdet.shape == (2,)


def test_glow_default_config_builds_on_32x32() -> None:
    flow = avade.create("flow", "glow", in_shape=(3, 32, 32), hidden=8)
    assert flow.cfg.scales == 3 and flow.cfg.steps == 8 and flow.cfg.lu


@pytest.mark.parametrize(
    "name, options, key",
    [
        ("realnvp", {"scales": 0}, "scales"),
        ("realnvp", {"norm": "weight-nrom"}, "norm"),
        ("realnvp", {"net": "refrence"}, "net"),
        ("glow", {"steps": 0}, "steps"),
        ("affine-coupling", {"mask": "diagonal"}, "mask"),
    ],
)
def test_invalid_options_are_config_errors(name, options, key) -> None:
    with pytest.raises(avade.ConfigError) as info:
        avade.create("flow", name, in_shape=(3, 8, 8), **options)
    assert key in str(info.value)


def test_channel_mask_needs_two_channels() -> None:
    with pytest.raises(avade.ConfigError, match="at least 2 channels"):
        avade.create("flow", "affine-coupling", in_shape=(1, 4, 4), mask="channel")


def test_unknown_norm_suggests_the_close_name() -> None:
    with pytest.raises(avade.ConfigError, match="weight-norm"):
        avade.create("flow", "realnvp", in_shape=(3, 8, 8), norm="weight-nrom")


def test_realnvp_norm_option_reaches_the_convolutions() -> None:
    from avade.norms.plain import Plain
    from avade.norms.weight_norm import WeightNorm

    default = avade.create("flow", "realnvp", in_shape=(3, 4, 4), hidden=8, blocks=1)
    plain = avade.create("flow", "realnvp", in_shape=(3, 4, 4), hidden=8, blocks=1, norm="none",
                         batch_norm=False)
    assert any(isinstance(m, WeightNorm) for m in default.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in default.modules())
    assert not any(isinstance(m, WeightNorm | torch.nn.BatchNorm2d) for m in plain.modules())
    assert any(isinstance(m, Plain) for m in plain.modules())


@pytest.mark.parametrize("scales", [1, 2])
def test_realnvp_packed_checkerboard_conforms_and_halves_the_work(scales):
    """The packed checkerboard inverts exactly, its log-det matches autograd, and its s/t nets see half
    the pixels of the masked (reference) variant at the same parameter count."""
    from torch.utils.flop_counter import FlopCounterMode

    from avade.testing import check_component

    check_component("flow", "realnvp", hidden=8, blocks=1, scales=scales, checkerboard="packed")
    flops = {}
    for mode in ("masked", "packed"):
        flow = avade.create("flow", "realnvp", in_shape=(3, 16, 16), hidden=8, blocks=1, checkerboard=mode)
        with FlopCounterMode(display=False) as counter:
            flow(torch.randn(2, 3, 16, 16))
        flops[mode] = (counter.get_total_flops(), sum(p.numel() for p in flow.parameters()))
    assert flops["packed"][1] == flops["masked"][1]
    assert flops["packed"][0] == pytest.approx(flops["masked"][0] / 2, rel=0.05)


@pytest.mark.parametrize("name", ["realnvp", "glow", "identity"])
def test_a_flow_refuses_inputs_of_another_shape(name: str) -> None:
    # An unbatched image broadcast into y [1, 3, 8, 8] and logdet [3] before (realnvp), silently.
    flow = avade.create("flow", name, in_shape=(3, 8, 8), **({"hidden": 4, "blocks": 1} if name == "realnvp" else
                                                             {"hidden": 4, "steps": 1, "scales": 1} if name == "glow"
                                                             else {}))
    for bad in (torch.rand(3, 8, 8), torch.rand(2, 1, 8, 8), torch.rand(2, 3, 16, 16)):
        with pytest.raises(avade.DataError, match=rf"flow '{name}' was built for inputs \[B, 3, 8, 8\], got"):
            flow(bad)
        with pytest.raises(avade.DataError, match=rf"flow '{name}' was built for outputs \[B, 3, 8, 8\]"):
            flow.inverse(bad)
    # uint8 images (from a data loader, not yet preprocessed) failed deep in torch (glow) or ran silently
    # as values 0..255 (realnvp)
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    with pytest.raises(avade.DataError, match=rf"flow '{name}' takes floating-point inputs, got torch.uint8"):
        flow(images)
    with pytest.raises(avade.DataError, match=rf"flow '{name}' takes floating-point outputs, got torch.uint8"):
        flow.inverse(images)
    y, logdet = flow(torch.rand(2, 3, 8, 8))
    assert y.shape == (2, 3, 8, 8) and logdet.shape == (2,)
