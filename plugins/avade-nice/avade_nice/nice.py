"""NICE (Dinh, Krueger & Bengio, 2014) adapted to images.

``x -> h``: a stack of additive couplings ``h = x + m(x * b) * (1 - b)`` with binary masks ``b``
(checkerboard and/or channel halves, alternating which half is updated); each has Jacobian
determinant 1. ``h -> y``: NICE's final learned diagonal scaling ``y = h * exp(s)``, one ``s`` per
dimension, which carries the whole log-determinant ``sum(s)``. The coupling nets ``m`` are small
conv nets; they need not be invertible.
"""

from __future__ import annotations

from typing import Literal

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from avade.errors import ConfigError, DataError
from avade.nn import normed
from avade.nn.precision import coupling_net_precision, full_precision
from avade.schema import ge
from avade_nice import masks


@attrs.define
class NICEConfig:
    """Settings of the NICE flow.

    ``couplings``: additive coupling layers (4 in the NICE paper; use an even number so that each
    half is updated equally often). ``hidden``/``depth``: width and number of hidden 3x3 conv
    layers of each coupling net. ``mask``: ``checkerboard`` (any channel count), ``channel``
    (needs >= 2 channels) or ``alternate`` (two checkerboard couplings, then two channel ones, ...).
    ``norm``: registered norm of the hidden convs (``batch-norm`` breaks exact invertibility in
    training mode; prefer ``none``, ``weight-norm`` or ``actnorm``). ``zero_init``: start every
    coupling at the identity.
    """

    couplings: int = attrs.field(
        default=4, validator=ge(1),
        metadata={"help": "additive coupling layers (NICE: 4; even: each half is updated equally often)"})
    hidden: int = attrs.field(default=64, validator=ge(1),
                              metadata={"help": "channels of each coupling net's hidden convs"})
    depth: int = attrs.field(default=2, validator=ge(1),
                             metadata={"help": "hidden 3x3 conv layers of each coupling net"})
    mask: Literal["checkerboard", "channel", "alternate"] = attrs.field(
        default="checkerboard", metadata={"help": "checkerboard, channel (needs >= 2 channels) or alternate (two "
                                                  "of each in turn)"})
    norm: str = attrs.field(
        default="none", metadata={"help": "registered norm of the hidden convs (batch-norm: not exactly invertible "
                                          "in training mode)"})
    zero_init: bool = attrs.field(default=True, metadata={"help": "zero the output convs: every coupling starts as "
                                                                  "the identity"})


class AdditiveCoupling(nn.Module):
    """``y = x + m(x * b) * (1 - b)``; inverse ``x = y - m(y * b) * (1 - b)`` (``b`` = kept dims)."""

    def __init__(self, mask: torch.Tensor, hidden: int, depth: int, norm: str, zero_init: bool) -> None:
        super().__init__()
        self.register_buffer("mask", mask)
        c = mask.shape[1]
        layers = [normed(nn.Conv2d(c, hidden, 3, padding=1), norm)]
        layers += [normed(nn.Conv2d(hidden, hidden, 3, padding=1), norm) for _ in range(depth - 1)]
        self.hidden = nn.ModuleList(layers)
        self.out = nn.Conv2d(hidden, c, 3, padding=1)
        if zero_init:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def shift(self, kept: torch.Tensor) -> torch.Tensor:
        """``m(x * b) * (1 - b)``: depends on the kept half only, changes the other half only. ``m`` runs in
        bfloat16 under avade's ``train.bf16_coupling_nets``; the shift is added in float32 (the coupling's inverse
        recomputes it from the kept half, which it passes through unchanged)."""
        with coupling_net_precision(kept):
            h = kept
            for layer in self.hidden:
                h = F.relu(layer(h))
            out = self.out(h)
        return full_precision(out) * (1.0 - self.mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.shift(x * self.mask)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        # y * b == x * b because the kept half passes through unchanged.
        return y - self.shift(y * self.mask)


class NICE(nn.Module):
    """The NICE flow on images: ``forward(x) -> (y, logdet[B])``, ``inverse(y) -> x``, y shaped like x."""

    def __init__(self, cfg: NICEConfig, *, in_shape: tuple[int, int, int]) -> None:
        super().__init__()
        shape = tuple(int(s) for s in in_shape) if isinstance(in_shape, tuple | list) else ()
        if len(shape) != 3 or min(shape) < 1:
            raise ConfigError(f"in_shape must be (C, H, W) of positive ints, got {in_shape!r}",
                              path="in_shape")
        self.in_shape: tuple[int, int, int] = shape  # type: ignore[assignment]
        self.out_shape = self.in_shape
        if cfg.mask != "checkerboard" and shape[0] < 2:
            raise ConfigError(f"mask '{cfg.mask}' splits channels and needs at least 2, got {shape[0]}; "
                              "use mask = \"checkerboard\"", path="mask")
        layers = []
        for i in range(cfg.couplings):
            kind = cfg.mask if cfg.mask != "alternate" else ("checkerboard", "channel")[(i // 2) % 2]
            make = masks.checkerboard if kind == "checkerboard" else masks.channel
            layers.append(AdditiveCoupling(make(self.in_shape, i % 2), cfg.hidden, cfg.depth, cfg.norm,
                                           cfg.zero_init))
        self.couplings = nn.ModuleList(layers)
        self.log_scale = nn.Parameter(torch.zeros(1, *self.in_shape))

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.in_shape:
            raise DataError(f"flow 'nice' was built for inputs [B, {', '.join(map(str, self.in_shape))}], "
                            f"got {list(x.shape)}")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x)
        for coupling in self.couplings:
            x = coupling(x)
        y = x * self.log_scale.exp()
        logdet = x.new_ones(x.shape[0]) * self.log_scale.sum()
        return y, logdet

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        self._check(y)
        x = y * torch.exp(-self.log_scale)
        for coupling in reversed(self.couplings):
            x = coupling.inverse(x)
        return x
