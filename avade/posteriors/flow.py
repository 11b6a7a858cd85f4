"""Inverse autoregressive flow on a posterior sample (AV-ADE appendix B.2, eq. 9-10; Kingma et al. 2016).

Each step maps ``z -> sigma * z + (1 - sigma) * m`` with ``[m, s] = AR(z, context)`` and
``sigma = sigmoid(s + FORGET_BIAS)``: the numerically stable gated form of ``z_t = mu_t + sigma_t z_{t-1}``
(``mu_t = (1 - sigma_t) m``). Its log-determinant is ``sum log sigma``. The context comes from the
bottom-up features, never from ``z``, so it does not break the autoregressive structure.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations

from avade.nn import elu
from avade.nn.parametrized import picklable_state, restored_state
from avade.nn.precision import full_precision
from avade.posteriors.made import MaskedConv2d, hidden_degrees

#: Added to ``s`` so that ``sigma`` starts near sigmoid(2) = 0.88: each step begins close to the
#: identity, as the IAF paper recommends.
FORGET_BIAS = 2.0


class IAFStep(nn.Module):
    """One autoregressive step: masked conv -> (+ context) -> ELU -> masked conv -> ELU -> masked conv.

    ``reverse`` reverses the channel order (alternated across steps so that later steps let the first
    channels depend on the last ones).
    """

    order: torch.Tensor  # buffers, registered in __init__

    def __init__(self, latent: int, hidden: int, context: int, kernel: int = 3, *,
                 reverse: bool = False) -> None:
        super().__init__()
        self.latent = latent
        order = torch.arange(latent)
        self.register_buffer("order", order.flip(0) if reverse else order)
        hid = hidden_degrees(hidden, latent)
        self.inp = MaskedConv2d(latent, hidden, kernel, self.order, hid, strict=False)
        self.ctx = parametrizations.weight_norm(nn.Conv2d(context, hidden, 1)) if context else None
        self.mid = MaskedConv2d(hidden, hidden, kernel, hid, hid, strict=False)
        self.out = MaskedConv2d(hidden, 2 * latent, kernel, hid, self.order.repeat(2), strict=True)

    def forward(self, z: torch.Tensor, context: torch.Tensor | None = None, elementwise: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z_new, log|det dz_new/dz|)`` with the log-determinant of shape ``[B]`` (``elementwise``: its
        terms ``log sigma``, shaped like ``z``)."""
        h = self.inp(z)
        if self.ctx is not None and context is not None:
            h = h + self.ctx(context)
        h = self.mid(elu(h))
        m, s = full_precision(self.out(elu(h))).chunk(2, dim=1)  # z and its log-det stay float32
        s = s + FORGET_BIAS
        gate = torch.sigmoid(s)
        log_gate = F.logsigmoid(s)
        return gate * z + (1 - gate) * m, (log_gate if elementwise else log_gate.flatten(1).sum(1))

    def __getstate__(self) -> dict[str, Any]:
        return picklable_state(self)  # ctx: torch refuses to pickle a weight-normed conv as it is

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(restored_state(state))  # (copy.copy: its state as __getstate__ gave it)


class IAFFlow(nn.Module):
    """``steps`` IAF steps with alternating channel order; returns ``(z_T, sum_t log|det|)``."""

    def __init__(self, latent: int, hidden: int, context: int, steps: int, kernel: int = 3) -> None:
        super().__init__()
        self.steps = nn.ModuleList(
            IAFStep(latent, hidden, context, kernel, reverse=bool(t % 2)) for t in range(steps)
        )

    def forward(self, z: torch.Tensor, context: torch.Tensor | None = None, elementwise: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z_T, sum_t log|det|)`` after every step, each conditioned on ``context`` (see :meth:`IAFStep.forward`)."""
        logdet = torch.zeros_like(z) if elementwise else z.new_zeros(z.shape[0])
        for step in self.steps:
            z, ld = step(z, context, elementwise)
            logdet = logdet + ld
        return z, logdet
