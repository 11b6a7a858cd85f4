"""Building blocks of the generator networks: normalized convs, a zero-initialised output, residual blocks.

Every conv is built through :func:`avade.nn.normed`, so the recipe's ``norm`` (weight norm, conditional
weight norm, batch norm, ...) applies everywhere and class labels ``y`` reach every layer.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from avade.nn import elu, normed


def conv(c_in: int, c_out: int, kernel: int = 3, *, stride: int = 1, norm: str = "weight-norm",
         num_classes: int | None = None) -> nn.Module:
    """A ``kernel``x``kernel`` conv with 'same' padding wrapped in the norm ``norm`` (``forward(x, y)``)."""
    return normed(nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2), norm, num_classes)


class ZeroScaled(nn.Module):
    """``layer(x, y) * s`` with a per-channel scale ``s`` that starts at zero.

    The output is exactly zero at initialisation whatever the norm (a weight-normed layer cannot simply
    be zeroed: its direction ``v/||v||`` is undefined at ``v = 0``), yet ``s`` receives gradients from
    the first step, after which the wrapped layer does too.
    """

    def __init__(self, layer: nn.Module, channels: int) -> None:
        super().__init__()
        self.layer = layer
        self.scale = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The wrapped layer's output times the learned per-channel scale (zero at init)."""
        return self.layer(x, y) * self.scale.view(1, -1, 1, 1)


Resample = Literal["none", "down", "up"]


class ResBlock(nn.Module):
    """Pre-activation residual block: ``x + conv(elu(conv(elu(x))))``, optionally resampling.

    This is the deterministic part of the "IAF block" of AV-ADE Table 6b (the latent variables live in
    :mod:`avade.posteriors`). ``down`` uses a stride-``factor`` first conv with an average-pooled skip;
    ``up`` upsamples (nearest) before the first conv and on the skip, which avoids the checkerboard
    artifacts of transposed convolutions. A 1x1 conv adapts the skip when channels change. ``scale``
    multiplies the residual branch (openai/iaf's ``input + 0.1 * h`` keeps a deep stack near the identity).
    """

    def __init__(self, c_in: int, c_out: int, *, resample: Resample = "none", factor: int = 2,
                 norm: str = "weight-norm", num_classes: int | None = None, scale: float = 1.0) -> None:
        super().__init__()
        self.resample = resample
        self.scale = float(scale)
        self.factor = factor if resample != "none" else 1
        stride = self.factor if resample == "down" else 1
        self.conv1 = conv(c_in, c_out, 3, stride=stride, norm=norm, num_classes=num_classes)
        self.conv2 = conv(c_out, c_out, 3, norm=norm, num_classes=num_classes)
        self.skip = conv(c_in, c_out, 1, norm=norm, num_classes=num_classes) if c_in != c_out else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` (resampled, projected where the channels change) plus the residual branch."""
        h = elu(x)
        if self.resample == "up" and self.factor > 1:
            h = F.interpolate(h, scale_factor=self.factor, mode="nearest")
        h = self.conv2(elu(self.conv1(h, y)), y)
        if self.resample == "down" and self.factor > 1:
            x = F.avg_pool2d(x, self.factor)
        if self.skip is not None:
            x = self.skip(x, y)
        if self.resample == "up" and self.factor > 1:
            x = F.interpolate(x, scale_factor=self.factor, mode="nearest")
        return x + h if self.scale == 1.0 else x + self.scale * h


class Chain(nn.Module):
    """Modules with ``forward(x, y)`` applied in order (``nn.Sequential`` cannot pass the labels)."""

    def __init__(self, *modules: nn.Module) -> None:
        super().__init__()
        self.layers = nn.ModuleList(modules)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The layers in order, each given the labels ``y``."""
        for layer in self.layers:
            x = layer(x, y)
        return x


class Act(nn.Module):
    """ELU that accepts (and ignores) labels, to sit inside :class:`Chain`."""

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``elu(x)``; ``y`` is ignored."""
        return elu(x)


class Upsample(nn.Module):
    """Nearest-neighbour upsampling by an integer factor (labels ignored)."""

    def __init__(self, factor: int) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` upsampled by ``factor`` (nearest neighbour); ``y`` is ignored."""
        return F.interpolate(x, scale_factor=self.factor, mode="nearest") if self.factor > 1 else x
