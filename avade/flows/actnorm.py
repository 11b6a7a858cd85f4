"""Activation normalization as a flow (Glow): a per-channel affine map with data-dependent init."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from avade.flows.base import Flow, Shape, check_in_shape
from avade.flows.configs import ActNormConfig
from avade.norms._init_flag import check_init_batch, loaded_as_set


class ActNorm(Flow):
    """``y = (x + b) * exp(s)`` per channel; ``logdet = H * W * sum(s)``, ``s = logscale_factor * log_scale``.

    On the first forward in training mode ``b`` and ``s`` are set so that this batch's output has zero
    mean and unit standard deviation per channel. The ``initialized`` buffer records that in the
    state dict, so a loaded model is not re-initialised.
    """

    initialized: torch.Tensor  # buffers, registered in __init__

    def __init__(self, cfg: ActNormConfig | None = None, *, in_shape: Shape) -> None:
        cfg = cfg or ActNormConfig()
        c, h, w = check_in_shape(in_shape, "actnorm")
        super().__init__((c, h, w))
        self.bias = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.eps = cfg.eps
        self.logscale_factor = float(cfg.logscale_factor)
        self.register_buffer("initialized", torch.tensor(not cfg.data_init))
        # Python-side mirror of `initialized`: reading the buffer is a host sync on GPU, so it is read
        # at most once (and again after a state-dict load), not on every forward.
        self._known_initialized = False

    @torch.no_grad()
    def _data_init(self, x: torch.Tensor) -> None:
        dims = (0, 2, 3)
        check_init_batch(x, dims, "flow actnorm", "initialise it on a batch of several images first")
        self.bias.copy_(-x.mean(dims, keepdim=True))
        self.log_scale.copy_(-torch.log(x.std(dims, keepdim=True, correction=0) + self.eps)
                             / self.logscale_factor)
        self.initialized.fill_(True)

    def _maybe_init(self, x: torch.Tensor) -> None:
        if self._known_initialized or x.is_meta:  # (the meta device, to count activations: no data to init from)
            return
        if not bool(self.initialized):
            self._data_init(x)
        self._known_initialized = True

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        # (from the loaded value, as the norms' InitFlag: no graph break in a resumed train.compile run)
        self._known_initialized = loaded_as_set(state_dict.get(prefix + "initialized"))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y, logdet [B])``; the first training batch initialises the bias and scale (data-dependent init)."""
        if self.training:
            self._maybe_init(x)
        s = self._log_s()
        y = (x + self.bias) * s.exp()
        logdet = (s.sum() * (x.shape[2] * x.shape[3])).expand(x.shape[0])
        return y, logdet

    def _log_s(self) -> torch.Tensor:
        return self.log_scale if self.logscale_factor == 1.0 else self.log_scale * self.logscale_factor

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """``x`` from ``y``: the per-channel affine map undone."""
        return y * torch.exp(-self._log_s()) - self.bias
