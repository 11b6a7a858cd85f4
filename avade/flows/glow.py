"""Glow (Kingma & Dhariwal, 2018) as the AV-ADE feature map f."""

from __future__ import annotations

from typing import Any

import torch

from avade.errors import ConfigError
from avade.flows.actnorm import ActNorm, ActNormConfig
from avade.flows.base import Flow, FlowSequence, Shape, check_in_shape
from avade.flows.configs import GlowConfig
from avade.flows.coupling import AffineCoupling, AffineCouplingConfig
from avade.flows.factor_out import FactorOut
from avade.flows.invconv import InvConv, InvConvConfig
from avade.flows.split_prior import LearnedSplitPrior
from avade.flows.squeeze import Squeeze, Unsqueeze
from avade.nn.layers import current_norm_options, norm_options


def _with_actnorm_factor(factor: float) -> dict[str, dict[str, Any]]:
    """The enclosing norm options (a recipe's ``model.norm_options``) with actnorm's logscale factor."""
    current = {k: dict(v) for k, v in current_norm_options().items()}
    current.setdefault("actnorm", {})["logscale_factor"] = factor
    return current


class Glow(Flow):
    """Per level: squeeze, ``steps`` x (actnorm, invconv, affine coupling), then, except at the last
    level, split: half the channels go on to the next level, the other half ``z2`` is factored out
    through the learned prior ``(z2 - mu(z1)) * exp(-logs(z1))``. Everything is re-assembled (and
    unsqueezed) so ``y`` has the shape of ``x``; a standard normal on ``y`` is Glow's prior at the
    splits.

    As in the reference code (openai/glow): actnorm's data-dependent init (population std, eps
    1e-6), the LU-decomposed 1x1 convolution from a random rotation (fixed ``P`` and ``sign(s)``,
    learned ``log|s|``), the coupling network (conv3x3-actnorm-ReLU-conv1x1-actnorm-ReLU-zero conv3x3),
    the logscale factor 3, the split prior (zero conv3x3 on the kept half), the edge channel of the 3x3
    convolutions (``add_edge_padding``), the squeeze order and the first half of the channels
    conditioning the second. Deliberate differences: the coupling's scale is ``exp(b * tanh(raw))``,
    not ``sigmoid(raw + 2)`` (see :mod:`avade.flows.coupling`) and the shift is added after scaling
    (the same family of maps); the networks' outputs are split in halves, not interleaved (a
    relabelling of a zero-initialised layer's outputs); there is no learned top prior (``learntop``,
    off by default in Glow): in AV-ADE the VAE models ``y``; the reference's plain (non-LU) 1x1 conv
    is ``lu = false``. The reference's input ``x / 256 - 1/2`` is ``model.logit_alpha = 0`` (avade's
    default is Real-NVP's logit for every flow): that gives ``2 x / 256 - 1``, and the first actnorm's
    data-dependent init absorbs the factor 2 (its output, and the bits/dim, are the same up to the
    1e-6 that the init adds to the std).
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
        factor = cfg.logscale_factor
        coupling = AffineCouplingConfig(mask="channel", net="conv", hidden=cfg.hidden, norm=cfg.norm,
                                        batch_norm=False, logscale_factor=factor, edge_bias=cfg.edge_bias)
        # The coupling network's actnorms (norm="actnorm") take the same factor, as in Glow's conv2d.
        with norm_options(_with_actnorm_factor(factor or 1.0)):
            layer = AffineCoupling(coupling, in_shape=shape)
        return [ActNorm(ActNormConfig(logscale_factor=factor or 1.0), in_shape=shape),
                InvConv(InvConvConfig(lu=cfg.lu), in_shape=shape), layer]

    def _level(self, shape: Shape, remaining: int) -> Flow:
        squeeze = Squeeze(in_shape=shape)
        sq = squeeze.out_shape
        flows: list[Flow] = [squeeze]
        for _ in range(self.cfg.steps):
            flows += self._step(sq)
        if remaining > 1:
            keep = sq[0] // 2
            inner = self._level((keep, sq[1], sq[2]), remaining - 1)
            prior = LearnedSplitPrior(keep, sq[0] - keep, logscale_factor=self.cfg.logscale_factor,
                                      edge_bias=self.cfg.edge_bias)
            flows.append(FactorOut(sq, inner=inner, transform=prior))
        flows.append(Unsqueeze(sq))
        return FlowSequence(flows)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y, logdet [B])`` of a batch ``[B, *in_shape]`` (checked: anything else is a DataError)."""
        self.check_input(x, "glow")
        return self.body(x)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """``x`` from ``y`` ``[B, *out_shape]`` (checked as in :meth:`forward`)."""
        self.check_input(y, "glow", inverse=True)
        return self.body.inverse(y)
