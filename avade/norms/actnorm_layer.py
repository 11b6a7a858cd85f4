"""Activation normalization after a layer (Glow's actnorm, used as a plain normalization)."""

from __future__ import annotations

import torch
from torch import nn

from avade.norms._init_flag import InitFlag, check_init_batch
from avade.norms.configs import ActNormLayerConfig


class ActNormed(nn.Module):
    """``(layer(x) + b) * s`` per channel, with b and s initialised from the first training batch so that
    its output has mean 0 and (population) standard deviation ``scale``, as Glow's actnorm."""

    def __init__(self, cfg: ActNormLayerConfig, *, layer: nn.Conv2d | nn.Linear,
                 num_classes: int | None = None) -> None:
        super().__init__()
        self.layer = layer
        out = layer.weight.shape[0]
        self.bias = nn.Parameter(torch.zeros(out))
        self.log_scale = nn.Parameter(torch.zeros(out))
        self.target = cfg.scale
        self.logscale_factor = float(cfg.logscale_factor)
        self.initialized = InitFlag(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The layer's output normalized per channel; the first training batch sets the bias and scale."""
        h = self.layer(x)
        shape = (1, -1) + (1,) * (h.dim() - 2)
        # (not on the meta device, where `avade recipe memory` counts activations: no data to init from)
        if self.training and not h.is_meta and not self.initialized.is_set():
            with torch.no_grad():
                dims = [d for d in range(h.dim()) if d != 1]
                check_init_batch(h, dims, "actnorm", "use another norm than actnorm there")
                self.bias.copy_(-h.mean(dims))
                std = h.std(dims, correction=0)
                self.log_scale.copy_(torch.log(self.target / (std + 1e-6)) / self.logscale_factor)
                self.initialized.set()
        log_s = self.log_scale if self.logscale_factor == 1.0 else self.log_scale * self.logscale_factor
        return (h + self.bias.view(shape)) * log_s.exp().view(shape)
