"""Batch normalization as a flow: Real-NVP "appl[ies] batch normalization to the whole coupling layer
output" (Dinh et al. 2017, section 3.7); with a ``region``, only to the half a coupling changed, as the
reference code's ``bn_out`` does."""

from __future__ import annotations

import torch

from avade.flows.base import Flow, Shape, check_in_shape
from avade.flows.configs import BatchNormFlowConfig


class BatchNormFlow(Flow):
    """``y = (x - mean) / sqrt(var + eps)`` per channel, ``logdet = -H W / 2 * sum log(var + eps)``; no
    learned parameters.

    In training the batch's own statistics are used (and the running averages updated); in eval mode,
    and for the inverse in either mode, the running averages: the inverse cannot know the statistics of
    the batch its input came from (the reference's reverse pass also runs with ``train=False``). Unlike
    the other flows, it is therefore exactly invertible in eval mode only.

    ``region`` (0/1, broadcastable to ``[1, C, H, W]``): normalize only where it is 1 and leave the rest
    as it is, as the Real-NVP reference's ``bn_out`` treats the half a coupling transformed (a checkerboard
    of pixels, or half the channels). Its statistics are those of ``x * region`` over batch and pixels,
    the zeros included, exactly as the reference computes them.
    """

    running_mean: torch.Tensor  # buffers, registered in __init__
    running_var: torch.Tensor
    region: torch.Tensor
    count: torch.Tensor

    def __init__(self, cfg: BatchNormFlowConfig | None = None, *, in_shape: Shape,
                 region: torch.Tensor | None = None) -> None:
        cfg = cfg or BatchNormFlowConfig()
        c, h, w = check_in_shape(in_shape, "batch-norm")
        super().__init__((c, h, w))
        self.momentum = cfg.momentum
        self.eps = cfg.eps
        self.register_buffer("running_mean", torch.zeros(1, c, 1, 1))
        self.register_buffer("running_var", torch.ones(1, c, 1, 1))
        if region is None:
            region = torch.ones(1, 1, 1, 1)
            self.partial = False
        else:
            region = region.detach().to(torch.get_default_dtype())
            if region.dim() != 4 or any(r not in (1, n) for r, n in zip(region.shape, (1, c, h, w), strict=True)):
                raise ValueError(f"batch-norm: region of shape {tuple(region.shape)} does not broadcast to "
                                 f"[1, {c}, {h}, {w}]")
            self.partial = True
        # Fixed by the architecture: buffers (moved with the module, not saved). ``count``: the pixels
        # normalized per channel, for the log-determinant.
        self.register_buffer("region", region, persistent=False)
        self.register_buffer("count", region.expand(1, c, h, w).sum((2, 3), keepdim=True), persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y, logdet [B])``: batch statistics in training (the running averages updated), running ones in eval."""
        if self.training:
            xm = x * self.region if self.partial else x
            mean = xm.mean((0, 2, 3), keepdim=True)
            var = xm.var((0, 2, 3), keepdim=True, correction=0)
            # New tensors, not in-place updates: a compiled inverse may hold the old ones for its backward.
            self.running_mean = self._averaged(self.running_mean, mean)
            self.running_var = self._averaged(self.running_var, var)
        else:
            mean, var = self.running_mean, self.running_var
        log_std = 0.5 * torch.log(var + self.eps)
        if self.partial:
            y = (x - mean * self.region) * torch.exp(-log_std * self.region)
        else:
            y = (x - mean) * torch.exp(-log_std)
        logdet = (-(log_std * self.count).sum()).expand(x.shape[0])
        return y, logdet

    def _averaged(self, running: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        """The running average moved towards ``batch``; left as it was where the batch's value is not
        finite (the trainer skips such a step; its statistics must not poison f^-1 for good)."""
        new = torch.lerp(running, batch.detach().to(running.dtype), self.momentum)
        return torch.where(torch.isfinite(new), new, running)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """``x`` from ``y`` with the running statistics."""
        if self.partial:
            log_std = 0.5 * torch.log(self.running_var + self.eps)
            return y * torch.exp(log_std * self.region) + self.running_mean * self.region
        return y * torch.sqrt(self.running_var + self.eps) + self.running_mean
