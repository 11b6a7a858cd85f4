"""IAF posterior: a top-stage Gaussian refined by inverse autoregressive flow (name ``iaf``; eq. 9-10)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import attrs

from avade.posteriors.hierarchy import LatentModel, free_bits_field
from avade.schema import ge


@attrs.define
class IAFConfig:
    """``iaf_steps`` flow steps of ``iaf_hidden`` channels; ``iaf_kernel`` 1 = channel-autoregressive per
    pixel, 3/5 = also autoregressive over positions in raster order (PixelCNN style)."""

    latent_channels: int = attrs.field(default=32, validator=ge(1), metadata={"help": "z channels per group"})
    iaf_steps: int = attrs.field(default=1, validator=ge(1), metadata={"help": "IAF steps"})
    iaf_hidden: int = attrs.field(default=64, validator=ge(1), metadata={"help": "IAF net channels"})
    iaf_kernel: Literal[1, 3, 5] = attrs.field(
        default=3, metadata={"help": "IAF kernel: 1 = channel-autoregressive, 3/5 = also over positions"})
    norm: str = attrs.field(default="weight-norm", metadata={"help": "norm of the convs"})
    residual: bool = attrs.field(default=False, metadata={"help": "q parametrized relative to the prior"})
    free_bits: float = free_bits_field()


class IAFPosterior(LatentModel):
    """One latent group at the top stage whose posterior sample goes through IAF (weight norm only, as the
    paper)."""

    def __init__(self, cfg: IAFConfig, *, stage_shapes: Sequence[Sequence[int]],
                 num_classes: int | None = None) -> None:
        super().__init__(stage_shapes, [len(stage_shapes) - 1], latent_channels=cfg.latent_channels,
                         norm=cfg.norm, num_classes=num_classes, iaf_steps=cfg.iaf_steps,
                         iaf_hidden=cfg.iaf_hidden, iaf_kernel=cfg.iaf_kernel, residual=cfg.residual,
                         free_bits=cfg.free_bits, who="posterior 'iaf'")
