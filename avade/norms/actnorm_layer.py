"""Activation normalization after a layer (Glow's actnorm, used as a plain normalization)."""

from __future__ import annotations

import attrs
import torch
from torch import nn

from avade.norms._init_flag import InitFlag


@attrs.define
class ActNormLayerConfig:
    """``scale``: the output standard deviation the data-dependent init aims for."""

    scale: float = 1.0


class ActNormed(nn.Module):
    """``(layer(x) + b) * s`` per channel, with b and s initialised from the first training batch."""

    def __init__(self, cfg: ActNormLayerConfig, *, layer: nn.Module, num_classes: int | None = None) -> None:
        super().__init__()
        self.layer = layer
        out = layer.weight.shape[0]
        self.bias = nn.Parameter(torch.zeros(out))
        self.log_scale = nn.Parameter(torch.zeros(out))
        self.target = cfg.scale
        self.initialized = InitFlag(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.layer(x)
        shape = (1, -1) + (1,) * (h.dim() - 2)
        if self.training and not bool(self.initialized):
            with torch.no_grad():
                dims = [d for d in range(h.dim()) if d != 1]
                self.bias.copy_(-h.mean(dims))
                self.log_scale.copy_(torch.log(self.target / (h.std(dims) + 1e-6)))
                self.initialized.set()
        return (h + self.bias.view(shape)) * self.log_scale.exp().view(shape)
