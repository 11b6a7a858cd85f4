"""The flow contract as code: :class:`Flow` and the composition :class:`FlowSequence`."""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterable, Sequence
from typing import cast

import torch
from torch import nn

from avade.errors import ConfigError, DataError
from avade.nets.shapes import check_batch

Shape = tuple[int, int, int]


def check_in_shape(in_shape: Sequence[int], what: str) -> Shape:
    """``in_shape`` as a ``(C, H, W)`` tuple of positive ints, or a ConfigError naming ``what``."""
    try:
        if isinstance(in_shape, str | bytes) or any(isinstance(s, bool) for s in in_shape):
            raise TypeError
        shape = tuple(operator.index(s) for s in in_shape)  # ints, also numpy/torch integer scalars
    except TypeError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"{what}: in_shape must be (C, H, W) with positive integers, got {in_shape!r}",
                          path="in_shape")
    return shape  # type: ignore[return-value]


class Flow(nn.Module):
    """An invertible map: ``forward(x) -> (y, logdet)`` and ``inverse(y) -> x``.

    ``logdet`` is ``log|det dy/dx|`` per sample (natural log, shape ``[B]``). ``in_shape`` and
    ``out_shape`` are the per-sample shapes ``(C, H, W)``; they are equal for every registered flow
    except the ``squeeze`` building block.
    """

    def __init__(self, in_shape: Shape, out_shape: Shape | None = None) -> None:
        super().__init__()
        self.in_shape: Shape = tuple(in_shape)  # type: ignore[assignment]
        self.out_shape: Shape = tuple(out_shape) if out_shape is not None else self.in_shape  # type: ignore[assignment]

    def check_input(self, x: torch.Tensor, name: str, inverse: bool = False) -> None:
        """A DataError unless ``x`` is a floating-point batch ``[B, *in_shape]`` (``[B, *out_shape]`` for the
        inverse): an unbatched image or another size would otherwise broadcast into wrong numbers, or fail deep
        inside, as would integer images."""
        check_batch(x, self.out_shape if inverse else self.in_shape, f"flow '{name}'",
                    "outputs" if inverse else "inputs")
        if not x.is_floating_point():  # uint8 images failed deep in torch (glow) or ran as 0..255 (realnvp)
            raise DataError(f"flow '{name}' takes floating-point {'outputs' if inverse else 'inputs'}, got "
                            f"{x.dtype}; convert first, e.g. x.float() (a model's log_likelihood takes uint8 "
                            "images and preprocesses them itself)")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover - abstract
        """``(y, logdet)``: ``y`` of shape ``[B, *out_shape]`` and ``log|det dy/dx|`` per sample, ``[B]``."""
        raise NotImplementedError

    def inverse(self, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """``x`` from ``y`` (``[B, *out_shape]`` -> ``[B, *in_shape]``): sampling runs the flow this way."""
        raise NotImplementedError


class FlowSequence(Flow):
    """Flows applied one after the other; log-determinants add up, the inverse runs in reverse order."""

    def __init__(self, flows: Iterable[Flow], in_shape: Shape | None = None) -> None:
        flows = list(flows)
        if not flows and in_shape is None:
            raise ValueError("an empty FlowSequence needs in_shape")
        for a, b in itertools.pairwise(flows):
            if a.out_shape != b.in_shape:
                raise ValueError(f"flow shapes do not chain: {type(a).__name__} gives {a.out_shape}, "
                                 f"{type(b).__name__} expects {b.in_shape}")
        first = flows[0].in_shape if flows else in_shape
        last = flows[-1].out_shape if flows else in_shape
        super().__init__(first, last)  # type: ignore[arg-type]
        self.flows = nn.ModuleList(flows)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each flow in order; the per-sample log-determinants summed."""
        logdet = x.new_zeros(x.shape[0])
        for flow in self.flows:
            x, ld = flow(x)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """Each flow's inverse, last flow first."""
        for flow in reversed(self.flows):
            y = cast(Flow, flow).inverse(y)
        return y
