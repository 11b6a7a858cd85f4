"""Shape checks shared by the components: of their configured shapes (one-line :class:`ConfigError`) and
of the batches they are given (:class:`DataError`)."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import torch

from avade.errors import ConfigError, DataError

Shape = tuple[int, int, int]


def as_shape(value: Sequence[int], what: str) -> Shape:
    """``value`` as a ``(C, H, W)`` tuple of positive ints, or a ConfigError naming ``what``."""
    try:
        shape = tuple(operator.index(s) for s in value)
    except TypeError:
        shape = ()
    if len(shape) != 3 or min(shape) <= 0:
        raise ConfigError(f"{what} must be (channels, height, width) with positive ints, got {value!r}")
    return shape  # type: ignore[return-value]


def check_divisible(in_shape: Shape, levels: int, who: str) -> None:
    """Height and width must halve ``levels - 1`` times exactly."""
    factor = 2 ** (levels - 1)
    _, h, w = in_shape
    if h % factor or w % factor:
        raise ConfigError(
            f"{who}: input resolution {h}x{w} is not divisible by {factor} (= 2**(len(channels)-1) for "
            f"{levels} stages); use a resolution divisible by {factor} or fewer entries in `channels`"
        )


def upsample_factor(lower: Shape, upper: Shape, who: str) -> int:
    """The integer factor by which stage ``upper`` (coarser) upsamples to stage ``lower`` (finer)."""
    (_, h0, w0), (_, h1, w1) = lower, upper
    if h0 % h1 or w0 % w1 or h0 // h1 != w0 // w1:
        raise ConfigError(
            f"{who}: stage of size {h1}x{w1} cannot be upsampled to {h0}x{w0} by one integer factor; "
            "stage_shapes must go from fine (index 0) to coarse (last) by integer factors"
        )
    return h0 // h1


def check_stages(stage_shapes: Sequence[Sequence[int]], who: str) -> list[Shape]:
    """``stage_shapes`` as a non-empty list of ``(C, H, W)`` tuples."""
    shapes = [as_shape(s, f"{who}: stage_shapes[{i}]") for i, s in enumerate(stage_shapes)]
    if not shapes:
        raise ConfigError(f"{who}: stage_shapes is empty; the encoder must have at least one stage")
    return shapes


def halving_stages(channels: Sequence[int], in_shape: Sequence[int], who: str) -> list[Shape]:
    """Stage layout of an encoder whose stage 0 keeps the resolution and each later stage halves it
    (ConfigError if the resolution is not divisible)."""
    shape = as_shape(in_shape, f"{who}: in_shape")
    check_divisible(shape, len(channels), who)
    _, h, w = shape
    return [(c, h // 2**i, w // 2**i) for i, c in enumerate(channels)]


def check_batch(x: Any, shape: Sequence[int], who: str, what: str = "inputs") -> None:
    """A DataError unless ``x`` is a batch ``[B, *shape]``: an unbatched image or another size would otherwise
    broadcast into wrong numbers, or fail later, elsewhere (``who`` names the component, ``what`` the tensor)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != tuple(shape):
        got = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise DataError(f"{who} was built for {what} [B, {', '.join(map(str, shape))}], got {got}")
