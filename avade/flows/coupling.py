"""Affine coupling (Real-NVP / Glow): half of the input is scaled and shifted as a function of the other.

The log-scale is bounded: ``log s = b * tanh(raw)`` with a learned per-channel bound ``b`` (initialised
to 1). The Real-NVP reference bounds it the same way but with one scalar ``b`` per coupling, initialised
to 0 in its checkerboard couplings and to 1 in its channel couplings (its last layer is not zero-init,
so ``b = 0`` only makes those couplings start volume-preserving); here the zero-initialised last layer
starts every coupling at the identity, and a per-channel ``b`` contains the scalar one. With ``net = "reference"``
(the reference's own s/t network, :class:`~avade.flows.st_nets.ReferenceST`) the bound is the
reference's: one scalar per coupling, 0 at init in checkerboard couplings (which therefore start as a
volume-preserving shift ``y = x + t(x_a)``, log-det exactly 0) and 1 in channel couplings (which start
with ``|log s| < 1``). Why tanh rather than Glow's
``s = sigmoid(raw + 2)``:

- it is symmetric, so *both* directions stay tame. In AV-ADE the inverse runs on decoder outputs
  (samples ``mu(z)``) that may lie off the training distribution; the inverse multiplies by
  ``exp(-log s)``, which a sigmoid scale leaves unbounded (``1/sigmoid`` explodes) but tanh bounds by
  ``exp(b)``;
- with the zero-initialised last layer, ``tanh(0) = 0`` makes the coupling exactly the identity at
  init (a sigmoid scale starts at 0.88, not 1), so a freshly built flow is the identity map.
"""

from __future__ import annotations

import torch
from torch import nn

from avade.errors import ConfigError
from avade.flows.affine_ops import affine_forward, affine_inverse
from avade.flows.base import Flow, Shape, check_in_shape
from avade.flows.configs import AffineCouplingConfig
from avade.flows.st_nets import ConvST, ReferenceST, ResNetST
from avade.nn.precision import coupling_net_precision, full_precision


def checkerboard(h: int, w: int, parity: int) -> torch.Tensor:
    """``[1, 1, h, w]`` mask that is 1 where ``(i + j) % 2 == parity``."""
    i = torch.arange(h).view(-1, 1)
    j = torch.arange(w).view(1, -1)
    return ((i + j) % 2 == parity).to(torch.get_default_dtype()).view(1, 1, h, w)


