"""Densities in float32 under mixed precision.

CUDA autocast runs ``exp``, ``log``, ``softplus`` and the like in float32, but CPU autocast has no such
list: there a log-density of bfloat16 network outputs would be computed in bfloat16 (8 bits of
mantissa). The posteriors and decoder densities therefore lift their parameters to float32 first, on
every device, and the bound is summed in float32.

The flows run in float32 under autocast (their log-determinants and inverses need it), except, within
:class:`CouplingNetsInBF16`, their coupling networks: a coupling ``y_b = x_b * exp(s(x_a)) + t(x_a)`` is a
bijection with log-determinant ``sum(s)`` whatever function computes ``s`` and ``t``, so bfloat16 networks change
which flow is learned, not the exactness of its log-determinants, as long as the affine map itself stays float32.
The inverse computes ``s`` and ``t`` again from an ``x_a`` it has to float32 precision only, which in a deep flow
can round to another bfloat16 value: there the round trip is exact to ~1e-3 rather than ~1e-6.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import torch

_HALF = (torch.bfloat16, torch.float16)


def full_precision(t: torch.Tensor) -> torch.Tensor:
    """``t`` as float32 if it is a 16-bit float; any other tensor (float32, float64, ints) unchanged."""
    return t.float() if t.dtype in _HALF else t


_thread = threading.local()  # per thread, as autocast's state: .on, and .outer (the enclosing blocks' values)


def _nets_in_bf16() -> bool:
    return getattr(_thread, "on", False)


class CouplingNetsInBF16:
    """Within: the flows' coupling networks (and Glow's split priors) run under bfloat16 autocast, on the
    device of their input (``train.bf16_coupling_nets``). Reusable and re-entrant, like ``torch.autocast``, and
    like it per thread (another thread sampling meanwhile keeps float32 networks)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    def __enter__(self) -> None:
        _thread.outer = [*getattr(_thread, "outer", []), _nets_in_bf16()]
        _thread.on = self.enabled

    def __exit__(self, *exc: object) -> None:
        _thread.on = _thread.outer.pop()


class Contexts:
    """Several reusable context managers entered as one (in order; left in reverse order)."""

    def __init__(self, *managers: contextlib.AbstractContextManager[Any]) -> None:
        self.managers = managers

    def __enter__(self) -> None:
        with contextlib.ExitStack() as stack:  # (one that fails to enter leaves the earlier ones again)
            for manager in self.managers:
                stack.enter_context(manager)
            stack.pop_all()

    def __exit__(self, *exc: Any) -> None:
        for manager in reversed(self.managers):
            manager.__exit__(*exc)


def coupling_net_precision(x: torch.Tensor) -> contextlib.AbstractContextManager[Any]:
    """The precision of a coupling network called on ``x`` inside a flow: bfloat16 autocast within
    :class:`CouplingNetsInBF16` for a float32 input, else none (float32, or float64 in exactness checks). Its
    output goes through :func:`full_precision` before the affine map."""
    if _nets_in_bf16() and x.dtype == torch.float32:
        return torch.autocast(x.device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
