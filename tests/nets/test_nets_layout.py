"""Encoder/decoder layouts, resolutions, norms, class conditioning and configuration errors."""

from __future__ import annotations

import pytest
import torch

import avade
from avade.errors import ConfigError
from avade.nets.blocks import ResBlock
from avade.nets.resnet import ResNetEncoder, ResNetEncoderConfig
from avade.norms.cwn import ConditionalWeightNorm

TINY = {"conv": {"channels": (2, 3, 4, 4)}, "resnet": {"channels": (2, 3, 4, 4), "stem": 2}}


def test_resnet_default_layout_is_the_papers() -> None:
    shapes = ResNetEncoder.compute_stage_shapes(ResNetEncoderConfig(), (3, 32, 32))
    assert shapes == [(32, 32, 32), (64, 16, 16), (128, 8, 8), (256, 4, 4)]


def test_resnet_default_build_matches_layout() -> None:
    torch.manual_seed(0)
    enc = avade.create("encoder", "resnet", in_shape=(3, 32, 32))
    hs = enc(torch.randn(1, 3, 32, 32))
    assert [tuple(h.shape[1:]) for h in hs] == enc.stage_shapes
    assert enc.stem.layer.weight.shape == (16, 3, 3, 3)  # conv3x3 16 stem (Table 6b)


