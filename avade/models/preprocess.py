"""Exact bookkeeping between 8-bit images and the space the density lives in.

x (uint8) -> u = x + U[0, 1) (uniform dequantization) -> v = u / 256 in [0, 1)
  -> with a flow: y = logit(alpha + (1 - 2 alpha) v)   (Real-NVP's preprocessing)
  -> without:     y = 2 v - 1                          (pixel space in [-1, 1))
Every map's log|det| is returned, so -log p(u) / (D ln 2) is an upper bound on the bits/dim of x.

With ``bits`` b < 8 (``data.n_bits``, Glow's ``n_bits_x``) the data are the 2^b levels
``x >> (8 - b)``: each is a bin of width k = 2^(8 - b) of u, u = k (x >> (8 - b)) + k U[0, 1), and
v = u / 256 = (level + U) / 2^b, so the log-determinant counts -D log 2^b and the bound is on the
bits/dim of the b-bit data (Glow's accounting). u keeps its [0, 256) range at every b.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class Preprocess(nn.Module):
    """Dequantize and map 8-bit images to model space (and back), tracking log-determinants."""

    def __init__(self, logit_alpha: float = 0.05, logit: bool = True, bits: int = 8) -> None:
        super().__init__()
        if not 1 <= int(bits) <= 8:
            raise ValueError(f"bits must be in 1..8, got {bits}")
        self.alpha = float(logit_alpha)
        self.logit = bool(logit) and self.alpha > 0
        self.bits = int(bits)
        self.bins = 2 ** self.bits  # the levels the density is over
        self.bin_width = 2 ** (8 - self.bits)  # of u, in 8-bit units

    def levels(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 images -> their level in ``0 .. bins - 1`` (uint8; ``x`` itself at 8 bits)."""
        return x if self.bits == 8 else torch.bitwise_right_shift(x, 8 - self.bits)

    def dequantize(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 images -> u = x + U[0, 1) as float32 (at b bits: k (x >> (8 - b)) + k U[0, 1))."""
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=torch.float32)
        level = self.levels(x).to(torch.float32)
        # level + noise rounds to level + 1 in float32 when noise is within half an ulp of 1 (for
        # x = 255, p ~ 8e-6 per pixel): u would leave its bin (x = 255: u = 256, outside [0, 256), and
        # logit(alpha + (1 - 2 alpha) v) = inf for alpha < 6e-8). Round down instead: the largest float
        # below level + 1 (scaling by a power of two below is exact).
        u = torch.minimum(level + noise, torch.nextafter(level + 1.0, level))
        return u if self.bits == 8 else u * self.bin_width

    def centres(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 images -> u at the centre of each pixel's bin (float32): :meth:`dequantize` without its noise."""
        return (self.levels(x).to(torch.float32) + 0.5) * self.bin_width

    def to_uint8(self, u: torch.Tensor) -> torch.Tensor:
        """u in [0, 256) -> image: the bin's level, shown as its lowest 8-bit value (Glow's postprocess)."""
        if self.bits == 8:
            return to_uint8(u)
        k = self.bin_width
        return (u.detach() / k).floor().clamp(0, self.bins - 1).mul(k).to(torch.uint8)

    def forward(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """u in [0, 256) -> (y, log|det dy/du|) per sample, u measured in bins (width 1 at 8 bits)."""
        dims = u[0].numel()
        v = u / 256.0
        logdet = torch.full((u.shape[0],), -dims * math.log(float(self.bins)), device=u.device, dtype=u.dtype)
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
