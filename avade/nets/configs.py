"""The attrs config classes of the built-in encoders and decoders, in a module that does not import torch.

``avade recipe show``, ``recipe keys`` and ``list-components --json --schema`` resolve a recipe against
these classes only; kept apart from the components' modules (which import torch and re-export them),
they resolve without loading torch. Keep this module free of heavy imports.
"""

from __future__ import annotations

from typing import Any

import attrs

from avade.errors import ConfigError
from avade.schema import ge, gt


def _check_channels(_inst: object, attr: attrs.Attribute, value: tuple[int, ...]) -> None:
    if not value or min(value) < 1:
        raise ConfigError(f"expected a non-empty list of positive ints, got {list(value)!r}", path=attr.name)


@attrs.define
class ConvEncoderConfig:
    """Channels per stage (stage 0 keeps the input resolution, each later stage halves it) and the norm."""

    channels: tuple[int, ...] = attrs.field(default=(32, 64, 128), validator=_check_channels,
                                            metadata={"help": "channels per stage, finest first"})
    norm: str = attrs.field(default="weight-norm", metadata={"help": "norm of every conv"})


@attrs.define
class ConvDecoderConfig:
    """``norm`` of every conv; ``init_zero_head``: start with a zero output mean (a gain that starts at 0)."""

    norm: str = attrs.field(default="weight-norm", metadata={"help": "norm of every conv"})
    init_zero_head: bool = attrs.field(default=False, metadata={"help": "output mean starts at 0"})


def _residual_scale() -> Any:
    """The ``residual_scale`` option of both nets."""
    return attrs.field(default=1.0, validator=gt(0.0), metadata={
        "help": "scale (> 0) of each block's residual branch, x + s * h (openai/iaf, the reference IAF-VAE: 0.1)"})


@attrs.define
class ResNetEncoderConfig:
    """Stage channels (each stage after the first halves the resolution), stem width, blocks per stage."""

    channels: tuple[int, ...] = attrs.field(default=(32, 64, 128, 256), validator=_check_channels,
                                            metadata={"help": "channels per stage, finest first"})
    stem: int = attrs.field(default=16, validator=ge(1), metadata={"help": "channels of the conv3x3 stem"})
    blocks_per_stage: int = attrs.field(default=1, validator=ge(1), metadata={"help": "blocks per stage"})
    norm: str = attrs.field(default="weight-norm", metadata={"help": "norm of every conv"})
    residual_scale: float = _residual_scale()


@attrs.define
class ResNetDecoderConfig:
    """Residual blocks per stage, the norm, and ``init_zero_head`` (start with a zero output mean)."""

    blocks_per_stage: int = attrs.field(default=1, validator=ge(1), metadata={"help": "blocks per stage"})
    norm: str = attrs.field(default="weight-norm", metadata={"help": "norm of every conv"})
    init_zero_head: bool = attrs.field(default=False, metadata={"help": "output mean starts at 0"})
    residual_scale: float = _residual_scale()
