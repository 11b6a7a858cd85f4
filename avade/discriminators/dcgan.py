"""The plain convolutional discriminator (DCGAN-style; the paper's "simple convolutional" critic)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from avade.discriminators.configs import DCGANDiscriminatorConfig
from avade.discriminators.projection import ProjectionHead
from avade.discriminators.shapes import check_in_shape, check_labels
from avade.errors import ConfigError, DataError
from avade.nn import normed


class DCGANDiscriminator(nn.Module):
    """Strided convs with leaky ReLU, then a dense layer over the flattened final feature map.

    The final spatial size is computed from ``in_shape`` (any resolution with at least one pixel
    left after the downsamplings: 32, 48, 64, 128, ...).
    """

    def __init__(self, cfg: DCGANDiscriminatorConfig, *, in_shape: tuple[int, int, int],
                 num_classes: int | None = None) -> None:
        super().__init__()
        self.in_shape = check_in_shape(in_shape, "dcgan")
        c, h, w = self.in_shape
        depth = len(cfg.channels)
        # A 4x4 conv with stride 2 and padding 1 maps size n to floor(n / 2).
        self.out_h, self.out_w = h >> depth, w >> depth
        if self.out_h < 1 or self.out_w < 1:
            raise ConfigError(f"images of {h}x{w} are too small for {depth} stride-2 layers; "
                              "use fewer entries in channels", path="discriminator.dcgan.channels")
        self.slope = cfg.slope
        self.num_classes = num_classes
        convs: list[nn.Module] = []
        prev = c
        for i, ch in enumerate(cfg.channels):
            conv = nn.Conv2d(prev, ch, kernel_size=4, stride=2, padding=1)
            convs.append(conv if i == 0 else normed(conv, cfg.norm))
            prev = ch
        self.convs = nn.ModuleList(convs)
        self.head = ProjectionHead(prev * self.out_h * self.out_w, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The flattened last feature map, ``[B, F]``."""
        if tuple(x.shape[1:]) != self.in_shape:
            raise DataError(f"discriminator 'dcgan' was built for images of shape {self.in_shape}, "
                            f"got {tuple(x.shape[1:])}; build it with the data's in_shape")
        h = x
        for conv in self.convs:
            h = F.leaky_relu(conv(h), self.slope)
        return h.flatten(1)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Scores ``[B]`` (logits); class-conditional through projection when ``y`` is given."""
        h = self.features(x)
        if y is not None and self.num_classes:
            y = check_labels(y, x.shape[0], self.num_classes, "dcgan")
        return self.head(h, y)
