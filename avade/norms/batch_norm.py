"""Batch normalization after a layer."""

from __future__ import annotations

import torch
from torch import nn

from avade.norms.configs import BatchNormConfig


class BatchNormed(nn.Module):
    """``BN(layer(x))`` over channels (2d for conv outputs, 1d for linear)."""

    def __init__(self, cfg: BatchNormConfig, *, layer: nn.Conv2d | nn.Linear, num_classes: int | None = None) -> None:
        super().__init__()
        self.layer = layer
        out = layer.weight.shape[0]
        self.norm = nn.BatchNorm2d(out, momentum=cfg.momentum) if isinstance(layer, nn.Conv2d) else \
            nn.BatchNorm1d(out, momentum=cfg.momentum)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``BN(layer(x))``; ``y`` is ignored."""
        return self.norm(self.layer(x))
