"""``train.compile``: what the trainer compiles, and the backend check.

Networks are compiled *in place* (``nn.Module.compile`` plus instance attributes for other methods), so
state-dict keys do not change and checkpoints stay portable between compiled and eager runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import nn

from avade.errors import ConfigError

if TYPE_CHECKING:
    from avade.contracts import ModuleLike

_F = TypeVar("_F", bound=Callable[..., Any])


def compile_options(backend: str) -> dict[str, Any]:
    """``torch.compile`` keyword arguments for ``backend``. Inductor runs random ops (the posterior's and the
    samples' noise) as ATen's rather than fused into its generated kernels (``fallback_random``): a compiled step
    then draws the eager step's random numbers, and torch 2.11's inductor failed to build such a fused kernel
    (``randn_like`` inside a reduction) for ``av_ade_wg_rd`` on an H200."""
    return {"options": {"fallback_random": True}} if backend == "inductor" else {}


def compiled(fn: _F, backend: str) -> _F:
    """``fn`` compiled with ``backend`` (and :func:`compile_options`)."""
    return torch.compile(fn, backend=backend, **compile_options(backend))  # type: ignore[return-value]


def compile_in_place(module: ModuleLike, backend: str, methods: Sequence[str] = ("inverse",)) -> None:
    """Compile ``module``'s forward and those of ``methods`` it has, in place.

    A flow's inverse is compiled with its forward: an eager inverse beside a compiled forward breaks
    batch norm, whose running statistics the compiled forward updates in place while the eager
    inverse's backward still holds them (autograd refuses the step).
    """
    module.compile(backend=backend, **compile_options(backend))
    for name in methods:
        method = getattr(module, name, None)
        if callable(method) and not isinstance(method, nn.Module):
            setattr(module, name, compiled(method, backend))


def check_compile_backend(backend: str) -> None:
    """ConfigError (on ``train.compile_backend``) unless ``backend`` is a registered torch.compile
    backend, debugging ones (``aot_eager``, ``eager``) included."""
    import torch._dynamo

    if backend not in torch._dynamo.list_backends(exclude_tags=()):
        main = ", ".join(torch._dynamo.list_backends())  # without torch's debugging/test-only backends
        raise ConfigError(f"unknown torch.compile backend {backend!r}; choose one of {main} (or, to debug, "
                          "aot_eager / eager)", path="train.compile_backend")