@pytest.mark.parametrize("net", ["conv", "resnet"])
@pytest.mark.parametrize("size", [32, 48, 64, 128])
def test_resolution_agnostic(net: str, size: int) -> None:
    torch.manual_seed(0)
    enc = avade.create("encoder", net, in_shape=(3, size, size), **TINY[net])
    assert enc.stage_shapes[-1][1:] == (size // 8, size // 8)
    dec = avade.create("decoder", net, stage_shapes=enc.stage_shapes, out_shape=(3, size, size))
    hs = enc(torch.randn(1, 3, size, size))
    assert [tuple(h.shape[1:]) for h in hs] == enc.stage_shapes
    d = dec.initial_state(1)
    for i in reversed(range(len(enc.stage_shapes))):
        d = dec.forward_stage(i, d)
    assert dec.head(d).shape == (1, 3, size, size)


@pytest.mark.parametrize("net", ["conv", "resnet"])
def test_an_encoder_refuses_inputs_of_another_shape(net: str) -> None:
    # another size ran into feature maps that are not its stage_shapes, failing later elsewhere
    from avade.errors import DataError

    enc = avade.create("encoder", net, in_shape=(3, 16, 16), **TINY[net])
    for bad in (torch.randn(2, 3, 32, 32), torch.randn(2, 1, 16, 16), torch.randn(3, 16, 16)):
        with pytest.raises(DataError, match=rf"encoder '{net}' was built for inputs \[B, 3, 16, 16\], got"):
            enc(bad)
    assert [tuple(h.shape[1:]) for h in enc(torch.randn(2, 3, 16, 16))] == enc.stage_shapes


def test_non_square_and_blocks_per_stage() -> None:
    enc = avade.create("encoder", "resnet", in_shape=(1, 8, 16), channels=(2, 3), stem=2, blocks_per_stage=2)
    assert enc.stage_shapes == [(2, 8, 16), (3, 4, 8)]
    dec = avade.create("decoder", "resnet", stage_shapes=enc.stage_shapes, out_shape=(5, 8, 16),
                       blocks_per_stage=3)
    d = dec.forward_stage(0, dec.forward_stage(1, dec.initial_state(2)))
    assert dec.head(d).shape == (2, 5, 8, 16)
    assert len(dec.stages[0].layers) == 3 and len(dec.stages[1].layers) == 3  # 2 blocks + 1 up block


@pytest.mark.parametrize("norm", ["none", "weight-norm", "cwn", "batch-norm", "actnorm"])
@pytest.mark.parametrize("net", ["conv", "resnet"])
def test_every_norm(net: str, norm: str) -> None:
    torch.manual_seed(0)
    enc = avade.create("encoder", net, in_shape=(3, 8, 8), norm=norm, **TINY[net] | {"channels": (2, 3)})
    dec = avade.create("decoder", net, stage_shapes=enc.stage_shapes, out_shape=(3, 8, 8), norm=norm)
    hs = enc(torch.randn(4, 3, 8, 8))
    d = dec.forward_stage(0, dec.forward_stage(1, dec.initial_state(4) + hs[-1]))
    out = dec.head(d)
    assert out.shape == (4, 3, 8, 8) and torch.isfinite(out).all()


def test_init_zero_head() -> None:
    dec = avade.create("decoder", "resnet", stage_shapes=[(2, 4, 4)], out_shape=(3, 4, 4),
                       init_zero_head=True)
    out = dec.head(torch.randn(2, 2, 4, 4))
    assert out.shape == (2, 3, 4, 4) and (out == 0).all()


@pytest.mark.parametrize("net", ["conv", "resnet"])
def test_class_conditional_outputs_depend_on_labels(net: str) -> None:
    torch.manual_seed(0)
    enc = avade.create("encoder", net, in_shape=(3, 8, 8), norm="cwn", num_classes=10, **TINY[net]
                       | {"channels": (2, 3)})
    dec = avade.create("decoder", net, stage_shapes=enc.stage_shapes, out_shape=(3, 8, 8), norm="cwn",
                       num_classes=10)
    cwn = [m for m in (*enc.modules(), *dec.modules()) if isinstance(m, ConditionalWeightNorm)]
    assert cwn, "norm='cwn' must reach the layers"
    # The class gains/biases start as the identity (1, 0): give the classes something to tell apart.
    for m in cwn:
        m.class_gain.weight.data.normal_(1.0, 0.3)
        m.class_bias.weight.data.normal_(0.0, 0.3)

    def decode(y: torch.Tensor) -> torch.Tensor:
        d = dec.initial_state(2)
        for i in reversed(range(len(dec.stage_shapes))):
            d = dec.forward_stage(i, d, y)
        return dec.head(d, y)

    y0, y1 = torch.tensor([0, 0]), torch.tensor([1, 1])
    assert not torch.allclose(decode(y0), decode(y1))
    torch.testing.assert_close(decode(y0), decode(y0))
    x = torch.randn(1, 3, 8, 8).expand(2, -1, -1, -1)
    h = enc(x, torch.tensor([3, 4]))[-1]
    assert not torch.allclose(h[0], h[1])


@pytest.mark.parametrize("net,in_shape,opts", [
    ("resnet", (3, 20, 20), {}),                       # 20 is not divisible by 2**3
    ("resnet", (3, 32, 36), {}),
    ("conv", (3, 18, 18), {"channels": (4, 8, 8)}),    # 18 is not divisible by 2**2
])
def test_indivisible_resolution_is_a_config_error(net: str, in_shape: tuple, opts: dict) -> None:
    with pytest.raises(ConfigError, match="not divisible by"):
        avade.create("encoder", net, in_shape=in_shape, **opts)


def test_other_config_errors() -> None:
    with pytest.raises(ConfigError, match="in_shape"):
        avade.create("encoder", "resnet", in_shape=(3, 32))
    with pytest.raises(ConfigError, match="channels"):
        avade.create("encoder", "conv", in_shape=(3, 8, 8), channels=())
    with pytest.raises(ConfigError, match="blocks_per_stage"):
        avade.create("decoder", "resnet", stage_shapes=[(2, 4, 4)], out_shape=(3, 4, 4), blocks_per_stage=0)
    with pytest.raises(ConfigError, match="integer factor"):
        avade.create("decoder", "resnet", stage_shapes=[(2, 16, 16), (2, 6, 6)], out_shape=(3, 16, 16))
    with pytest.raises(ConfigError, match="output resolution"):
        avade.create("decoder", "conv", stage_shapes=[(2, 16, 16)], out_shape=(3, 32, 32))
    with pytest.raises(ConfigError, match="stage_shapes"):
        avade.create("decoder", "conv", stage_shapes=[], out_shape=(3, 32, 32))


def test_residual_scale_multiplies_every_block_branch() -> None:
    """``residual_scale`` s: each block is ``skip(x) + s * branch(x)`` (openai/iaf: 0.1), in both nets."""
    torch.manual_seed(0)
    enc = {s: avade.create("encoder", "resnet", in_shape=(3, 16, 16), channels=[4, 8], stem=4, residual_scale=s)
           for s in (1.0, 0.5, 0.1)}
    for net in enc.values():  # the same weights
        net.load_state_dict(enc[1.0].state_dict())
    second = {s: [m for m in net.modules() if isinstance(m, ResBlock)][1] for s, net in enc.items()}
    assert second[0.1].scale == 0.1 and second[0.1].skip is not None  # 4 -> 8 channels, down: skip conv + branch
    h = torch.randn(2, 4, 16, 16)
    with torch.no_grad():
        full, half, tenth = (second[s](h) for s in (1.0, 0.5, 0.1))
        branch = 2 * (full - half)  # skip + s * branch at s = 1 and 0.5
        torch.testing.assert_close(tenth, full - branch + 0.1 * branch)
        x = torch.randn(2, 3, 16, 16)
        assert not torch.allclose(enc[0.1](x)[-1], enc[1.0](x)[-1])
    dec = avade.create("decoder", "resnet", stage_shapes=enc[1.0].stage_shapes, out_shape=(3, 16, 16),
                       residual_scale=0.1)
    assert all(m.scale == 0.1 for m in dec.modules() if isinstance(m, ResBlock))
    for bad in (0.0, -1.0):  # 0 would leave every branch without a gradient for good
        with pytest.raises(ConfigError, match="residual_scale"):
            avade.create("decoder", "resnet", stage_shapes=enc[1.0].stage_shapes, out_shape=(3, 16, 16),
                         residual_scale=bad)
