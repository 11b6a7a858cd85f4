"""The identity normalization."""

from __future__ import annotations

import torch
from torch import nn

from avade.norms.configs import PlainConfig


class Plain(nn.Module):
    """The wrapped layer, unchanged."""

    def __init__(self, cfg: PlainConfig, *, layer: nn.Conv2d | nn.Linear, num_classes: int | None = None) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``layer(x)``; ``y`` is ignored."""
        return self.layer(x)
