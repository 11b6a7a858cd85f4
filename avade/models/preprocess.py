"""Exact bookkeeping between 8-bit images and the space the density lives in.

x (uint8) -> u = x + U[0, 1) (uniform dequantization) -> v = u / 256 in [0, 1)
  -> with a flow: y = logit(alpha + (1 - 2 alpha) v)   (Real-NVP's preprocessing)
  -> without:     y = 2 v - 1                          (pixel space in [-1, 1))
Every map's log|det| is returned, so -log p(u) / (D ln 2) is an upper bound on the bits/dim of x.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class Preprocess(nn.Module):
    """Dequantize and map 8-bit images to model space (and back), tracking log-determinants."""

    def __init__(self, logit_alpha: float = 0.05, logit: bool = True) -> None:
        super().__init__()
        self.alpha = float(logit_alpha)
        self.logit = bool(logit) and self.alpha > 0

    def dequantize(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 images -> u = x + U[0, 1) as float32."""
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=torch.float32)
        return x.to(torch.float32) + noise

    def forward(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """u in [0, 256) -> (y, log|det dy/du|) per sample."""
        dims = u[0].numel()
        v = u / 256.0
        logdet = torch.full((u.shape[0],), -dims * math.log(256.0), device=u.device, dtype=u.dtype)
        if self.logit:
            w = self.alpha + (1.0 - 2.0 * self.alpha) * v
            y = torch.log(w) - torch.log1p(-w)
            logdet = logdet + dims * math.log(1.0 - 2.0 * self.alpha)
            logdet = logdet - (torch.log(w) + torch.log1p(-w)).flatten(1).sum(1)
        else:
            y = 2.0 * v - 1.0
            logdet = logdet + dims * math.log(2.0)
        return y, logdet

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """Model space -> u in [0, 256) (not clamped: differentiable for the discriminator)."""
        if self.logit:
            v = (torch.sigmoid(y) - self.alpha) / (1.0 - 2.0 * self.alpha)
        else:
            v = (y + 1.0) / 2.0
        return v * 256.0


def to_uint8(u: torch.Tensor) -> torch.Tensor:
    """u in [0, 256) -> 8-bit image (floor, clamped)."""
    return u.detach().floor().clamp(0, 255).to(torch.uint8)


def to_unit(u: torch.Tensor) -> torch.Tensor:
    """u in [0, 256) -> [-1, 1), the range the discriminator sees for real and generated images."""
    return u / 128.0 - 1.0
