"""Discriminators (kind ``discriminator``): the critics of the quality-driven loss L_Q.

Every discriminator is built as ``Class(cfg, *, in_shape=(C, H, W), num_classes=None)`` and has
``forward(x, y=None) -> Tensor[B]`` (raw scores / logits, no sigmoid) for images ``x`` in [-1, 1].
With ``num_classes`` set it is class-conditional by projection (Miyato & Koyama, 2018); ``y=None``
then gives the unconditional score.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from avade.registry import Registry


def register(registry: Registry) -> None:
    """Register the built-in discriminators."""
    r = registry.register
    r("discriminator", "dcgan", factory="avade.discriminators.dcgan:DCGANDiscriminator",
      config="avade.discriminators.configs:DCGANDiscriminatorConfig",
      summary="Plain strided-conv discriminator, leaky ReLU 0.2 (the paper's simple conv critic).")
    r("discriminator", "resnet", factory="avade.discriminators.resnet:ResNetDiscriminator",
      config="avade.discriminators.configs:ResNetDiscriminatorConfig",
      summary="Residual discriminator of Table 6a (16 -> 32 -> down 64/128/256, avg pool, dense 1), ReLU.")
