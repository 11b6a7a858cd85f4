"""Normalizations (kind ``norm``): wrappers that a network applies to its conv/linear layers by name.

A norm factory is ``factory(config, *, layer, num_classes=None) -> nn.Module`` returning a module with
``forward(x, y=None)``; networks use :func:`avade.nn.normed` rather than calling it directly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from avade.registry import Registry


def register(registry: Registry) -> None:
    """Register the built-in normalizations."""
    r = registry.register
    r("norm", "none", factory="avade.norms.plain:Plain", config="avade.norms.configs:PlainConfig",
      summary="No normalization: the layer as is (bias kept).")
    r("norm", "weight-norm", factory="avade.norms.weight_norm:WeightNorm",
      config="avade.norms.configs:WeightNormConfig",
      summary="Weight normalization w = g v/||v|| (Salimans & Kingma 2016), data-dependent init optional.")
    r("norm", "cwn", factory="avade.norms.cwn:ConditionalWeightNorm",
      config="avade.norms.configs:ConditionalWeightNormConfig",
      summary="Conditional weight norm w = g(y) v/||v|| with class-conditional biases (AV-ADE app. E.1).")
    r("norm", "batch-norm", factory="avade.norms.batch_norm:BatchNormed",
      config="avade.norms.configs:BatchNormConfig",
      summary="Layer followed by batch normalization over its output channels.")
    r("norm", "actnorm", factory="avade.norms.actnorm_layer:ActNormed",
      config="avade.norms.configs:ActNormLayerConfig",
      summary="Layer followed by activation normalization (per-channel affine, data-dependent init).")
