"""Channels-last islands: run a convolutional network in NHWC while its callers stay NCHW.

oneDNN (CPU) and cuDNN (tensor cores) run convolutions fastest on channels-last tensors, but an
elementwise op that mixes a channels-last and a contiguous operand falls back to a strided loop
that is several times slower (up to ~40x for ReLU's backward on CPU). So the format is switched
only at the boundary of a network: inputs are converted on entry, outputs on exit, and each
conversion's backward converts the gradient back, so no mixed-format op is left anywhere.
"""

from __future__ import annotations

from typing import Any

import torch


class _ChannelsLast(torch.autograd.Function):
    """``x`` as channels-last; the gradient leaves in ``x``'s own (contiguous) format."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous()


class _Contiguous(torch.autograd.Function):
    """``x`` as contiguous NCHW; the gradient leaves channels-last, as ``x`` was produced."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous(memory_format=torch.channels_last)


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """Enter a channels-last island (4-D tensors only; anything else is returned as is)."""
    return _ChannelsLast.apply(x) if x.dim() == 4 else x


def to_contiguous(x: torch.Tensor) -> torch.Tensor:
    """Leave a channels-last island: contiguous NCHW, gradient converted back on the way in."""
    return _Contiguous.apply(x) if x.dim() == 4 else x
