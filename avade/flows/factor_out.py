"""Multi-scale factoring out, expressed as a shape-preserving flow."""

from __future__ import annotations

import torch
from torch import nn

from avade.flows.base import Flow, Shape


class SplitTransform(nn.Module):
    """A flow on the factored-out half ``z2`` conditioned on the kept half ``z1`` (e.g. a learned prior)."""

    def forward(self, z2: torch.Tensor, z1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y2, logdet [B])``: ``z2`` transformed, conditioned on ``z1``."""
        raise NotImplementedError  # pragma: no cover

    def inverse(self, y2: torch.Tensor, z1: torch.Tensor) -> torch.Tensor:
        """``z2`` from ``y2``, conditioned on the same ``z1``."""
        raise NotImplementedError  # pragma: no cover


class FactorOut(Flow):
    """Split channels into ``(z1, z2)``: ``z1`` goes on through ``inner`` (the coarser scales), ``z2`` is
    factored out, optionally through a ``transform`` conditioned on ``z1``; then both are concatenated
    again, so the output has the input's shape and the VAE models all of f(x).
    """

    def __init__(self, in_shape: Shape, *, inner: Flow, transform: SplitTransform | None = None) -> None:
        super().__init__(in_shape)
        c, h, w = in_shape
        self.keep = inner.in_shape[0]
        if inner.in_shape != (self.keep, h, w) or inner.out_shape != inner.in_shape or self.keep >= c:
            raise ValueError(f"FactorOut of {in_shape}: inner flow must map {(self.keep, h, w)} to itself, "
                             f"got {inner.in_shape} -> {inner.out_shape}")
        self.inner = inner
        self.transform = transform

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(concat(inner(z1), transform(z2 | z1)), logdet [B])``, the output shaped like ``x``."""
        z1, z2 = x[:, : self.keep], x[:, self.keep:]
        logdet = None
        if self.transform is not None:
            z2, logdet = self.transform(z2, z1)  # conditioned on z1 *before* the coarser scales
        y1, ld = self.inner(z1)
        logdet = ld if logdet is None else logdet + ld
        return torch.cat((y1, z2), dim=1), logdet

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """``x`` from ``y``: ``z1`` through the inner inverse first, as ``z2``'s transform is conditioned on it."""
        y1, z2 = y[:, : self.keep], y[:, self.keep:]
        z1 = self.inner.inverse(y1)
        if self.transform is not None:
            z2 = self.transform.inverse(z2, z1)
        return torch.cat((z1, z2), dim=1)
