"""A Conv2d whose bias is a separate add under ``torch.compile``."""

from __future__ import annotations

import torch
from torch import nn


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters, state-dict keys and eager computation) that, while being
    compiled, convolves without bias and adds the bias afterwards.

    Why: compiled, the add fuses into the elementwise op that follows (a ReLU, the coupling's affine
    map) and the bias gradient into that op's backward, whereas oneDNN computes the bias gradient in
    a pass of its own over the output gradient. Eager keeps the fused oneDNN call (a separate add
    would be one more pass over the activation). Norm wrappers (e.g. weight norm's parametrization)
    work unchanged: they go through ``self.weight``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bias is not None and torch.compiler.is_compiling():
            y = self._conv_forward(x, self.weight, None)
            return y + self.bias.to(y.dtype).view(1, -1, 1, 1)  # autocast: y may be bf16, as eager's would be
        return super().forward(x)
