"""Hierarchical top-down latents (name ``topdown``; AV-ADE appendix B.1, eq. 6-8).

One latent group per stage (or on the top ``groups`` stages). Sampling runs top-down in the same order
when encoding and when generating: each prior p(z_i | d) and posterior q(z_i | h_i, d) sees the
top-down state ``d``, which already carries every latent sampled above it.
"""

from __future__ import annotations

from collections.abc import Sequence

from avade.posteriors.configs import TopDownConfig
from avade.posteriors.hierarchy import LatentModel, top_stages


class TopDownPosterior(LatentModel):
    """q(z) = q(z_L) prod_i q(z_i | z_{>i}, h_i) and p(z) = p(z_L) prod_i p(z_i | z_{>i}), top-down."""

    def __init__(self, cfg: TopDownConfig, *, stage_shapes: Sequence[Sequence[int]],
                 num_classes: int | None = None) -> None:
        who = "posterior 'topdown'"
        super().__init__(stage_shapes, top_stages(stage_shapes, cfg.groups, who),
                         latent_channels=cfg.latent_channels, norm=cfg.norm, num_classes=num_classes,
                         iaf_steps=cfg.iaf_steps, iaf_hidden=cfg.iaf_hidden, iaf_kernel=cfg.iaf_kernel,
                         residual=cfg.residual, free_bits=cfg.free_bits, kl=cfg.kl, who=who)
