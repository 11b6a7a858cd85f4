"""Conditional weight normalization (AV-ADE appendix E.1): ``w = g(y) v / ||v||`` plus bias b(y)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from avade.errors import ConfigError
from avade.norms.configs import ConditionalWeightNormConfig


class ConditionalWeightNorm(nn.Module):
    """Per-class gains and biases on a weight-normalized direction ``v``.

    Without labels (``y is None``) or with ``num_classes`` unset it falls back to a shared gain and
    bias, i.e. plain weight normalization, so an unconditional model ignores labels.
    """

    def __init__(self, cfg: ConditionalWeightNormConfig, *, layer: nn.Conv2d | nn.Linear,
                 num_classes: int | None = None) -> None:
        super().__init__()
        if not isinstance(layer, nn.Conv2d | nn.Linear):
            raise TypeError(f"cwn supports Conv2d and Linear layers, got {type(layer).__name__}")
        if getattr(layer, "edge_weight", None) is not None:
            # cwn convolves with its own normalized weight, which would silently drop the edge channel
            raise ConfigError("cwn does not support a convolution with edge_bias; use another norm or "
                              "edge_bias = false", path="norm")
        self.layer = layer
        out = layer.weight.shape[0]
        with torch.no_grad():
            norm = layer.weight.flatten(1).norm(dim=1)
        self.gain = nn.Parameter(norm.clone())
        self.num_classes = num_classes or 0
        if self.num_classes:
            self.class_gain = nn.Embedding(self.num_classes, out)
            self.class_bias = nn.Embedding(self.num_classes, out)
            nn.init.ones_(self.class_gain.weight)
            nn.init.zeros_(self.class_bias.weight)

    def effective_weight(self, y: torch.Tensor | None = None) -> torch.Tensor:
        """The weight used for labels ``y``: shape ``[B, *weight.shape]`` (or the shared weight)."""
        v = self.layer.weight
        direction = v / v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (v.dim() - 1)))
        g = self.gain
        if y is None or not self.num_classes:
            return direction * g.view(-1, *([1] * (v.dim() - 1)))
        gy = g * self.class_gain(y)  # [B, out]
        return direction.unsqueeze(0) * gy.view(*gy.shape, *([1] * (v.dim() - 1)))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The layer with its normalized weight and the gain and bias of each sample's class (shared without ``y``)."""
        v = self.layer.weight
        direction = v / v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (v.dim() - 1)))
        bias = self.layer.bias
        if isinstance(self.layer, nn.Conv2d):
            out = self.layer._conv_forward(x, direction, None)
            shape: tuple[int, ...] = (-1, out.shape[1], 1, 1)
        else:
            out = F.linear(x, direction)
            shape = (-1, out.shape[1])
        # Scaling the output by g is the same as scaling the weight rows by g (linear in w).
        gain = self.gain
        if y is not None and self.num_classes:
            gain = gain * self.class_gain(y)
            out = out * gain.view(shape)
            out = out + self.class_bias(y).view(shape)
        else:
            out = out * gain.view(1, *shape[1:])
        if bias is not None:
            out = out + bias.view(1, *shape[1:])
        return out
