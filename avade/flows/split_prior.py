"""Glow's learned conditional prior for a factored-out half, written as a flow."""

from __future__ import annotations

import torch

from avade.flows.factor_out import SplitTransform
from avade.flows.st_nets import zero_conv
from avade.nn.precision import coupling_net_precision, full_precision


class LearnedSplitPrior(SplitTransform):
    """``y2 = (z2 - mu(z1)) * exp(-logs(z1))``, ``logdet = -sum(logs)``.

    ``mu`` and ``logs`` come from a zero-initialised 3x3 conv on ``z1``, as in Glow's split prior
    (with ``logscale_factor > 0``, Glow's ``conv2d_zeros``: output scaled by ``exp(factor * logs)``;
    ``edge_bias``: its edge channel). A
    standard normal on ``y2`` is exactly Glow's ``N(z2; mu(z1), exp(logs(z1))^2)``, so the split stays an
    invertible map and the output keeps the input's shape.
    """

    def __init__(self, kept_channels: int, split_channels: int, logscale_factor: float = 0.0,
                 edge_bias: bool = False) -> None:
        super().__init__()
        self.split_channels = split_channels
        self.conv = zero_conv(kept_channels, 2 * split_channels, logscale_factor=logscale_factor,
                              edge_bias=edge_bias)

    def _mean_logs(self, z1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with coupling_net_precision(z1):  # (bf16 within CouplingNetsInBF16, as the coupling networks)
            h = full_precision(self.conv(z1))
        return h[:, : self.split_channels], h[:, self.split_channels:]

    def forward(self, z2: torch.Tensor, z1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``((z2 - mean) / exp(logs), logdet [B])`` with mean and log-scale predicted from ``z1``."""
        mean, logs = self._mean_logs(z1)
        return (z2 - mean) * torch.exp(-logs), -logs.sum(dim=(1, 2, 3))

    def inverse(self, y2: torch.Tensor, z1: torch.Tensor) -> torch.Tensor:
        """``z2 = y2 * exp(logs) + mean``, with mean and log-scale predicted from ``z1``."""
        mean, logs = self._mean_logs(z1)
        return y2 * logs.exp() + mean
