"""IAF posterior: a top-stage Gaussian refined by inverse autoregressive flow (name ``iaf``; eq. 9-10)."""

from __future__ import annotations

from collections.abc import Sequence

from avade.posteriors.configs import IAFConfig
from avade.posteriors.hierarchy import LatentModel


class IAFPosterior(LatentModel):
    """One latent group at the top stage whose posterior sample goes through IAF (weight norm only, as the
    paper)."""

    def __init__(self, cfg: IAFConfig, *, stage_shapes: Sequence[Sequence[int]],
                 num_classes: int | None = None) -> None:
        super().__init__(stage_shapes, [len(stage_shapes) - 1], latent_channels=cfg.latent_channels,
                         norm=cfg.norm, num_classes=num_classes, iaf_steps=cfg.iaf_steps,
                         iaf_hidden=cfg.iaf_hidden, iaf_kernel=cfg.iaf_kernel, residual=cfg.residual,
                         free_bits=cfg.free_bits, who="posterior 'iaf'")
