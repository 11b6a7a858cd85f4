"""Autoregressive (MADE / PixelCNN style) masked convolutions with weight normalization, for IAF.

Ordering. A latent tensor ``z[c, r, x]`` is ordered by spatial position in raster order (row, then
column) and, within a position, by a channel order (``order[c]`` = rank of channel ``c``). Output
``(c, r, x)`` of a network built from these layers depends only on inputs that come strictly earlier:
any channel at an earlier position, or a channel of lower rank at the same position. So the Jacobian of
an IAF step is triangular in that ordering, with ``sigma`` on its diagonal.

How the masks realise it: kernel taps before the centre (rows above; same row, columns left) are fully
connected; taps after the centre are zero; the centre tap carries the MADE channel mask built from
integer *degrees* (an input of degree k may feed a hidden unit of degree >= k; an output of degree k
reads hidden units of degree < k). Kernel 1 keeps only the centre tap: channel-autoregressive per pixel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from avade.nn.layers import norm_option
from avade.norms._init_flag import InitFlag, check_init_batch


def autoregressive_mask(kernel: int, in_degrees: torch.Tensor, out_degrees: torch.Tensor,
                        strict: bool) -> torch.Tensor:
    """The ``[out, in, kernel, kernel]`` 0/1 mask described in the module docstring."""
    c_out, c_in = len(out_degrees), len(in_degrees)
    centre = kernel // 2
    mask = torch.zeros(c_out, c_in, kernel, kernel)
    mask[:, :, :centre, :] = 1
    mask[:, :, centre, :centre] = 1
    out_d, in_d = out_degrees.view(-1, 1), in_degrees.view(1, -1)
    mask[:, :, centre, centre] = (out_d > in_d if strict else out_d >= in_d).float()
    return mask


def hidden_degrees(hidden: int, latent: int) -> torch.Tensor:
    """Degrees of hidden units, cycling through ``0 .. latent-2`` (MADE: degree latent-1 would be unused)."""
    return torch.arange(hidden) % max(latent - 1, 1)


class MaskedConv2d(nn.Module):
    """A weight-normalized conv (``w = g * (m v) / ||m v||``) whose kernel is masked by ``m``.

    Weight norm is built in rather than taken from :func:`avade.nn.normed`: the paper uses weight norm
    only in IAF, and a generic norm wrapper (e.g. conditional weight norm) may bypass the mask. It still
    takes weight norm's data-dependent init, ``init_scale`` from a recipe's ``model.norm_options``
    (``"weight-norm"``), as the IAF reference code initialises its layers.
    """

    mask: torch.Tensor  # buffers, registered in __init__

    def __init__(self, c_in: int, c_out: int, kernel: int, in_degrees: torch.Tensor,
                 out_degrees: torch.Tensor, *, strict: bool) -> None:
        super().__init__()
        self.init_scale = float(norm_option("weight-norm", "init_scale", 0.0))
        # Only with an init to do: a flag in every state dict would not load older checkpoints.
        self.initialized = InitFlag(False) if self.init_scale > 0 else None
        self.register_buffer("mask", autoregressive_mask(kernel, in_degrees, out_degrees, strict))
        v = torch.empty(c_out, c_in, kernel, kernel)
        nn.init.kaiming_uniform_(v, a=math.sqrt(5))
        self.v = nn.Parameter(v)
        # g = ||m v|| so that the initial weight is the masked default init.
        self.g = nn.Parameter(self._norm(v * self.mask).clamp_min(1e-6))
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.padding = kernel // 2

    @staticmethod
    def _norm(w: torch.Tensor) -> torch.Tensor:
        return w.flatten(1).norm(dim=1)

    def weight(self) -> torch.Tensor:
        """The effective masked, normalized weight."""
        w = self.v * self.mask
        # Rows masked entirely (kernel 1, first output channel) have no direction; they stay zero.
        return w * (self.g / self._norm(w).clamp_min(1e-12)).view(-1, 1, 1, 1)

    @torch.no_grad()
    def _data_init(self, x: torch.Tensor) -> None:
        """Scale g and set the bias so that this batch's outputs have mean 0 and std ``init_scale``."""
        out = F.conv2d(x, self.weight(), self.bias, padding=self.padding)
        check_init_batch(out, (0, 2, 3), "IAF's masked conv",
                         "turn it off (model.norm_options weight-norm init_scale = 0)")
        mean, std = out.mean((0, 2, 3)), out.std((0, 2, 3)) + 1e-6
        scale = self.init_scale / std
        self.g.mul_(scale)
        self.bias.copy_((self.bias - mean) * scale)
        assert self.initialized is not None
        self.initialized.set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The masked, weight-normalized convolution; with ``init_scale > 0`` the first training batch inits g, b."""
        if self.initialized is not None and self.training and not self.initialized.is_set():
            self._data_init(x)
        return F.conv2d(x, self.weight(), self.bias, padding=self.padding)
