"""Batch normalization as a flow: Real-NVP "appl[ies] batch normalization to the whole coupling layer
output" (Dinh et al. 2017, section 3.7); the reference code's ``bn_out``."""

from __future__ import annotations

import attrs
import torch

from avade.flows.base import Flow, Shape, check_in_shape
from avade.schema import between, gt


@attrs.define
class BatchNormFlowConfig:
    """``momentum`` of the running averages (the reference's decay 0.95 = 0.05); ``eps`` floors the
    variance (the reference's 1e-4)."""

    momentum: float = attrs.field(default=0.05, validator=between(0.0, 1.0))
    eps: float = attrs.field(default=1e-4, validator=gt(0.0))


class BatchNormFlow(Flow):
    """``y = (x - mean) / sqrt(var + eps)`` per channel, ``logdet = -H W / 2 * sum log(var + eps)``; no
    learned parameters.

    In training the batch's own statistics are used (and the running averages updated); in eval mode,
    and for the inverse in either mode, the running averages: the inverse cannot know the statistics of
    the batch its input came from (the reference's reverse pass also runs with ``train=False``). Unlike
    the other flows, it is therefore exactly invertible in eval mode only.
    """

    def __init__(self, cfg: BatchNormFlowConfig | None = None, *, in_shape: Shape) -> None:
        cfg = cfg or BatchNormFlowConfig()
        c, h, w = check_in_shape(in_shape, "batch-norm")
        super().__init__((c, h, w))
        self.momentum = cfg.momentum
        self.eps = cfg.eps
        self.register_buffer("running_mean", torch.zeros(1, c, 1, 1))
        self.register_buffer("running_var", torch.ones(1, c, 1, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.training:
            mean = x.mean((0, 2, 3), keepdim=True)
            var = x.var((0, 2, 3), keepdim=True, correction=0)
            # New tensors, not in-place updates: a compiled inverse may hold the old ones for its backward.
            self.running_mean = self._averaged(self.running_mean, mean)
            self.running_var = self._averaged(self.running_var, var)
        else:
            mean, var = self.running_mean, self.running_var
        log_std = 0.5 * torch.log(var + self.eps)
        y = (x - mean) * torch.exp(-log_std)
        logdet = (-log_std.sum() * (x.shape[2] * x.shape[3])).expand(x.shape[0])
        return y, logdet

    def _averaged(self, running: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        """The running average moved towards ``batch``; left as it was where the batch's value is not
        finite (the trainer skips such a step; its statistics must not poison f^-1 for good)."""
        new = torch.lerp(running, batch.detach().to(running.dtype), self.momentum)
        return torch.where(torch.isfinite(new), new, running)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y * torch.sqrt(self.running_var + self.eps) + self.running_mean
