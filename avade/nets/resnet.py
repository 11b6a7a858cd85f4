"""The residual generator of AV-ADE Table 6b (kinds ``encoder``/``decoder``, name ``resnet``).

Encoder: conv3x3 ``stem`` -> block ``channels[0]`` -> block down ``channels[1]`` -> ... ; the output of
every stage is one ``h_i``. Decoder: the mirror, up ``channels[-1]`` -> ... -> block ``channels[0]`` ->
conv3x3 to the output channels. With the defaults at 32x32: stages (32,32,32), (64,16,16), (128,8,8),
(256,4,4), as in the paper. The latent groups (the stochastic half of an "IAF block") are inserted
between decoder stages by the posterior (:mod:`avade.posteriors`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from avade.nets.base import Decoder, Encoder
from avade.nets.blocks import Chain, ResBlock, ZeroScaled, conv
from avade.nets.configs import ResNetDecoderConfig, ResNetEncoderConfig
from avade.nets.configs import _residual_scale as _residual_scale
from avade.nets.shapes import Shape, as_shape, halving_stages, upsample_factor


class ResNetEncoder(Encoder):
    """Bottom-up residual pass; ``forward(x, y)`` returns the output of each stage, finest first."""

    def __init__(self, cfg: ResNetEncoderConfig, *, in_shape: Sequence[int],
                 num_classes: int | None = None) -> None:
        super().__init__()
        in_shape = as_shape(in_shape, "encoder 'resnet': in_shape")
        self.stage_shapes = self.compute_stage_shapes(cfg, in_shape)
        self.in_shape, self.who = in_shape, "encoder 'resnet'"
        opts: dict[str, Any] = {"norm": cfg.norm, "num_classes": num_classes}
        self.stem = conv(in_shape[0], cfg.stem, 3, **opts)
        block_opts: dict[str, Any] = {**opts, "scale": cfg.residual_scale}
        stages = []
        c_prev = cfg.stem
        for i, c in enumerate(cfg.channels):
            blocks = [ResBlock(c_prev, c, resample="down" if i else "none", **block_opts)]
            blocks += [ResBlock(c, c, **block_opts) for _ in range(cfg.blocks_per_stage - 1)]
            stages.append(Chain(*blocks))
            c_prev = c
        self.stages = torch.nn.ModuleList(stages)

    @staticmethod
    def compute_stage_shapes(cfg: ResNetEncoderConfig, in_shape: Sequence[int]) -> list[Shape]:
        """The stage layout for ``in_shape`` without building the network (ConfigError if indivisible)."""
        return halving_stages(cfg.channels, in_shape, "encoder 'resnet'")


class ResNetDecoder(Decoder):
    """Top-down residual pass: stage ``i > 0`` = ``blocks_per_stage - 1`` blocks, then a block up to stage
    ``i-1``; stage 0 = ``blocks_per_stage`` blocks; head = conv3x3(elu(d)) to the output channels.

    The layout comes from ``stage_shapes`` (normally the encoder's), so any resolution the encoder accepts
    works here too. Reading of Table 6b (one block per row, as in the encoder column): "IAF block up 256"
    is the 4x4 stage's block, which takes that stage's 256 channels (where its latents live, as in the
    bidirectional IAF-VAE, whose top-down blocks mirror the bottom-up ones) up to 8x8 and 128 channels;
    "up 128" and "up 64" likewise; "IAF block 32" works at 32x32. ``blocks_per_stage = 2`` adds a block
    at each stage's own resolution and width before its up block.
    """

    def __init__(self, cfg: ResNetDecoderConfig, *, stage_shapes: Sequence[Sequence[int]],
                 out_shape: Sequence[int], num_classes: int | None = None) -> None:
        super().__init__(stage_shapes, out_shape, "decoder 'resnet'")  # type: ignore[arg-type]
        opts: dict[str, Any] = {"norm": cfg.norm, "num_classes": num_classes}
        block_opts: dict[str, Any] = {**opts, "scale": cfg.residual_scale}
        shapes = self.stage_shapes
        for i, (c, _, _) in enumerate(shapes):
            blocks = [ResBlock(c, c, **block_opts) for _ in range(cfg.blocks_per_stage - (1 if i else 0))]
            if i:
                factor = upsample_factor(shapes[i - 1], shapes[i], "decoder 'resnet'")
                blocks.append(ResBlock(c, shapes[i - 1][0], resample="up", factor=factor, **block_opts))
            self.stages.append(Chain(*blocks))
        head = conv(shapes[0][0], self.out_shape[0], 3, **opts)
        self.out = ZeroScaled(head, self.out_shape[0]) if cfg.init_zero_head else head
