"""The identity flow: no feature map, for tests and ablations."""

from __future__ import annotations

import torch

from avade.flows.base import Flow, Shape, check_in_shape
from avade.flows.configs import IdentityConfig


class IdentityFlow(Flow):
    """``y = x`` with ``logdet = 0``."""

    def __init__(self, cfg: IdentityConfig | None = None, *, in_shape: Shape) -> None:
        super().__init__(check_in_shape(in_shape, "identity"))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, 0)``: no transform (a likelihood model on the data itself)."""
        self.check_input(x, "identity")
        return x, x.new_zeros(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """``y`` itself."""
        self.check_input(y, "identity", inverse=True)
        return y
