"""Invertible flows (kind ``flow``): the feature map f of AV-ADE / V-ADE.

Contract: ``avade.create("flow", name, in_shape=(C, H, W), **config)`` returns an ``nn.Module`` with
``forward(x) -> (y, logdet)`` and ``inverse(y) -> x``. ``y`` has the shape of ``x`` (multi-scale parts
are re-assembled into the full tensor) and ``logdet`` is ``log|det df/dx|`` per sample, shape ``[B]``.
The one exception is the ``squeeze`` building block, which by nature returns ``(4C, H/2, W/2)``; every
flow exposes ``in_shape`` and ``out_shape`` so a model builder can check this.

This module must not import torch: it only registers lazy ``"module:attr"`` references.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from avade.registry import Registry


def register(registry: Registry) -> None:
    """Register the built-in flows and their building blocks."""
    r = registry.register
    r("flow", "realnvp", factory="avade.flows.realnvp:RealNVP", config="avade.flows.configs:RealNVPConfig",
      summary="Real-NVP (Dinh et al. 2017): multi-scale affine couplings with residual s/t networks.")
    r("flow", "glow", factory="avade.flows.glow:Glow", config="avade.flows.configs:GlowConfig",
      summary="Glow (Kingma & Dhariwal 2018): actnorm, 1x1 invconv, affine coupling; learned split prior.")
    r("flow", "identity", factory="avade.flows.identity:IdentityFlow",
      config="avade.flows.configs:IdentityConfig",
      summary="The identity map (y = x, logdet 0), for tests and ablations.")
    r("flow", "actnorm", factory="avade.flows.actnorm:ActNorm", config="avade.flows.configs:ActNormConfig",
      summary="Per-channel affine flow with data-dependent init (Glow's actnorm).")
    r("flow", "batch-norm", factory="avade.flows.batch_norm:BatchNormFlow",
      config="avade.flows.configs:BatchNormFlowConfig",
      summary="Batch normalization as a flow (Real-NVP's normalization of each coupling's output).")
    r("flow", "invconv", factory="avade.flows.invconv:InvConv", config="avade.flows.configs:InvConvConfig",
      summary="Invertible 1x1 convolution, optionally LU-decomposed (Glow).")
    r("flow", "squeeze", factory="avade.flows.squeeze:Squeeze", config="avade.flows.configs:SqueezeConfig",
      summary="Space-to-depth 2x2 squeeze (C, H, W) -> (4C, H/2, W/2); a building block that changes shape.")
    r("flow", "affine-coupling", factory="avade.flows.coupling:AffineCoupling",
      config="avade.flows.configs:AffineCouplingConfig",
      summary="Affine coupling with a checkerboard or channel-wise mask and a tanh-bounded log-scale.")
