"""Hierarchical top-down latents (name ``topdown``; AV-ADE appendix B.1, eq. 6-8).

One latent group per stage (or on the top ``groups`` stages). Sampling runs top-down in the same order
when encoding and when generating: each prior p(z_i | d) and posterior q(z_i | h_i, d) sees the
top-down state ``d``, which already carries every latent sampled above it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import attrs

from avade.errors import ConfigError
from avade.posteriors.hierarchy import LatentModel, free_bits_field, kl_field, top_stages
from avade.schema import ge


@attrs.define
class TopDownConfig:
    """``groups``: latent groups on the top stages (None = all stages); ``iaf_steps`` per group (0 = none)."""

    latent_channels: int = attrs.field(default=32, validator=ge(1), metadata={"help": "z channels per group"})
    groups: int | None = attrs.field(default=None, validator=ge(1),
                                     metadata={"help": "latent groups on the top stages; none = all"})
    iaf_steps: int = attrs.field(default=0, validator=ge(0), metadata={"help": "IAF steps per group"})
    iaf_hidden: int = attrs.field(default=64, validator=ge(1), metadata={"help": "IAF net channels"})
    iaf_kernel: Literal[1, 3, 5] = attrs.field(
        default=3, metadata={"help": "IAF kernel: 1 = channel-autoregressive, 3/5 = also over positions"})
    norm: str = attrs.field(default="weight-norm", metadata={"help": "norm of the convs"})
    residual: bool = attrs.field(default=False, metadata={"help": "q parametrized relative to the prior"})
    free_bits: float = free_bits_field()
    kl: Literal["sample", "analytic"] = kl_field()

    def __attrs_post_init__(self) -> None:
        if self.kl == "analytic" and self.iaf_steps:
            raise ConfigError("the KL of a posterior with IAF steps has no closed form; use kl = \"sample\" "
                              "(or iaf_steps = 0)", path="kl")


class TopDownPosterior(LatentModel):
    """q(z) = q(z_L) prod_i q(z_i | z_{>i}, h_i) and p(z) = p(z_L) prod_i p(z_i | z_{>i}), top-down."""

    def __init__(self, cfg: TopDownConfig, *, stage_shapes: Sequence[Sequence[int]],
                 num_classes: int | None = None) -> None:
        who = "posterior 'topdown'"
        super().__init__(stage_shapes, top_stages(stage_shapes, cfg.groups, who),
                         latent_channels=cfg.latent_channels, norm=cfg.norm, num_classes=num_classes,
                         iaf_steps=cfg.iaf_steps, iaf_hidden=cfg.iaf_hidden, iaf_kernel=cfg.iaf_kernel,
                         residual=cfg.residual, free_bits=cfg.free_bits, kl=cfg.kl, who=who)
