"""Generator networks (kinds ``encoder`` and ``decoder``) of the VAE.

An encoder is built as ``Class(cfg, *, in_shape, num_classes=None)`` and exposes ``stage_shapes``; a
decoder as ``Class(cfg, *, stage_shapes, out_shape, num_classes=None)``. See :mod:`avade.nets.base`
for the interfaces the model drives. Nothing here imports torch (registration is lazy).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from avade.registry import Registry


def register(registry: Registry) -> None:
    """Register the built-in encoders and decoders."""
    r = registry.register
    r("encoder", "conv", factory="avade.nets.conv:ConvEncoder", config="avade.nets.configs:ConvEncoderConfig",
      summary="Plain strided conv encoder (ELU); stage 0 at full resolution, each later stage halves it.")
    r("decoder", "conv", factory="avade.nets.conv:ConvDecoder", config="avade.nets.configs:ConvDecoderConfig",
      summary="Mirror of the conv encoder: ELU, nearest upsample + conv per stage, conv3x3 head (the mean).")
    r("encoder", "resnet", factory="avade.nets.resnet:ResNetEncoder",
      config="avade.nets.configs:ResNetEncoderConfig",
      summary="Residual IAF-block encoder of AV-ADE Table 6b: conv 16 -> 32 -> down 64 -> 128 -> 256.")
    r("decoder", "resnet", factory="avade.nets.resnet:ResNetDecoder",
      config="avade.nets.configs:ResNetDecoderConfig",
      summary="Residual IAF-block decoder of AV-ADE Table 6b: up 256 -> 128 -> 64 -> 32 -> conv3x3 head.")
