"""Diagonal Gaussian posterior: one latent group at the top stage (kind ``posterior``, name ``diagonal``)."""

from __future__ import annotations

from collections.abc import Sequence

from avade.posteriors.configs import DiagonalConfig
from avade.posteriors.hierarchy import LatentModel


class DiagonalPosterior(LatentModel):
    """q(z|x) = N(mu, sigma) at the top stage; learned prior p(z|d) = N(mu_p, sigma_p) starting at N(0, I)."""

    def __init__(self, cfg: DiagonalConfig, *, stage_shapes: Sequence[Sequence[int]],
                 num_classes: int | None = None) -> None:
        super().__init__(stage_shapes, [len(stage_shapes) - 1], latent_channels=cfg.latent_channels,
                         norm=cfg.norm, num_classes=num_classes, residual=cfg.residual, free_bits=cfg.free_bits,
                         kl=cfg.kl, who="posterior 'diagonal'")
