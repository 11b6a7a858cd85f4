"""Normalized layers built by name, so that a recipe chooses the normalization, not the code."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from torch import nn


def normed(layer: nn.Module, norm: str = "weight-norm", num_classes: int | None = None,
           **options: Any) -> nn.Module:
    """Wrap ``layer`` in the registered norm ``norm``; the result has ``forward(x, y=None)``."""
    from avade.registry import get_registry

    return get_registry().create("norm", norm, layer=layer, num_classes=num_classes, **options)


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """Within the block, gradients flow *through* ``module`` to its inputs but not into its parameters
    (each parameter's ``requires_grad`` is restored afterwards)."""
    params = list(module.parameters())
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)
