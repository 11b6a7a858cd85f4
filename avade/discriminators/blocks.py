"""Residual blocks of the residual discriminator (pre-activation, optional 2x average-pool down)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from avade.nn import normed


class DiscriminatorBlock(nn.Module):
    """``shortcut(x) + conv(relu(conv(relu(x))))``, both paths average-pooled 2x when ``down``.

    The shortcut is a 1x1 conv only where the channels change (identity otherwise), so the block
    adds no parameters where it is not needed.
    """

    def __init__(self, cin: int, cout: int, *, down: bool, norm: str = "none") -> None:
        super().__init__()
        self.down = down
        self.conv1 = normed(nn.Conv2d(cin, cout, 3, padding=1), norm)
        self.conv2 = normed(nn.Conv2d(cout, cout, 3, padding=1), norm)
        self.skip = normed(nn.Conv2d(cin, cout, 1), norm) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The residual sum for ``x`` ``[B, cin, H, W]``: ``[B, cout, H, W]``, or half the size with ``down``."""
        h = self.conv2(F.relu(self.conv1(F.relu(x))))
        s = x if self.skip is None else self.skip(x)
        if self.down:
            h, s = F.avg_pool2d(h, 2), F.avg_pool2d(s, 2)
        return h + s
