"""The attrs config classes of the built-in discriminators, in a module that does not import torch.

``avade recipe show``, ``recipe keys`` and ``list-components --json --schema`` resolve a recipe against
these classes only; kept apart from the components' modules (which import torch and re-export them),
they resolve without loading torch. Keep this module free of heavy imports.
"""

from __future__ import annotations

import attrs

from avade.errors import ConfigError
from avade.schema import between, ge


def positive_ints(_inst: object, attr: attrs.Attribute, value: tuple[int, ...]) -> None:
    """attrs validator: a non-empty tuple of ints >= 1 (e.g. the channels of each stage)."""
    if not value or any(v < 1 for v in value):
        raise ConfigError(f"expected a non-empty list of ints >= 1, got {list(value)!r}", path=attr.name)


@attrs.define
class DCGANDiscriminatorConfig:
    """Settings of the plain conv discriminator.

    ``channels``: output channels of each stride-2 4x4 conv (each halves the resolution).
    ``norm``: registered norm applied to the hidden convs (not to the input conv nor the output
    head, as in DCGAN: normalizing those rescales what the loss sees). Avoid ``batch-norm`` with a
    gradient penalty: the penalty assumes each score depends on its own image only.
    ``slope``: negative slope of the leaky ReLU (0.2 in the paper).
    """

    channels: tuple[int, ...] = attrs.field(
        default=(64, 128, 256), validator=positive_ints,
        metadata={"help": "output channels of each stride-2 4x4 conv (each halves the resolution)"})
    norm: str = attrs.field(
        default="none", metadata={"help": "registered norm of the hidden convs only; avoid batch-norm with a "
                                          "gradient penalty"})
    slope: float = attrs.field(default=0.2, validator=between(0.0, 1.0),
                               metadata={"help": "negative slope of the leaky ReLUs (DCGAN: 0.2)"})


@attrs.define
class ResNetDiscriminatorConfig:
    """Settings of the residual discriminator (defaults = Table 6a).

    ``stem``: channels of the first 3x3 conv. ``channels``: one residual block each; the first
    keeps the resolution, every later one halves it (Table 6a: ResBlock 32, ResBlock down 64, down
    128, down 256). ``norm``: registered norm on every conv (the paper uses none; avoid
    ``batch-norm`` with a gradient penalty).
    """

    stem: int = attrs.field(default=16, validator=ge(1),
                            metadata={"help": "channels of the first 3x3 conv (the paper's Table 6a: 16)"})
    channels: tuple[int, ...] = attrs.field(
        default=(32, 64, 128, 256), validator=positive_ints,
        metadata={"help": "one residual block each: the first keeps the resolution, each later one halves it"})
    norm: str = attrs.field(
        default="none", metadata={"help": "registered norm on every conv (the paper: none); no batch-norm with a "
                                          "gradient penalty"})
