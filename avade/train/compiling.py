"""``train.compile``: what the trainer compiles, and the backend check.

Networks are compiled *in place* (``nn.Module.compile`` plus instance attributes for other methods), so
state-dict keys do not change and checkpoints stay portable between compiled and eager runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from avade.errors import ConfigError

if TYPE_CHECKING:
    from avade.contracts import ModuleLike


def compile_in_place(module: ModuleLike, backend: str, methods: Sequence[str] = ("inverse",)) -> None:
    """Compile ``module``'s forward and those of ``methods`` it has, in place.

    A flow's inverse is compiled with its forward: an eager inverse beside a compiled forward breaks
    batch norm, whose running statistics the compiled forward updates in place while the eager
    inverse's backward still holds them (autograd refuses the step).
    """
    module.compile(backend=backend)
    for name in methods:
        method = getattr(module, name, None)
        if callable(method) and not isinstance(method, nn.Module):
            setattr(module, name, torch.compile(method, backend=backend))


def check_compile_backend(backend: str) -> None:
    """ConfigError (on ``train.compile_backend``) unless ``backend`` is a registered torch.compile
    backend, debugging ones (``aot_eager``, ``eager``) included."""
    import torch._dynamo

    if backend not in torch._dynamo.list_backends(exclude_tags=()):
        main = ", ".join(torch._dynamo.list_backends())  # without torch's debugging/test-only backends
        raise ConfigError(f"unknown torch.compile backend {backend!r}; choose one of {main} (or, to debug, "
                          "aot_eager / eager)", path="train.compile_backend")
