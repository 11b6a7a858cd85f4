"""A spectral-norm residual discriminator (Miyato et al., 2018), projection-conditional.

Every conv, the dense output and the class embedding are spectrally normalized with
``torch.nn.utils.parametrizations.spectral_norm``, which bounds the discriminator's Lipschitz
constant without a gradient penalty (one can still be added on top).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import attrs
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from avade.discriminators.projection import ProjectionHead
from avade.discriminators.shapes import check_labels, positive_ints
from avade.errors import ConfigError, DataError
from avade.schema import ge


def _down(inst: SNGANDiscriminatorConfig, attr: attrs.Attribute, value: tuple[bool, ...]) -> None:
    if len(value) != len(inst.channels):
        raise ConfigError(f"expected one entry per block ({len(inst.channels)}), got {len(value)}",
                          path=attr.name)


@attrs.define
class SNGANDiscriminatorConfig:
    """Settings (defaults: the SNGAN ResNet discriminator for 32x32 images).

    ``channels``: one residual block each. ``down``: whether each block halves the resolution.
    ``pool``: global ``sum`` pooling (as in SNGAN) or ``mean`` (scores comparable across
    resolutions). ``power_iterations``: power-method steps per forward for the spectral norm.
    """

    channels: tuple[int, ...] = attrs.field(default=(128, 128, 128, 128), validator=positive_ints,
                                            metadata={"help": "output channels of each residual block"})
    down: tuple[bool, ...] = attrs.field(default=(True, True, False, False), validator=_down,
                                         metadata={"help": "whether each block halves the resolution (one per block)"})
    pool: Literal["sum", "mean"] = attrs.field(
        default="sum", metadata={"help": "global pooling: sum (SNGAN) or mean (scores comparable across resolutions)"})
    power_iterations: int = attrs.field(default=1, validator=ge(1),
                                        metadata={"help": "power-method steps per forward of the spectral norm"})


class SNBlock(nn.Module):
    """Residual block with spectrally normalized convs; ``first`` skips the leading ReLU on the image."""

    def __init__(self, cin: int, cout: int, *, down: bool, first: bool,
                 sn: Callable[[nn.Module], nn.Module]) -> None:
        super().__init__()
        self.down, self.first = down, first
        self.conv1 = sn(nn.Conv2d(cin, cout, 3, padding=1))
        self.conv2 = sn(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = sn(nn.Conv2d(cin, cout, 1)) if (cin != cout or down) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x if self.first else F.relu(x))
        h = self.conv2(F.relu(h))
        # Average pooling and a 1x1 conv commute, so the shortcut pools first (cheaper).
        s = F.avg_pool2d(x, 2) if self.down else x
        s = self.skip(s) if self.skip is not None else s
        return (F.avg_pool2d(h, 2) if self.down else h) + s


class SNGANDiscriminator(nn.Module):
    """Residual blocks -> ReLU -> global pooling -> dense 1 (+ projection), all spectrally normalized."""

    def __init__(self, cfg: SNGANDiscriminatorConfig, *, in_shape: tuple[int, int, int],
                 num_classes: int | None = None) -> None:
        super().__init__()
        shape = tuple(int(s) for s in in_shape) if isinstance(in_shape, tuple | list) else ()
        if len(shape) != 3 or min(shape) < 1:
            raise ConfigError(f"in_shape must be (C, H, W) of positive ints, got {in_shape!r}",
                              path="discriminator.sngan")
        self.in_shape: tuple[int, int, int] = shape  # type: ignore[assignment]
        c, h, w = shape
        downs = sum(cfg.down)
        if (h >> downs) < 1 or (w >> downs) < 1:
            raise ConfigError(f"images of {h}x{w} are too small for {downs} downsampling blocks",
                              path="discriminator.sngan.down")

        def sn(module: nn.Module) -> nn.Module:
            return spectral_norm(module, n_power_iterations=cfg.power_iterations)

        blocks = []
        prev = c
        for i, (ch, down) in enumerate(zip(cfg.channels, cfg.down, strict=True)):
            blocks.append(SNBlock(prev, ch, down=down, first=i == 0, sn=sn))
            prev = ch
        self.blocks = nn.ModuleList(blocks)
        self.pool = cfg.pool
        self.num_classes = num_classes
        self.head = ProjectionHead(prev, num_classes, wrap=sn)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Scores ``[B]`` (logits); class-conditional through projection when ``y`` is given."""
        if x.dim() != 4 or x.shape[1] != self.in_shape[0]:
            raise DataError(f"discriminator 'sngan' expects images [B, {self.in_shape[0]}, H, W], "
                            f"got {list(x.shape)}")
        h = x
        for block in self.blocks:
            h = block(h)
        h = F.relu(h)
        h = h.sum(dim=(2, 3)) if self.pool == "sum" else h.mean(dim=(2, 3))
        if y is not None and self.num_classes:
            y = check_labels(y, x.shape[0], self.num_classes, "sngan")
        return self.head(h, y)
