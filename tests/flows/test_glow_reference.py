"""Glow as in its reference code (openai/glow model.py, tfops.py): the details a user expects of "Glow"."""

from __future__ import annotations

import pytest
import torch

import avade
from avade.flows.actnorm import ActNorm
from avade.flows.coupling import AffineCoupling
from avade.flows.split_prior import LearnedSplitPrior
from avade.flows.st_nets import ConvST, ScaledZeroConv
from avade.nn.layers import norm_options, normed
from avade.norms.actnorm_layer import ActNormed


def _glow(**cfg):
    return avade.create("flow", "glow", in_shape=(3, 8, 8), scales=2, steps=2, hidden=8, **cfg)


def test_coupling_networks_take_glows_actnorm() -> None:
    """Glow's f() with norm = "actnorm": conv3x3 -> actnorm -> ReLU -> conv1x1 -> actnorm -> ReLU -> zero
    conv3x3 (avade's default is "none": see GlowConfig)."""
    nets = [m for m in _glow(norm="actnorm").modules() if isinstance(m, ConvST)]
    assert nets
    for net in nets:
        assert isinstance(net.conv1, ActNormed) and isinstance(net.conv2, ActNormed)
        assert net.conv1.layer.kernel_size == (3, 3) and net.conv2.layer.kernel_size == (1, 1)
        assert net.conv1.logscale_factor == 3.0 and net.conv2.logscale_factor == 3.0
        assert isinstance(net.out, ScaledZeroConv) and net.out.kernel_size == (3, 3)
    # the default: norm = "none" (normflows' Glow, the benchmarks)
    assert not any(isinstance(m, ActNormed) for m in _glow().modules())


