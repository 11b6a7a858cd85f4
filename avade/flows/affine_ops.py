"""The affine coupling's elementwise part as two fused autograd functions.

Given the s/t network's output ``h = [raw, shift]`` (``2T`` channels), the coupling computes
``log s = bound * tanh(raw)`` (optionally masked), ``y = x * exp(log s) + shift`` and
``logdet = sum(log s)`` -- and the inverse ``x = (y - shift) * exp(-log s)``. Written with plain
tensor ops, autograd records about ten nodes per coupling and as many temporaries for each
direction; here each direction is one node whose backward writes the gradient of ``h`` in one
buffer. That matters for the small tensors of a flow, where per-op overhead and fresh allocations
dominate over arithmetic.

Backward formulas (``th = tanh(raw)``, ``s = exp(log s)``, ``m`` the mask or 1):

- forward, upstream ``gy``, ``gl`` (per-sample logdet): ``gx = gy * s``,
  ``g_log_s = (gy * x * s + gl) * m``, ``g_shift = gy * m``;
- inverse, upstream ``gx`` and the output ``x``: ``gy = gx * exp(-log s)``,
  ``g_log_s = -gx * x * m``, ``g_shift = -gy * m``;
- both: ``g_raw = g_log_s * bound * (1 - th^2)``, ``g_bound = sum(g_log_s * th)``.

When the backward itself is differentiated (``create_graph=True``, e.g. a gradient penalty through
the flow), it defers to the same computation written with ordinary ops, so higher-order gradients
stay exact.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.function import FunctionCtx


def _log_scale_shift(h: torch.Tensor, bound: torch.Tensor, mask: torch.Tensor | None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    transformed = bound.shape[1]
    raw, shift = h[:, :transformed], h[:, transformed:]
    th = torch.tanh(raw)
    log_s = th * bound
    if mask is not None:
        log_s, shift = log_s * mask, shift * mask
    return th, log_s, shift


def affine_forward_reference(h: torch.Tensor, x: torch.Tensor, bound: torch.Tensor,
                             mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x * exp(log s) + shift, sum(log s))`` with ordinary (autograd-recorded) ops."""
    _, log_s, shift = _log_scale_shift(h, bound, mask)
    return x * log_s.exp() + shift, log_s.sum(dim=(1, 2, 3))


def affine_inverse_reference(h: torch.Tensor, y: torch.Tensor, bound: torch.Tensor,
                             mask: torch.Tensor | None = None) -> torch.Tensor:
    """``(y - shift) * exp(-log s)`` with ordinary (autograd-recorded) ops."""
    _, log_s, shift = _log_scale_shift(h, bound, mask)
    return (y - shift) * torch.exp(-log_s)


def _h_grad(h: torch.Tensor, g_log_s: torch.Tensor, g_shift: torch.Tensor, th: torch.Tensor,
            bound: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(gradient of ``h``, gradient of ``bound``) from the gradients of ``log s`` and ``shift``."""
    transformed = bound.shape[1]
    g_h = torch.empty_like(h)
    g_raw = g_h[:, :transformed]
    # g_raw = g_log_s * bound * (1 - th^2), computed in place in its slot of g_h.
    torch.mul(th, th, out=g_raw)
    g_raw.sub_(1.0).mul_(g_log_s).mul_(bound).neg_()
    g_h[:, transformed:] = g_shift
    g_bound = (g_log_s * th).sum(dim=(0, 2, 3), keepdim=True)
    return g_h, g_bound


class _AffineForward(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, h: torch.Tensor, x: torch.Tensor, bound: torch.Tensor,
                mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        th, log_s, shift = _log_scale_shift(h, bound, mask)
        logdet = log_s.sum(dim=(1, 2, 3))
        scale = log_s.exp_()  # log s is not needed any more: reuse its buffer
        y = torch.addcmul(shift, x, scale)
        ctx.save_for_backward(h, x, bound, mask, th, scale)
        return y, logdet

    @staticmethod
    def backward(ctx: Any, gy: torch.Tensor | None, gl: torch.Tensor | None) -> tuple[Any, ...]:
        h, x, bound, mask, th, scale = ctx.saved_tensors
        if torch.is_grad_enabled():  # double backward: differentiate the reference graph
            return _reference_grads(affine_forward_reference, (h, x, bound, mask), (gy, gl), ctx)
        if gy is None:
            gy = torch.zeros_like(x)
        gx = gy * scale
        g_log_s = gx * x
        if gl is not None:
            g_log_s.add_(gl.view(-1, 1, 1, 1))
        g_shift = gy
        if mask is not None:
            g_log_s.mul_(mask)
            g_shift = gy * mask
        g_h, g_bound = _h_grad(h, g_log_s, g_shift, th, bound)
        return g_h, gx, g_bound, None


class _AffineInverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, h: torch.Tensor, y: torch.Tensor, bound: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:
        th, log_s, shift = _log_scale_shift(h, bound, mask)
        inv_scale = log_s.neg_().exp_()
        x = (y - shift).mul_(inv_scale)
        ctx.save_for_backward(h, y, bound, mask, th, inv_scale, x)
        return x

    @staticmethod
    def backward(ctx: Any, gx: torch.Tensor) -> tuple[Any, ...]:
        h, y, bound, mask, th, inv_scale, x = ctx.saved_tensors
        if torch.is_grad_enabled():
            return _reference_grads(affine_inverse_reference, (h, y, bound, mask), (gx,), ctx)
        gy = gx * inv_scale
        g_log_s = (gx * x).neg_()
        g_shift = -gy
        if mask is not None:
            g_log_s.mul_(mask)
            g_shift.mul_(mask)
        g_h, g_bound = _h_grad(h, g_log_s, g_shift, th, bound)
        return g_h, gy, g_bound, None


def _reference_grads(fn: Any, inputs: tuple[Any, ...], grads: tuple[torch.Tensor | None, ...],
                     ctx: Any) -> tuple[Any, ...]:
    """Gradients of ``fn`` at the saved inputs, recorded for higher-order differentiation."""
    h, x, bound, mask = inputs
    with torch.enable_grad():
        outs = fn(h, x, bound, mask)
        outs = outs if isinstance(outs, tuple) else (outs,)
        pairs = [(o, g) for o, g in zip(outs, grads, strict=True) if g is not None]
        targets = [t for t in (h, x, bound) if t.requires_grad]
        got = iter(torch.autograd.grad([o for o, _ in pairs], targets, [g for _, g in pairs],
                                       create_graph=True, allow_unused=True))
    return (*[next(got) if t.requires_grad else None for t in (h, x, bound)], None)


def affine_forward(h: torch.Tensor, x: torch.Tensor, bound: torch.Tensor,
                   mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``y = x * exp(log s) + shift`` and ``logdet = sum(log s)`` per sample.

    ``h``: the s/t network's output ``[B, 2T, H, W]`` (log-scale pre-activation, then shift);
    ``x``: the transformed half ``[B, T, H, W]``; ``bound``: ``[1, T, 1, 1]``; ``mask``: optional
    ``[1, 1, H, W]`` that zeroes ``log s`` and ``shift`` where it is 0 (those pixels pass through).
    """
    return _AffineForward.apply(h, x, bound, mask)


def affine_inverse(h: torch.Tensor, y: torch.Tensor, bound: torch.Tensor,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """The inverse of :func:`affine_forward` for the same ``h``: ``x = (y - shift) * exp(-log s)``."""
    return _AffineInverse.apply(h, y, bound, mask)
