"""``net = "reference"``: the Real-NVP reference code's s/t network (tensorflow/models, research/real_nvp)
and its scalar tanh bound, as an option of the affine coupling and of ``realnvp``."""

from __future__ import annotations

import pytest
import torch

import avade
from avade.flows.coupling import AffineCoupling
from avade.flows.st_nets import ReferenceST, ShiftBatchNorm
from avade.norms.weight_norm import WeightNorm
from avade.testing import check_component


def _couplings(flow: torch.nn.Module) -> list[AffineCoupling]:
    return [m for m in flow.modules() if isinstance(m, AffineCoupling)]


def _trainable(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@pytest.mark.parametrize("options", [
    {"scales": 1},
    {"scales": 2},
    {"scales": 2, "checkerboard": "packed"},
    {"scales": 2, "out_batch_norm": True},
    {"scales": 2, "out_batch_norm": "transformed", "final_layers": 4},
    {"scales": 1, "norm": "none", "batch_norm": False},
    {"scales": 1, "norm": "batch-norm"},
], ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_realnvp_with_the_reference_net_conforms(options) -> None:
    """Invertibility (float64), log-det vs the brute-force Jacobian and its gradient, gradients, round trip."""
    check_component("flow", "realnvp", hidden=8, blocks=1, net="reference", **options)


@pytest.mark.parametrize("mask", ["checkerboard", "checkerboard-packed", "channel"])
@pytest.mark.parametrize("reverse", [False, True])
def test_reference_coupling_conforms(mask, reverse) -> None:
    check_component("flow", "affine-coupling", hidden=8, blocks=2, net="reference", mask=mask, reverse=reverse)


def _hand_count(c_in: int, c_out: int, hidden: int, blocks: int, mask_channel: bool) -> int:
    """Trainable parameters of the reference network with batch norm and weight norm, by hand."""
    k3, k1 = 9, 1
    bn_in = c_in  # shift only (scale=False)
    h_in = (2 * c_in + mask_channel) * hidden * k3 + hidden  # weights + bias; no magnitude (scale=False)
    skip = hidden * hidden * k1 + 2 * hidden  # weights + bias + magnitude
    block = (hidden  # bn_in shift
             + hidden * hidden * k3  # h_0: no bias (batch norm follows), no magnitude
             + hidden  # bn_0 shift
             + hidden * hidden * k3 + 2 * hidden  # out: bias + magnitude
             + skip)  # its 1x1 skip
    out = hidden * c_out * k1 + 2 * c_out
    return bn_in + h_in + skip + blocks * block + hidden + out  # + bn_pre_out shift


@pytest.mark.parametrize("mask, c_in, mask_channel", [("checkerboard", 3, True), ("checkerboard-packed", 3, False),
                                                      ("channel", 2, False)])
def test_reference_net_layout_and_parameter_count(mask, c_in, mask_channel) -> None:
    c = 4 if mask == "channel" else 3
    coupling = avade.create("flow", "affine-coupling", in_shape=(c, 8, 8), mask=mask, net="reference", hidden=16,
                            blocks=2)
    net = coupling.net
    assert isinstance(net, ReferenceST)
    # concat-ReLU doubles the input channels; masked checkerboard couplings add the mask as one more
    assert net.h_in.layer.in_channels == 2 * c_in + mask_channel
    assert len(net.skips) == 2 and net.out.layer.kernel_size == (1, 1)
    assert isinstance(net.out, WeightNorm)  # weight-normed, not a zero conv
    assert _trainable(net) == _hand_count(c_in, 2 * (c - c_in) if mask == "channel" else 2 * c, 16, 2,
                                          mask_channel)
    assert coupling.scale_bound.numel() == 1
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(isinstance(m, ShiftBatchNorm) for m in bns)
    # no learned scale: a fixed unit one, neither trained nor saved
    assert all(not m.weight.requires_grad and torch.equal(m.weight, torch.ones_like(m.weight))
               and "weight" not in m.state_dict() and "bias" in m.state_dict() for m in bns)
    # the reference's "scale=False" convolutions are the unit-norm direction: magnitude fixed at 1
    g = net.h_in.layer.parametrizations.weight.original0
    assert not g.requires_grad and torch.equal(g, torch.ones_like(g))
    assert net.skip_in.layer.parametrizations.weight.original0.requires_grad


def test_the_mask_channel_and_the_concat_relu_reach_the_first_convolution() -> None:
    coupling = avade.create("flow", "affine-coupling", in_shape=(3, 4, 4), mask="checkerboard", net="reference",
                            hidden=8, blocks=1).train()
    seen = {}
    handle = coupling.net.h_in.layer.register_forward_pre_hook(lambda m, args: seen.update(x=args[0]))
    x = torch.randn(5, 3, 4, 4)
    coupling(x)
    handle.remove()
    h = seen["x"]
    assert h.shape == (5, 7, 4, 4)
    assert torch.equal(h[:, 6:], coupling.mask.expand(5, 1, 4, 4))
    pos, neg = h[:, :3], h[:, 3:6]
    assert (pos >= 0).all() and (neg >= 0).all() and (pos * neg == 0).all()
    # relu(2 u) - relu(-2 u) = 2 u, u the batch-normalized masked input (zero shift at init)
    masked = x * coupling.mask
    u = (masked - masked.mean((0, 2, 3), keepdim=True)) / torch.sqrt(
        masked.var((0, 2, 3), keepdim=True, correction=0) + 1e-4)
    torch.testing.assert_close(pos - neg, 2 * u)


def test_channel_couplings_do_not_double_the_input() -> None:
    net = avade.create("flow", "affine-coupling", in_shape=(4, 4, 4), mask="channel", net="reference", hidden=8,
                       blocks=1).net
    assert net.mask is None and net.input_scale == 1.0


def test_fresh_reference_flow_starts_as_the_reference_does() -> None:
    """Checkerboard couplings start with tanh bound 0: a volume-preserving shift (log-det exactly 0, but
    not the identity, the last layer is not zero); channel couplings start with bound 1: |log s| < 1."""
    flow = avade.create("flow", "realnvp", in_shape=(3, 8, 8), scales=2, hidden=8, blocks=1, net="reference")
    couplings = _couplings(flow)
    assert [float(c.scale_bound) for c in couplings] == [0.0] * 3 + [1.0] * 3 + [0.0] * 3
    one_scale = avade.create("flow", "realnvp", in_shape=(3, 8, 8), scales=1, hidden=8, blocks=1, net="reference")
    x = torch.randn(4, 3, 8, 8)
    for mode in (True, False):
        one_scale.train(mode)
        y, logdet = one_scale(x)
        assert torch.equal(logdet, torch.zeros(4))
        assert (y - x).abs().max() > 1e-3
    channel = avade.create("flow", "affine-coupling", in_shape=(4, 8, 8), mask="channel", net="reference", hidden=8,
                           blocks=1)
    _, logdet = channel(torch.randn(4, 4, 8, 8))
    assert 0 < logdet.abs().max() < 2 * 8 * 8  # 2 transformed channels, |log s| < 1 each


def test_default_net_is_unchanged() -> None:
    flow = avade.create("flow", "realnvp", in_shape=(3, 8, 8), hidden=8, blocks=1)
    assert flow.cfg.net == "resnet"
    assert not any(isinstance(m, ReferenceST) for m in flow.modules())


def test_reference_flow_stays_invertible_through_adam_steps() -> None:
    flow = avade.create("flow", "realnvp", in_shape=(3, 8, 8), scales=2, hidden=8, blocks=1, net="reference").train()
    opt = torch.optim.Adam([p for p in flow.parameters() if p.requires_grad], lr=1e-2)
    bounds = []
    for _ in range(5):
        x = torch.randn(8, 3, 8, 8)
        y, logdet = flow(x)
        loss = 0.5 * y.square().flatten(1).sum(1).mean() - logdet.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        bounds.append([float(c.scale_bound) for c in _couplings(flow)])
        with torch.no_grad():  # the updated flow, in training mode (batch statistics both ways)
            torch.testing.assert_close(flow.inverse(flow(x)[0]), x, rtol=0, atol=1e-9)
    assert bounds[-1][0] != 0.0  # the checkerboard bounds leave 0 and learn a scale
    flow.eval()
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        y, _ = flow(x)
        torch.testing.assert_close(flow.inverse(y), x, rtol=0, atol=1e-9)


def test_reference_options_are_checked() -> None:
    with pytest.raises(avade.ConfigError, match="blocks"):
        avade.create("flow", "affine-coupling", in_shape=(3, 4, 4), net="reference", blocks=0)
    with pytest.raises(avade.ConfigError, match="logscale_factor"):
        avade.create("flow", "affine-coupling", in_shape=(3, 4, 4), net="reference", logscale_factor=3.0)
    with pytest.raises(avade.ConfigError, match="net"):
        avade.create("flow", "realnvp", in_shape=(3, 4, 4), net="conv")


@pytest.mark.parametrize(("scales", "final_layers", "checkerboard_couplings"), [
    (1, None, [3]), (1, 4, [4]), (2, None, [3, 3]), (2, 4, [3, 4]), (3, 4, [3, 3, 4])])
def test_final_layers_sets_the_checkerboard_couplings_of_the_last_scale_alone(
        scales: int, final_layers: int | None, checkerboard_couplings: list[int]) -> None:
    # The Real-NVP reference ends with a fourth checkerboard coupling (its coupling_3) at its last scale.
    options = {} if final_layers is None else {"final_layers": final_layers}
    flow = avade.create("flow", "realnvp", in_shape=(3, 16, 16), scales=scales, layers=3, hidden=4, blocks=1,
                        **options)
    couplings = _couplings(flow)
    per_scale: dict[int, int] = {}
    for c in couplings:
        if c.checker:
            per_scale[c.in_shape[1]] = per_scale.get(c.in_shape[1], 0) + 1
    assert [per_scale[16 // 2**k] for k in range(scales)] == checkerboard_couplings
    last = [c for c in couplings if c.checker and c.in_shape[1] == 16 // 2 ** (scales - 1)]
    assert [c.reverse for c in last] == [i % 2 == 1 for i in range(len(last))], "masks alternate"
    assert sum(not c.checker for c in couplings) == 3 * (scales - 1)
