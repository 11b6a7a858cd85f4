"""Channels-last islands: formats inside and outside, gradients back in the caller's format."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import avade
from avade.nn.memory_format import to_channels_last, to_contiguous

CL = torch.channels_last


def test_island_formats_and_gradient_formats() -> None:
    x = torch.randn(2, 3, 5, 6, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    inside = to_channels_last(x)
    assert inside.is_contiguous(memory_format=CL)
    h = F.conv2d(inside, w, padding=1)
    assert h.is_contiguous(memory_format=CL)
    out = to_contiguous(h)
    assert out.is_contiguous()
    grads = {}
    out.register_hook(lambda g: grads.setdefault("out", g))
    h.register_hook(lambda g: grads.setdefault("h", g))
    x.register_hook(lambda g: grads.setdefault("x", g))
    out.backward(torch.randn_like(out))
    # The gradient is converted at each border, so no op ever mixes the two formats.
    assert grads["h"].is_contiguous(memory_format=CL)
    assert grads["x"].is_contiguous()
    torch.testing.assert_close(x.grad, torch.autograd.grad(F.conv2d(x, w, padding=1), x, grads["out"])[0])


def test_island_is_transparent_to_double_backward() -> None:
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda t: to_contiguous(to_channels_last(t).pow(3)), (x,))


def test_non_4d_tensors_pass_through() -> None:
    v = torch.randn(3, 4)
    assert to_channels_last(v) is v and to_contiguous(v) is v


def test_coupling_networks_keep_the_callers_format() -> None:
    flow = avade.create("flow", "glow", in_shape=(3, 8, 8), scales=2, steps=1, hidden=8).train()
    x = torch.randn(4, 3, 8, 8, requires_grad=True)
    y, logdet = flow(x)
    assert y.is_contiguous()
    (y.square().sum() - logdet.sum()).backward()
    assert x.grad is not None and x.grad.is_contiguous()


def test_single_channel_gradient_stays_in_the_callers_format() -> None:
    # [B, 1, H, W] is both contiguous and channels-last: nothing to convert back on the way in.
    x = torch.randn(2, 1, 4, 4, requires_grad=True)
    w = torch.randn(1, 1, 3, 3)
    seen = {}
    h = F.conv2d(to_channels_last(x), w, padding=1)
    h.register_hook(lambda g: seen.setdefault("h", g))
    to_contiguous(h).backward(torch.randn(2, 1, 4, 4))
    assert seen["h"].is_contiguous()
