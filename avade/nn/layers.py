"""Normalized layers built by name, so that a recipe chooses the normalization, not the code."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from torch import nn

if TYPE_CHECKING:
    from avade.contracts import ModuleLike

M = TypeVar("M", bound="nn.Module | ModuleLike")

_NORM_OPTIONS: contextvars.ContextVar[Mapping[str, Mapping[str, Any]] | None] = contextvars.ContextVar(
    "avade_norm_options", default=None)


@contextlib.contextmanager
def norm_options(options: Mapping[str, Mapping[str, Any]]) -> Iterator[None]:
    """Within the block, every :func:`normed` layer of a norm named in ``options`` gets those options
    (a recipe's ``model.norm_options``: e.g. weight norm's data-dependent init in every component)."""
    token = _NORM_OPTIONS.set(options)
    try:
        yield
    finally:
        _NORM_OPTIONS.reset(token)


def current_norm_options() -> Mapping[str, Mapping[str, Any]]:
    """The options of the enclosing :func:`norm_options` block (empty outside one)."""
    return _NORM_OPTIONS.get() or {}


def norm_option(norm: str, key: str, default: Any) -> Any:
    """Option ``key`` of norm ``norm`` from an enclosing :func:`norm_options` (``default`` outside one);
    for layers that normalize their weights themselves (IAF's masked convolutions)."""
    return (_NORM_OPTIONS.get() or {}).get(norm, {}).get(key, default)


def normed(layer: nn.Conv2d | nn.Linear, norm: str = "weight-norm", num_classes: int | None = None,
           **options: Any) -> nn.Module:
    """Wrap ``layer`` (a convolution or linear layer: norms read its output channels off ``weight``) in the
    registered norm ``norm``; the result has ``forward(x, y=None)``. Options given here win over those of an
    enclosing :func:`norm_options`."""
    from avade.registry import get_registry

    merged = {**(_NORM_OPTIONS.get() or {}).get(norm, {}), **options}
    return get_registry().create("norm", norm, layer=layer, num_classes=num_classes, **merged)


@contextlib.contextmanager
def frozen(module: M) -> Iterator[M]:
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
