"""Densities in float32 under mixed precision.

CUDA autocast runs ``exp``, ``log``, ``softplus`` and the like in float32, but CPU autocast has no such
list: there a log-density of bfloat16 network outputs would be computed in bfloat16 (8 bits of
mantissa). The posteriors and decoder densities therefore lift their parameters to float32 first, on
every device, and the bound is summed in float32.
"""

from __future__ import annotations

import torch

_HALF = (torch.bfloat16, torch.float16)


def full_precision(t: torch.Tensor) -> torch.Tensor:
    """``t`` as float32 if it is a 16-bit float; any other tensor (float32, float64, ints) unchanged."""
    return t.float() if t.dtype in _HALF else t
