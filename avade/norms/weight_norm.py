"""Weight normalization (Salimans & Kingma, 2016) through torch's parametrization API."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrizations

from avade.nn.parametrized import picklable_state, restored_state
from avade.norms._init_flag import InitFlag, check_init_batch
from avade.norms.configs import WeightNormConfig


class WeightNorm(nn.Module):
    """``w = g v / ||v||`` per output channel; optional data-dependent init of g and bias on first batch."""

    def __init__(self, cfg: WeightNormConfig, *, layer: nn.Conv2d | nn.Linear, num_classes: int | None = None) -> None:
        super().__init__()
        self.layer = parametrizations.weight_norm(layer, name="weight", dim=0)
        self.init_scale = cfg.init_scale
        self.initialized = InitFlag(cfg.init_scale == 0.0)

    @torch.no_grad()
    def _data_init(self, x: torch.Tensor) -> None:
        out = self.layer(x)
        dims = [d for d in range(out.dim()) if d != 1]
        check_init_batch(out, dims, "weight norm", "turn it off (model.norm_options weight-norm init_scale = 0)")
        mean, std = out.mean(dims), out.std(dims) + 1e-6
        scale = self.init_scale / std
        g = self.layer.parametrizations.weight.original0
        g.mul_(scale.view_as(g))
        if self.layer.bias is not None:
            self.layer.bias.copy_((self.layer.bias - mean) * scale)
        edge = getattr(self.layer, "edge_weight", None)  # Glow's edge channel (avade.nn.Conv2d): part of the output
        if edge is not None:
            edge.mul_(scale.view(-1, 1, 1, 1))
        self.initialized.set()

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``layer(x)`` with weight norm; the first training batch runs the data-dependent init (``init_scale > 0``)."""
        # (not on the meta device, where `avade recipe memory` counts activations: no data to init from)
        if self.training and not x.is_meta and not self.initialized.is_set():
            self._data_init(x)
        return self.layer(x)

    def __getstate__(self) -> dict[str, Any]:
        return picklable_state(self)  # torch refuses to pickle its parametrized layer as it is

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(restored_state(state))  # (copy.copy: its state as __getstate__ gave it)
