"""Latent variables of the VAE (kind ``posterior``): prior, posterior and their merge into the decoder.

Factory: ``Class(cfg, *, stage_shapes, num_classes=None)`` returning a
:class:`avade.posteriors.hierarchy.LatentModel` (``stage_ids``, ``forward_stage``). Nothing here imports
torch (registration is lazy).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from avade.registry import Registry


def register(registry: Registry) -> None:
    """Register the built-in posteriors."""
    r = registry.register
    r("posterior", "diagonal", factory="avade.posteriors.diagonal:DiagonalPosterior",
      config="avade.posteriors.configs:DiagonalConfig",
      summary="Diagonal Gaussian q(z|x) at the top stage with a learned prior (starts at N(0, I)).")
    r("posterior", "iaf", factory="avade.posteriors.iaf:IAFPosterior",
      config="avade.posteriors.configs:IAFConfig",
      summary="Top-stage Gaussian refined by inverse autoregressive flow (masked, weight-normed; eq. 9-10).")
    r("posterior", "topdown", factory="avade.posteriors.topdown:TopDownPosterior",
      config="avade.posteriors.configs:TopDownConfig",
      summary="Hierarchical top-down latents, one group per stage (eq. 6-8), optionally with IAF per group.")
