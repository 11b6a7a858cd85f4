"""A plain strided conv encoder and its mirror decoder (kinds ``encoder``/``decoder``, name ``conv``)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from avade.nets.base import Decoder, Encoder
from avade.nets.blocks import Act, Chain, Upsample, ZeroScaled, conv
from avade.nets.configs import ConvDecoderConfig, ConvEncoderConfig
from avade.nets.configs import _check_channels as _check_channels
from avade.nets.shapes import Shape, as_shape, halving_stages, upsample_factor


class ConvEncoder(Encoder):
    """``h_0 = conv3x3(x)``, ``h_i = conv3x3_stride2(elu(h_{i-1}))``: one feature map per stage."""

    def __init__(self, cfg: ConvEncoderConfig, *, in_shape: Sequence[int],
                 num_classes: int | None = None) -> None:
        super().__init__()
        in_shape = as_shape(in_shape, "encoder 'conv': in_shape")
        self.stage_shapes = self.compute_stage_shapes(cfg, in_shape)
        self.in_shape, self.who = in_shape, "encoder 'conv'"
        c_prev = in_shape[0]
        layers = []
        for i, c in enumerate(cfg.channels):
            layer = conv(c_prev, c, 3, stride=1 if i == 0 else 2, norm=cfg.norm, num_classes=num_classes)
            layers.append(layer if i == 0 else Chain(Act(), layer))
            c_prev = c
        self.stages = nn.ModuleList(layers)

    @staticmethod
    def compute_stage_shapes(cfg: ConvEncoderConfig, in_shape: Sequence[int]) -> list[Shape]:
        """The stage layout for ``in_shape`` without building the network (ConfigError if indivisible)."""
        return halving_stages(cfg.channels, in_shape, "encoder 'conv'")


class ConvDecoder(Decoder):
    """Mirror of :class:`ConvEncoder`: per stage ``conv3x3(upsample(elu(d)))``; head ``conv3x3(elu(d))``.

    Nearest upsampling followed by a conv stands in for the transposed conv: same receptive field, no
    checkerboard artifacts, and it works with every norm (conditional weight norm included).
    """

    def __init__(self, cfg: ConvDecoderConfig, *, stage_shapes: Sequence[Sequence[int]],
                 out_shape: Sequence[int], num_classes: int | None = None) -> None:
        super().__init__(stage_shapes, out_shape, "decoder 'conv'")  # type: ignore[arg-type]
        shapes = self.stage_shapes
        for i, (c, _, _) in enumerate(shapes):
            lower = shapes[max(i - 1, 0)]
            factor = upsample_factor(lower, shapes[i], "decoder 'conv'") if i else 1
            self.stages.append(Chain(Act(), Upsample(factor),
                                   conv(c, lower[0], 3, norm=cfg.norm, num_classes=num_classes)))
        head = conv(shapes[0][0], self.out_shape[0], 3, norm=cfg.norm, num_classes=num_classes)
        self.out = ZeroScaled(head, self.out_shape[0]) if cfg.init_zero_head else head
