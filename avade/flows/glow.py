"""Glow (Kingma & Dhariwal, 2018) as the AV-ADE feature map f."""

from __future__ import annotations

import attrs
import torch

from avade.errors import ConfigError
from avade.flows.actnorm import ActNorm
from avade.flows.base import Flow, FlowSequence, Shape, check_in_shape
from avade.flows.coupling import AffineCoupling, AffineCouplingConfig
from avade.flows.factor_out import FactorOut
from avade.flows.invconv import InvConv, InvConvConfig
from avade.flows.split_prior import LearnedSplitPrior
from avade.flows.squeeze import Squeeze, Unsqueeze
from avade.schema import ge


@attrs.define
class GlowConfig:
    """``scales`` levels (H and W must be divisible by ``2**scales``), each with ``steps`` flow steps.

    A step is actnorm, invertible 1x1 conv (``lu``: LU-decomposed) and a channel-wise affine coupling
    whose network has ``hidden`` channels and ``norm`` on its convolutions.
    """

    scales: int = attrs.field(default=3, validator=ge(1))
    steps: int = attrs.field(default=8, validator=ge(1))
    hidden: int = attrs.field(default=128, validator=ge(1))
    lu: bool = True
    norm: str = "none"


class Glow(Flow):
    """Per level: squeeze, ``steps`` x (actnorm, invconv, affine coupling), then, except at the last
    level, split: half the channels go on to the next level, the other half ``z2`` is factored out
    through the learned prior ``(z2 - mu(z1)) * exp(-logs(z1))``. Everything is re-assembled (and
    unsqueezed) so ``y`` has the shape of ``x``; a standard normal on ``y`` is Glow's prior at the
    splits.
    """

    def __init__(self, cfg: GlowConfig | None = None, *, in_shape: Shape) -> None:
        cfg = cfg or GlowConfig()
        c, h, w = check_in_shape(in_shape, "glow")
        factor = 2**cfg.scales
        if h % factor or w % factor:
            best = 0
            while h % 2 ** (best + 1) == 0 and w % 2 ** (best + 1) == 0:
                best += 1
            hint = f"use scales <= {best}" if best else "use an even resolution"
            raise ConfigError(f"glow with scales={cfg.scales} needs H and W divisible by 2**scales = "
                              f"{factor}, got in_shape {(c, h, w)}; {hint}", path="scales")
        super().__init__((c, h, w))
        self.cfg = cfg
        self.body = self._level((c, h, w), cfg.scales)

    def _step(self, shape: Shape) -> list[Flow]:
        cfg = self.cfg
        coupling = AffineCouplingConfig(mask="channel", net="conv", hidden=cfg.hidden, norm=cfg.norm,
                                        batch_norm=False)
        return [ActNorm(in_shape=shape), InvConv(InvConvConfig(lu=cfg.lu), in_shape=shape),
                AffineCoupling(coupling, in_shape=shape)]

    def _level(self, shape: Shape, remaining: int) -> Flow:
        squeeze = Squeeze(in_shape=shape)
        sq = squeeze.out_shape
        flows: list[Flow] = [squeeze]
        for _ in range(self.cfg.steps):
            flows += self._step(sq)
        if remaining > 1:
            keep = sq[0] // 2
            inner = self._level((keep, sq[1], sq[2]), remaining - 1)
            flows.append(FactorOut(sq, inner=inner, transform=LearnedSplitPrior(keep, sq[0] - keep)))
        flows.append(Unsqueeze(sq))
        return FlowSequence(flows)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.body(x)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return self.body.inverse(y)
