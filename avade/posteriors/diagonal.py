"""Diagonal Gaussian posterior: one latent group at the top stage (kind ``posterior``, name ``diagonal``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import attrs

from avade.posteriors.hierarchy import LatentModel, free_bits_field, kl_field
from avade.schema import ge


@attrs.define
class DiagonalConfig:
    """``latent_channels`` of z; ``norm`` of its convs; ``residual``: parametrize q relative to the prior."""

    latent_channels: int = attrs.field(default=32, validator=ge(1), metadata={"help": "z channels per group"})
    norm: str = attrs.field(default="weight-norm", metadata={"help": "norm of the convs"})
    residual: bool = attrs.field(default=False, metadata={"help": "q parametrized relative to the prior"})
    free_bits: float = free_bits_field()
    kl: Literal["sample", "analytic"] = kl_field()


class DiagonalPosterior(LatentModel):
    """q(z|x) = N(mu, sigma) at the top stage; learned prior p(z|d) = N(mu_p, sigma_p) starting at N(0, I)."""

    def __init__(self, cfg: DiagonalConfig, *, stage_shapes: Sequence[Sequence[int]],
                 num_classes: int | None = None) -> None:
        super().__init__(stage_shapes, [len(stage_shapes) - 1], latent_channels=cfg.latent_channels,
                         norm=cfg.norm, num_classes=num_classes, residual=cfg.residual, free_bits=cfg.free_bits,
                         kl=cfg.kl, who="posterior 'diagonal'")
