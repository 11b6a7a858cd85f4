"""The output head of a discriminator, with optional class projection (Miyato & Koyama, 2018)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

Wrap = Callable[[nn.Module], nn.Module]


def _identity(module: nn.Module) -> nn.Module:
    return module


class ProjectionHead(nn.Module):
    """``score(h, y) = <w, h> + b + <embed(y), h>`` for pooled features ``h`` of shape ``[B, F]``.

    The projection term is the log density-ratio of a class-conditional model under the
    assumptions of Miyato & Koyama (2018); it is skipped when ``y`` is None or the head is
    unconditional, so one discriminator serves both settings. ``wrap`` lets a caller apply e.g.
    spectral normalization to the dense layer and the embedding.
    """

    def __init__(self, features: int, num_classes: int | None = None, wrap: Wrap = _identity) -> None:
        super().__init__()
        self.linear = wrap(nn.Linear(features, 1))
        self.num_classes = int(num_classes or 0)
        self.embed = None
        if self.num_classes:
            embed = nn.Embedding(self.num_classes, features)
            # Small random init: distinct classes give distinct scores from the first step,
            # without the class term dominating the unconditional one.
            nn.init.xavier_uniform_(embed.weight)
            self.embed = wrap(embed)

    def forward(self, h: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """One score per sample, ``[B]``; the class projection is added only with labels ``y`` and classes."""
        out = self.linear(h).squeeze(1)
        if y is not None and self.embed is not None:
            out = out + (self.embed(y) * h).sum(dim=1)
        return out
