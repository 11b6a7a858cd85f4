"""A Conv2d whose bias is a separate add under ``torch.compile``, optionally with Glow's edge bias."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from avade.errors import ConfigError


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters, state-dict keys and eager computation) that, while being
    compiled, convolves without bias and adds the bias afterwards.

    Why: compiled, the add fuses into the elementwise op that follows (a ReLU, the coupling's affine
    map) and the bias gradient into that op's backward, whereas oneDNN computes the bias gradient in
    a pass of its own over the output gradient. Eager keeps the fused oneDNN call (a separate add
    would be one more pass over the activation). Norm wrappers (e.g. weight norm's parametrization)
    work unchanged: they go through ``self.weight``.

    ``edge_bias`` (a stride-1 "same" convolution): Glow's ``add_edge_padding`` (openai/glow), an extra
    input channel that is 1 in the zero padding and 0 on the image, so the network can tell the border's
    zeros from data. Computed as the separate weight ``edge_weight`` (``[out, 1, k, k]``) convolved with
    that border map, one ``[1, out, H, W]`` term broadcast over the batch: by linearity the convolution
    of the concatenated input, without copying the activation. ``edge_weight`` is initialised like the
    weight's own entries and is outside a weight-norm wrapper's normalization (Glow normalizes with
    actnorm after the convolution, which covers it); weight norm's data-dependent init scales it with
    the rest of the output.
    """

    def __init__(self, *args: object, edge_bias: bool = False, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.edge_weight: nn.Parameter | None = None
        if edge_bias:
            k = self.kernel_size
            if self.padding == "same" and all(s % 2 for s in k) and self.dilation == (1, 1):
                # the same convolution, its padding as numbers: the edge term needs the border's width
                self.padding = (k[0] // 2, k[1] // 2)
            if self.stride != (1, 1) or self.dilation != (1, 1) or self.groups != 1 or any(s % 2 == 0 for s in k) \
                    or self.padding != (k[0] // 2, k[1] // 2) or self.padding_mode != "zeros":
                raise ConfigError("edge_bias needs an undilated, stride-1, zero-padded 'same' convolution with an "
                                  "odd kernel", path="edge_bias")
            if self.padding == (0, 0):
                return  # a 1x1 convolution pads nothing: no border to mark (as Glow's)
            self.edge_weight = nn.Parameter(torch.empty(self.out_channels, 1, *k))
            # PyTorch's default conv init, as if the border map were one more input channel
            bound = 1.0 / ((self.in_channels + 1) * k[0] * k[1]) ** 0.5
            nn.init.uniform_(self.edge_weight, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """As ``nn.Conv2d``, plus the edge term with ``edge_bias``; compiled, the bias is added after the conv."""
        if self.bias is not None and torch.compiler.is_compiling():
            y = self._conv_forward(x, self.weight, None)
            y = y + self.bias.to(y.dtype).view(1, -1, 1, 1)  # autocast: y may be bf16, as eager's would be
        else:
            y = super().forward(x)
        if self.edge_weight is not None:
            y = self._add_edge_term(y)
        return y

    def _add_edge_term(self, y: torch.Tensor) -> torch.Tensor:
        """``y`` plus :meth:`edge_term`. Eager, on the border strips only (:class:`_AddOnBorder`): a plain
        broadcast add and the batch sum of its backward are two more passes over a wide activation, which
        cost Glow's default step about 20 % on CPU. Compiled, the plain add fuses into the next op."""
        height, width = y.shape[-2:]
        term = self.edge_term(height, width, y)
        assert not isinstance(self.padding, str)  # (edge_bias: numbers, see __init__)
        ph, pw = self.padding
        if torch.compiler.is_compiling() or height <= 2 * ph or width <= 2 * pw or _functorch_active():
            return y + term  # (tiny maps: all border; torch.func transforms: no in-place Function)
        return _AddOnBorder.apply(y, term, ph, pw)

    def edge_term(self, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
        """The edge channel's contribution, ``[1, out, H, W]``: nonzero on the border pixels only."""
        assert self.edge_weight is not None
        assert not isinstance(self.padding, str)  # (edge_bias: numbers, see __init__)
        ph, pw = self.padding
        border = like.new_ones(1, 1, height + 2 * ph, width + 2 * pw)
        border[..., ph:ph + height, pw:pw + width] = 0
        # The convolution of the border map with edge_weight, as one small matrix product: [out, k*k] times
        # the map's [k*k, H*W] patches (oneDNN's path for a 1-channel, batch-1 convolution is slower).
        patches = F.unfold(border, self.kernel_size)[0]
        weight = self.edge_weight.to(like.dtype).flatten(1)
        return (weight @ patches).view(1, -1, height, width)


def _functorch_active() -> bool:
    """Inside a torch.func transform (jacrev, vmap, grad), which :class:`_AddOnBorder` (an in-place
    Function) does not support; a plain ``nn.Conv2d`` works there, and so the edge term's plain add."""
    active = getattr(torch._C, "_are_functorch_transforms_active", None)  # (private: looked up, not assumed)
    return bool(active is not None and active())


def _border_strips(height: int, width: int, ph: int, pw: int) -> tuple[tuple[Any, ...], ...]:
    """Index tuples of disjoint strips of width ``ph`` / ``pw`` that cover a map's border: the first and
    last rows (one stepped slice for width 1, as for a 3x3 kernel), then the first and last columns."""
    rows = slice(ph, height - ph)
    top_bottom = (((..., slice(0, height, height - 1), slice(None)),) if ph == 1 else
                  ((..., slice(0, ph), slice(None)), (..., slice(height - ph, height), slice(None))))
    sides = (((..., rows, slice(0, width, width - 1)),) if pw == 1 else
             ((..., rows, slice(0, pw)), (..., rows, slice(width - pw, width))))
    return top_bottom + sides


class _AddOnBorder(torch.autograd.Function):
    """``y + term`` for a ``[1, C, H, W]`` term that is zero off the border strips: added in place on the
    strips of ``y`` (a convolution's fresh output, which no backward needs), and the term's gradient
    summed over the batch on the strips only."""

    @staticmethod
    def forward(ctx: Any, y: torch.Tensor, term: torch.Tensor, ph: int, pw: int) -> torch.Tensor:
        ctx.pads = (ph, pw)
        for strip in _border_strips(y.shape[-2], y.shape[-1], ph, pw):
            y[strip] += term[strip]
        ctx.mark_dirty(y)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None, None]:
        grad_term = grad.new_zeros((1, *grad.shape[1:]))
        for strip in _border_strips(grad.shape[-2], grad.shape[-1], *ctx.pads):
            grad_term[strip] = grad[strip].sum(0, keepdim=True)
        return grad, grad_term, None, None
