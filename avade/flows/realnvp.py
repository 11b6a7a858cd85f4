"""Real-NVP (Dinh, Sohl-Dickstein & Bengio, 2017) as the AV-ADE feature map f."""

from __future__ import annotations

from typing import Literal

import torch

from avade.errors import ConfigError
from avade.flows.base import Flow, FlowSequence, Shape, check_in_shape
from avade.flows.batch_norm import BatchNormFlow
from avade.flows.configs import RealNVPConfig
from avade.flows.coupling import AffineCoupling, AffineCouplingConfig
from avade.flows.factor_out import FactorOut
from avade.flows.squeeze import Squeeze, Unsqueeze

CHANNEL_COUPLINGS = 3  # per non-final scale, as in Real-NVP


def max_scales(h: int, w: int) -> int:
    """The largest ``scales`` for which ``2**(scales-1)`` divides both ``h`` and ``w``."""
    s = 1
    while h % 2**s == 0 and w % 2**s == 0:
        s += 1
    return s


class RealNVP(Flow):
    """Per scale: ``layers`` checkerboard couplings with alternating masks (``final_layers`` at the last
    scale); then, except at the last scale, squeeze, 3 channel-wise couplings (alternating) and factor
    out half the channels, which skip the coarser scales. Factored-out parts are re-assembled, so ``y``
    has the shape of ``x``.
    """

    def __init__(self, cfg: RealNVPConfig | None = None, *, in_shape: Shape) -> None:
        cfg = cfg or RealNVPConfig()
        c, h, w = check_in_shape(in_shape, "realnvp")
        factor = 2 ** (cfg.scales - 1)
        if h % factor or w % factor:
            raise ConfigError(
                f"realnvp with scales={cfg.scales} needs H and W divisible by 2**(scales-1) = {factor}, "
                f"got in_shape {(c, h, w)}; use scales <= {max_scales(h, w)} or another resolution",
                path="scales")
        super().__init__((c, h, w))
        self.cfg = cfg
        self.body = self._scale((c, h, w), cfg.scales)

    def _coupling(self, shape: Shape, mask: Literal["checkerboard", "checkerboard-packed", "channel"],
                  reverse: bool, hidden: int) -> Flow:
        cfg = self.cfg
        coupling = AffineCouplingConfig(mask=mask, reverse=reverse, net=cfg.net, hidden=hidden,
                                        blocks=cfg.blocks, norm=cfg.norm, batch_norm=cfg.batch_norm)
        layer = AffineCoupling(coupling, in_shape=shape)
        if cfg.out_batch_norm is False:
            return layer
        region = layer.transformed_region() if cfg.out_batch_norm == "transformed" else None
        return FlowSequence([layer, BatchNormFlow(in_shape=shape, region=region)])

    def _scale(self, shape: Shape, remaining: int) -> Flow:
        cfg = self.cfg
        hidden = cfg.hidden * cfg.hidden_growth ** (cfg.scales - remaining)
        mask: Literal["checkerboard", "checkerboard-packed"] = (
            "checkerboard" if cfg.checkerboard == "masked" else "checkerboard-packed")
        count = cfg.layers if remaining > 1 or cfg.final_layers is None else cfg.final_layers
        flows: list[Flow] = [self._coupling(shape, mask, i % 2 == 1, hidden) for i in range(count)]
        if remaining > 1:
            squeeze = Squeeze(in_shape=shape)
            sq = squeeze.out_shape
            flows.append(squeeze)
            flows += [self._coupling(sq, "channel", i % 2 == 1, hidden * cfg.hidden_growth)
                      for i in range(CHANNEL_COUPLINGS)]
            inner = self._scale((sq[0] // 2, sq[1], sq[2]), remaining - 1)
            flows += [FactorOut(sq, inner=inner), Unsqueeze(sq)]
        return FlowSequence(flows)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y, logdet [B])`` of a batch ``[B, *in_shape]`` (checked: anything else is a DataError)."""
        self.check_input(x, "realnvp")
        return self.body(x)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """``x`` from ``y`` ``[B, *out_shape]`` (checked as in :meth:`forward`)."""
        self.check_input(y, "realnvp", inverse=True)
        return self.body.inverse(y)
