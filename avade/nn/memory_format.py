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

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:
        return _in_format(x, torch.channels_last)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        pass

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous()


class _Contiguous(torch.autograd.Function):
    """``x`` as contiguous NCHW; the gradient leaves in the format ``x`` had."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:
        return x.contiguous()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        ctx.channels_last = _strictly_channels_last(inputs[0])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return _in_format(grad, torch.channels_last) if ctx.channels_last else grad


def _in_format(x: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    try:
        return x.contiguous(memory_format=memory_format)
    except RuntimeError as exc:  # inside torch.func.vmap formats cannot be set (nor do they matter)
        if "vmap" not in str(exc):
            raise
        return x


def _strictly_channels_last(x: torch.Tensor) -> bool:
    """Channels-last and not also contiguous (with C = 1 or 1x1 maps a tensor is both, and its
    gradient is expected contiguous)."""
    try:
        return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    except RuntimeError as exc:
        if "vmap" not in str(exc):
            raise
        return False


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """Enter a channels-last island (4-D tensors only; anything else is returned as is)."""
    return _ChannelsLast.apply(x) if x.dim() == 4 else x


def to_contiguous(x: torch.Tensor) -> torch.Tensor:
    """Leave a channels-last island: contiguous NCHW, gradient converted back on the way in."""
    return _Contiguous.apply(x) if x.dim() == 4 else x
