"""Space-to-depth squeeze: each 2x2 spatial block becomes 4 channels (Real-NVP, Glow)."""

from __future__ import annotations

import torch

from avade.errors import ConfigError
from avade.flows.base import Flow, Shape, check_in_shape
from avade.flows.configs import SqueezeConfig


def squeeze2d(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W] -> [B, 4C, H/2, W/2]``; channel ``4c + 2dy + dx`` holds ``x[c, 2i+dy, 2j+dx]``."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, c * 4, h // 2, w // 2)


def unsqueeze2d(y: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`squeeze2d`: ``[B, 4C, h, w] -> [B, C, 2h, 2w]``."""
    b, c4, h, w = y.shape
    y = y.view(b, c4 // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return y.reshape(b, c4 // 4, h * 2, w * 2)


class Squeeze(Flow):
    """``(C, H, W) -> (4C, H/2, W/2)``, a permutation, so ``logdet = 0``."""

    def __init__(self, cfg: SqueezeConfig | None = None, *, in_shape: Shape) -> None:
        c, h, w = check_in_shape(in_shape, "squeeze")
        if h % 2 or w % 2:
            raise ConfigError(f"squeeze needs an even height and width, got in_shape {tuple(in_shape)}",
                              path="in_shape")
        super().__init__((c, h, w), (4 * c, h // 2, w // 2))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(squeeze2d(x), 0)``: a reshape, volume-preserving."""
        return squeeze2d(x), x.new_zeros(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """``unsqueeze2d(y)``."""
        return unsqueeze2d(y)


class Unsqueeze(Flow):
    """The inverse of :class:`Squeeze` as a flow: ``in_shape`` is the squeezed ``(4C, H/2, W/2)``."""

    def __init__(self, in_shape: Shape) -> None:
        c4, h, w = in_shape
        if c4 % 4:
            raise ValueError(f"unsqueeze needs a channel count divisible by 4, got {in_shape}")
        super().__init__(tuple(in_shape), (c4 // 4, h * 2, w * 2))  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(unsqueeze2d(x), 0)``: a reshape, volume-preserving."""
        return unsqueeze2d(x), x.new_zeros(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """``squeeze2d(y)``."""
        return squeeze2d(y)
