"""The attrs config classes of the built-in posteriors, in a module that does not import torch.

``avade recipe show``, ``recipe keys`` and ``list-components --json --schema`` resolve a recipe against
these classes only; kept apart from the components' modules (which import torch and re-export them),
they resolve without loading torch. Keep this module free of heavy imports.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

from avade.errors import ConfigError
from avade.schema import ge


def free_bits_field() -> Any:
    """The posteriors' ``free_bits`` option (see :class:`~avade.posteriors.group.LatentGroup`)."""
    return attrs.field(
        default=0.0, validator=ge(0.0),
        metadata={"help": "free bits (openai/iaf kl_min): nats per latent channel and group below which the "
                          "batch-average KL gets no gradient; 0 = off; the reported bound is unchanged"})


def kl_field() -> Any:
    """The ``kl`` option of the posteriors without IAF (see :class:`~avade.posteriors.group.LatentGroup`)."""
    return attrs.field(
        default="sample",
        metadata={"help": "KL in training: sample (log q - log p of the sample, as openai/iaf) or analytic "
                          "(closed form, less variance, as NVAE; not with IAF); evaluation always samples"})


@attrs.define
class DiagonalConfig:
    """``latent_channels`` of z; ``norm`` of its convs; ``residual``: parametrize q relative to the prior."""

    latent_channels: int = attrs.field(default=32, validator=ge(1), metadata={"help": "z channels per group"})
    norm: str = attrs.field(default="weight-norm", metadata={"help": "norm of the convs"})
    residual: bool = attrs.field(default=False, metadata={"help": "q parametrized relative to the prior"})
    free_bits: float = free_bits_field()
    kl: Literal["sample", "analytic"] = kl_field()


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
