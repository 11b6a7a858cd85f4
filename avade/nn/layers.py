"""Normalized layers built by name, so that a recipe chooses the normalization, not the code."""

from __future__ import annotations

from typing import Any

from torch import nn


def normed(layer: nn.Module, norm: str = "weight-norm", num_classes: int | None = None,
           **options: Any) -> nn.Module:
    """Wrap ``layer`` in the registered norm ``norm``; the result has ``forward(x, y=None)``."""
    from avade.registry import get_registry

    return get_registry().create("norm", norm, layer=layer, num_classes=num_classes, **options)
