"""The residual discriminator of the paper's Table 6a ("rd")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from avade.discriminators.blocks import DiscriminatorBlock
from avade.discriminators.configs import ResNetDiscriminatorConfig
from avade.discriminators.projection import ProjectionHead
from avade.discriminators.shapes import check_in_shape, check_labels
from avade.errors import ConfigError, DataError
from avade.nn import normed


class ResNetDiscriminator(nn.Module):
    """conv 3x3 -> residual blocks -> ReLU -> global average pooling -> dense 1 (+ projection).

    Global pooling makes it resolution-agnostic (any size with at least one pixel after the
    downsamplings); ReLU throughout, as in the paper's residual discriminator.
    """

    def __init__(self, cfg: ResNetDiscriminatorConfig, *, in_shape: tuple[int, int, int],
                 num_classes: int | None = None) -> None:
        super().__init__()
        self.in_shape = check_in_shape(in_shape, "resnet")
        c, h, w = self.in_shape
        downs = len(cfg.channels) - 1
        if (h >> downs) < 1 or (w >> downs) < 1:
            raise ConfigError(f"images of {h}x{w} are too small for {downs} downsampling blocks; "
                              "use fewer entries in channels", path="discriminator.resnet.channels")
        self.num_classes = num_classes
        self.stem = normed(nn.Conv2d(c, cfg.stem, 3, padding=1), cfg.norm)
        blocks = []
        prev = cfg.stem
        for i, ch in enumerate(cfg.channels):
            blocks.append(DiscriminatorBlock(prev, ch, down=i > 0, norm=cfg.norm))
            prev = ch
        self.blocks = nn.ModuleList(blocks)
        self.head = ProjectionHead(prev, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Globally average-pooled features ``[B, channels[-1]]``."""
        if x.dim() != 4 or x.shape[1] != self.in_shape[0]:
            raise DataError(f"discriminator 'resnet' expects images [B, {self.in_shape[0]}, H, W], "
                            f"got {list(x.shape)}")
        h = self.stem(x)
        for block in self.blocks:
            h = block(h)
        return F.relu(h).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Scores ``[B]`` (logits); class-conditional through projection when ``y`` is given."""
        h = self.features(x)
        if y is not None and self.num_classes:
            y = check_labels(y, x.shape[0], self.num_classes, "resnet")
        return self.head(h, y)