def test_actnormed_init_uses_population_std() -> None:
    """Glow's actnorm divides by sqrt(mean((x - mean)^2)) + 1e-6: the output's population std is 1."""
    layer = avade.create("norm", "actnorm", layer=torch.nn.Conv2d(2, 4, 1)).train()
    h = layer(torch.randn(2, 2, 3, 3) * 5 + 1)
    torch.testing.assert_close(h.mean((0, 2, 3)), torch.zeros(4), atol=1e-12, rtol=0)
    torch.testing.assert_close(h.std((0, 2, 3), correction=0), torch.ones(4), atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", ["flow", "norm"])
def test_actnorm_logscale_factor(kind) -> None:
    """log s = 3 * parameter: the same init, but d(log s)/d(parameter) = 3."""
    x = torch.randn(4, 3, 5, 5) * 3 + 2
    if kind == "flow":
        plain = avade.create("flow", "actnorm", in_shape=(3, 5, 5)).train()
        glow = avade.create("flow", "actnorm", in_shape=(3, 5, 5), logscale_factor=3.0).train()
        y_plain, ld_plain = plain(x)
        y_glow, ld_glow = glow(x)
        torch.testing.assert_close(ld_glow, ld_plain)
        ld_glow.sum().backward()
        torch.testing.assert_close(glow.log_scale.grad, torch.full_like(glow.log_scale, 3.0 * 25 * 4))
    else:
        plain = normed(torch.nn.Conv2d(3, 3, 1), "actnorm").train()
        with norm_options({"actnorm": {"logscale_factor": 3.0}}):
            glow = normed(torch.nn.Conv2d(3, 3, 1), "actnorm").train()
        glow.layer.load_state_dict(plain.layer.state_dict())
        y_plain, y_glow = plain(x), glow(x)
        torch.testing.assert_close(glow.log_scale * 3.0, plain.log_scale)
    torch.testing.assert_close(y_glow, y_plain)


def test_zero_convs_have_glow_output_scale() -> None:
    """conv2d_zeros: zero weight and bias, output times exp(3 * logs) with logs = 0 at init."""
    flow = _glow()
    priors = [m for m in flow.modules() if isinstance(m, LearnedSplitPrior)]
    couplings = [m for m in flow.modules() if isinstance(m, AffineCoupling)]
    assert priors and couplings
    for conv in [p.conv for p in priors] + [c.net.out for c in couplings]:
        assert isinstance(conv, ScaledZeroConv)
        assert conv.logscale_factor == 3.0 and conv.kernel_size == (3, 3)
        assert not conv.weight.any() and not conv.bias.any() and not conv.logs.any()
        with torch.no_grad():
            conv.bias.fill_(0.5)
            conv.logs.fill_(0.1)
        out = conv(torch.randn(2, conv.in_channels, 4, 4))
        torch.testing.assert_close(out, torch.full_like(out, 0.5 * torch.exp(torch.tensor(0.3)).item()))
    flow_actnorms = [m for m in flow.modules() if isinstance(m, ActNorm)]
    assert flow_actnorms and all(m.logscale_factor == 3.0 for m in flow_actnorms)


def test_logscale_factor_zero_is_the_plain_parametrisation() -> None:
    flow = _glow(logscale_factor=0.0)
    assert not any(isinstance(m, ScaledZeroConv) for m in flow.modules())
    assert all(m.logscale_factor == 1.0 for m in flow.modules() if isinstance(m, ActNorm | ActNormed))


def test_glow_keeps_enclosing_norm_options() -> None:
    """Glow adds actnorm's factor to a recipe's norm options instead of replacing them."""
    with norm_options({"actnorm": {"scale": 2.0}, "weight-norm": {"data_init": True}}):
        flow = _glow(norm="actnorm")
    layers = [m for m in flow.modules() if isinstance(m, ActNormed)]
    assert layers and all(m.target == 2.0 and m.logscale_factor == 3.0 for m in layers)


@pytest.mark.parametrize("norm", ["none", "actnorm"])
def test_glow_inverts_exactly_after_training_steps(norm: str) -> None:
    flow = _glow(norm=norm).train()
    x = torch.randn(8, 3, 8, 8)
    opt = torch.optim.Adam(flow.parameters(), lr=1e-2)
    for _ in range(3):
        y, logdet = flow(x)
        loss = 0.5 * (y**2).sum((1, 2, 3)).mean() - logdet.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    flow.eval()
    y, _ = flow(x)
    torch.testing.assert_close(flow.inverse(y), x)


def _glow_edge_padded_conv(conv: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """openai/glow's add_edge_padding then a VALID convolution: zero-pad, concatenate a channel that is 1
    in the padding, convolve with the edge channel's weights as one more input channel."""
    ph, pw = conv.padding
    padded = torch.nn.functional.pad(x, (pw, pw, ph, ph))
    border = torch.ones_like(padded[:, :1])
    border[..., ph:-ph, pw:-pw] = 0
    weight = torch.cat([conv.weight, conv.edge_weight], dim=1)
    return torch.nn.functional.conv2d(torch.cat([padded, border], dim=1), weight, conv.bias)


def test_edge_bias_is_glows_extra_padding_channel() -> None:
    from avade.nn import Conv2d

    conv = Conv2d(3, 5, 3, padding=1, edge_bias=True)
    x = torch.randn(2, 3, 6, 4, requires_grad=True)
    y = conv(x)
    ref = _glow_edge_padded_conv(conv, x)
    torch.testing.assert_close(y, ref)
    plain = torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=1)
    torch.testing.assert_close(y[..., 1:-1, 1:-1], plain[..., 1:-1, 1:-1])  # the interior is untouched
    assert (y - plain).abs()[..., 0, :].min() > 0  # every border pixel gets its edge term
    wrt = (conv.edge_weight, conv.weight, conv.bias, x)
    grads = torch.autograd.grad(y.square().sum(), wrt)
    ref_grads = torch.autograd.grad(_glow_edge_padded_conv(conv, x).square().sum(), wrt)
    for g, g_ref in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, g_ref)
    for size in (1, 2, 3):  # images so small that the border strips meet or overlap
        tiny = torch.randn(2, 3, size, size + 1)
        torch.testing.assert_close(conv(tiny), _glow_edge_padded_conv(conv, tiny))
    wide = Conv2d(3, 4, 5, padding=2, edge_bias=True)  # strips 2 pixels wide
    x5 = torch.randn(2, 3, 7, 6, requires_grad=True)
    wrt = (wide.edge_weight, x5)
    for g, g_ref in zip(torch.autograd.grad(wide(x5).square().sum(), wrt),
                        torch.autograd.grad(_glow_edge_padded_conv(wide, x5).square().sum(), wrt), strict=True):
        torch.testing.assert_close(g, g_ref)
    cl = conv(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(cl, y)
    assert Conv2d(3, 5, 1, edge_bias=True).edge_weight is None  # 1x1 pads nothing, as in Glow


def test_glow_gives_its_3x3_convolutions_the_edge_channel() -> None:
    flow = _glow()
    nets = [m for m in flow.modules() if isinstance(m, ConvST)]
    priors = [m for m in flow.modules() if isinstance(m, LearnedSplitPrior)]
    assert nets and priors
    for net in nets:
        assert net.conv1.layer.edge_weight is not None and net.conv1.layer.edge_weight.any()
        assert net.conv2.layer.edge_weight is None
        assert net.out.edge_weight is not None and not net.out.edge_weight.any()  # zero conv: zero at init
    assert all(p.conv.edge_weight is not None and not p.conv.edge_weight.any() for p in priors)
    plain = _glow(edge_bias=False)
    assert not any(name.endswith("edge_weight") for name, _ in plain.named_parameters())
    assert len(list(flow.parameters())) - len(list(plain.parameters())) == 2 * len(nets) + len(priors)


def test_edge_bias_is_for_glows_network_only() -> None:
    with pytest.raises(avade.ConfigError, match="edge_bias"):
        avade.create("flow", "affine-coupling", in_shape=(4, 4, 4), net="resnet", edge_bias=True)
    from avade.nn import Conv2d

    for bad in ({"padding": 0}, {"padding": 1, "dilation": 2}, {"padding": 2, "dilation": 2},
                {"padding": 1, "stride": 2}):
        with pytest.raises(avade.ConfigError, match="edge_bias needs an undilated, stride-1"):
            Conv2d(3, 5, 3, edge_bias=True, **bad)
    with pytest.raises(avade.ConfigError, match="cwn does not support"):
        _glow(norm="cwn")


def test_edge_bias_takes_padding_same() -> None:
    # (padding="same" was refused with "edge_bias needs ... a 'same' convolution": the check compared the
    # string "same" with (1, 1))
    from avade.nn import Conv2d

    torch.manual_seed(0)
    same = Conv2d(3, 5, 3, padding="same", edge_bias=True)
    numbers = Conv2d(3, 5, 3, padding=1, edge_bias=True)
    numbers.load_state_dict(same.state_dict())
    x = torch.randn(2, 3, 6, 6)
    assert torch.equal(same(x), numbers(x))


def test_the_first_actnorm_absorbs_the_inputs_scale() -> None:
    """Why logit_alpha = 0 (2x - 1) is Glow's input (x - 1/2): the first actnorm's data-dependent init
    undoes the factor 2, so the output is the same and the log-det differs by D log 2 (up to the 1e-6 that
    the init adds to the std)."""
    torch.manual_seed(0)
    glow = _glow().train()
    twice = _glow().train()
    twice.load_state_dict(glow.state_dict())
    v = torch.rand(6, 3, 8, 8)
    y, logdet = glow(v - 0.5)
    y2, logdet2 = twice(2 * v - 1)
    torch.testing.assert_close(y2, y, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logdet2, logdet - v[0].numel() * torch.log(torch.tensor(2.0)), rtol=1e-6, atol=1e-3)
    assert not torch.allclose(logdet2, logdet, rtol=1e-6, atol=1e-3)


def test_weight_norms_data_init_scales_the_edge_term_too() -> None:
    """Weight norm's data-dependent init makes each output channel mean 0, std init_scale: the edge
    channel is part of that output, so it is scaled with the rest."""
    from avade.nn import Conv2d

    torch.manual_seed(0)
    layer = normed(Conv2d(4, 6, 3, padding=1, edge_bias=True), "weight-norm", init_scale=1.0).train()
    out = layer(0.05 * torch.randn(16, 4, 8, 8))
    torch.testing.assert_close(out.mean((0, 2, 3)), torch.zeros(6), atol=1e-6, rtol=0)
    torch.testing.assert_close(out.std((0, 2, 3)), torch.ones(6), atol=1e-4, rtol=0)