class AffineCoupling(Flow):
    """``y_b = x_b * exp(log s(x_a)) + t(x_a)``, ``y_a = x_a``; ``logdet = sum(log s)``.

    Starts as the identity (zero-initialised last layer), except with ``net = "reference"`` (see the
    module docstring). In training mode with batch norm inside the
    network, forward and inverse of the same batch still invert exactly: the network only ever sees the
    conditioning half, which both directions share.
    """

    odd_rows: torch.Tensor  # buffers, registered in __init__
    mask: torch.Tensor
    inv_mask: torch.Tensor

    def __init__(self, cfg: AffineCouplingConfig | None = None, *, in_shape: Shape) -> None:
        cfg = cfg or AffineCouplingConfig()
        c, h, w = check_in_shape(in_shape, "affine-coupling")
        super().__init__((c, h, w))
        self.checker = cfg.mask == "checkerboard"
        self.packed = cfg.mask == "checkerboard-packed"
        self.reverse = cfg.reverse
        if self.packed:
            if w % 2:
                raise ConfigError(f"affine-coupling: checkerboard-packed needs an even width, got in_shape "
                                  f"{(c, h, w)}", path="mask")
            self.parity = 1 if cfg.reverse else 0
            self.register_buffer("odd_rows", (torch.arange(h) % 2 == 1).view(1, 1, h, 1), persistent=False)
            net_in, transformed = c, c
        elif self.checker:
            net_in, transformed = c, c
            mask = checkerboard(h, w, 1 if cfg.reverse else 0)
            # Masks are fixed: buffers (moved with the module, not saved), not recomputed per call.
            self.register_buffer("mask", mask, persistent=False)
            self.register_buffer("inv_mask", 1.0 - mask, persistent=False)
        else:
            if c < 2:
                raise ConfigError(f"affine-coupling: a channel mask needs at least 2 channels, got in_shape "
                                  f"{(c, h, w)}; use mask = \"checkerboard\"", path="mask")
            self.split = c // 2
            cond = self.split if not cfg.reverse else c - self.split
            net_in, transformed = cond, c - cond
        self.transformed = transformed
        if cfg.edge_bias and cfg.net != "conv":
            raise ConfigError(f'edge_bias is Glow\'s, for net = "conv"; net = "{cfg.net}" pads with plain zeros: '
                              'set net = "conv" or drop edge_bias', path="edge_bias")
        if cfg.net == "resnet":
            self.net: nn.Module = ResNetST(net_in, 2 * transformed, hidden=cfg.hidden, blocks=cfg.blocks,
                                           norm=cfg.norm, batch_norm=cfg.batch_norm,
                                           logscale_factor=cfg.logscale_factor)
        elif cfg.net == "reference":
            if cfg.logscale_factor > 0:
                raise ConfigError('logscale_factor applies to a zero-initialised last layer; net = "reference" '
                                  "has none", path="logscale_factor")
            # The reference doubles the batch-normalized input in its checkerboard couplings only, and
            # gives the mask as an input channel where the network sees the masked full-size input.
            self.net = ReferenceST(net_in, 2 * transformed, hidden=cfg.hidden, blocks=cfg.blocks, norm=cfg.norm,
                                   batch_norm=cfg.batch_norm, mask=self.mask if self.checker else None,
                                   input_scale=1.0 if cfg.mask == "channel" else 2.0)
        else:
            self.net = ConvST(net_in, 2 * transformed, hidden=cfg.hidden, norm=cfg.norm,
                              batch_norm=cfg.batch_norm, logscale_factor=cfg.logscale_factor,
                              edge_bias=cfg.edge_bias)
        if cfg.net == "reference":
            # One scalar per coupling: 0 in checkerboard couplings, 1 in channel couplings (the reference's
            # ``rescaling_scale`` and ``scale``), broadcast to the channels by ``_bound``.
            self.scale_bound = nn.Parameter(torch.full((1, 1, 1, 1), 1.0 if cfg.mask == "channel" else 0.0))
        else:
            self.scale_bound = nn.Parameter(torch.ones(1, transformed, 1, 1))

    def transformed_region(self) -> torch.Tensor:
        """1 where this coupling changes its input, 0 where it passes it through: ``[1, 1, H, W]`` for a
        checkerboard (masked or packed), ``[1, C, 1, 1]`` for a channel mask."""
        c, h, w = self.in_shape
        if self.checker:
            return self.inv_mask.clone()
        if self.packed:
            return checkerboard(h, w, 1 - self.parity)
        region = torch.zeros(1, c, 1, 1)
        if self.reverse:
            region[:, : self.split] = 1.0
        else:
            region[:, self.split:] = 1.0
        return region

    def _bound(self) -> torch.Tensor:
        """The tanh bound per transformed channel (``[1, T, 1, 1]``; a scalar bound is broadcast)."""
        b = self.scale_bound
        return b if b.shape[1] == self.transformed else b.expand(1, self.transformed, 1, 1)

    def _halves(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(conditioning, transformed) channel halves."""
        a, b = x[:, : self.split], x[:, self.split:]
        return (b, a) if self.reverse else (a, b)

    def _join(self, cond: torch.Tensor, trans: torch.Tensor) -> torch.Tensor:
        return torch.cat((trans, cond) if self.reverse else (cond, trans), dim=1)

    def _pack(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Checkerboard halves as (conditioning, transformed), each ``[B, C, H, W/2]``."""
        b, c, h, w = x.shape
        pairs = x.view(b, c, h, w // 2, 2)
        first, second = pairs[..., self.parity], pairs[..., 1 - self.parity]
        # On odd rows the checkerboard shifts by one pixel, so the two slots swap roles.
        return torch.where(self.odd_rows, second, first), torch.where(self.odd_rows, first, second)

    def _unpack(self, cond: torch.Tensor, trans: torch.Tensor) -> torch.Tensor:
        first = torch.where(self.odd_rows, trans, cond)
        second = torch.where(self.odd_rows, cond, trans)
        pairs = (first, second) if self.parity == 0 else (second, first)
        b, c, h, half = cond.shape
        return torch.stack(pairs, dim=-1).view(b, c, h, 2 * half)

    def _st(self, inp: torch.Tensor, update_stats: bool = True) -> torch.Tensor:
        """The network's raw log-scale and shift for ``inp``, in float32 (bfloat16 inside within
        :class:`avade.nn.precision.CouplingNetsInBF16`: the affine map stays float32 either way)."""
        with coupling_net_precision(inp):
            out = self.net(inp, update_stats=update_stats)
        return full_precision(out)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y, logdet [B])``: the transformed half (or mask region) scaled and shifted by ``net`` of the other."""
        if self.packed:
            cond, trans = self._pack(x)
            y, logdet = affine_forward(self._st(cond), trans, self._bound())
            return self._unpack(cond, y), logdet
        if self.checker:
            # Zeroing log s and t on the conditioning pixels (inv_mask = 0) makes y = x there exactly.
            return affine_forward(self._st(x * self.mask), x, self._bound(), self.inv_mask)
        cond, trans = self._halves(x)
        y, logdet = affine_forward(self._st(cond), trans, self._bound())
        return self._join(cond, y), logdet

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """``x`` from ``y``; the coupling net's batch-norm statistics stay as they are."""
        # Sampling (the inverse direction) must not move the batch-norm running statistics, which
        # eval mode uses for the likelihood of data.
        if self.packed:
            cond, trans = self._pack(y)
            return self._unpack(cond, affine_inverse(self._st(cond, update_stats=False), trans, self._bound()))
        if self.checker:
            return affine_inverse(self._st(y * self.mask, update_stats=False), y, self._bound(), self.inv_mask)
        cond, trans = self._halves(y)
        return self._join(cond, affine_inverse(self._st(cond, update_stats=False), trans, self._bound()))
