"""Activations with a faster CPU path than torch's own kernels.

torch's CPU ELU evaluates ``expm1`` element by element, without SIMD: about 6 ns per float, 10-15x
slower than ``exp`` (measured on an AVX-512 EPYC with torch 2.14; ``log1p`` and ``softplus`` share
the problem). In the VAE's encoders and decoders that made ELU alone 8 % of an AV-ADE train step and
over 20 % of the quickstart's. Here ELU is ``max(x, exp(min(x, 0)) - 1)`` from
vectorized ops; the difference to ``expm1`` is float rounding of the result (< 1e-7 absolute in float32;
in bfloat16, under CPU autocast, up to one bf16 rounding step near 1, e.g. 0 for -1e-3, as bf16 has no
finer step there), and
the backward is torch's own ``elu_backward`` on the output, so gradients keep torch's formula. On
other devices torch's fused kernel is already fast and is used as is.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


class _ELU(torch.autograd.Function):
    generate_vmap_rule = True  # torch.func transforms (vmap, jacrev) work through it

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:
        # elu(x) = max(x, exp(min(x, 0)) - 1), since exp(x) - 1 >= x everywhere: one buffer, in place.
        return x.clamp(max=0.0).exp_().sub_(1.0).clamp_min_(x)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (out,) = ctx.saved_tensors
        return torch.ops.aten.elu_backward(grad, 1.0, 1.0, 1.0, True, out)


def elu(x: torch.Tensor) -> torch.Tensor:
    """``F.elu(x)`` (alpha 1), computed from ``exp`` on CPU (see the module docstring).

    Unlike ``F.elu``, the backward reads the *output*: modify the result in place and autograd
    raises (as for ``F.relu``); take a copy first."""
    return _ELU.apply(x) if x.device.type == "cpu" else F.elu(x)
