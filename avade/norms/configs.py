"""The attrs config classes of the built-in norms, in a module that does not import torch.

``avade recipe show``, ``recipe keys`` and ``list-components --json --schema`` resolve a recipe against
these classes only; kept apart from the components' modules (which import torch and re-export them),
they resolve without loading torch. Keep this module free of heavy imports.
"""

from __future__ import annotations

import attrs

from avade.schema import between, ge, gt


@attrs.define
class PlainConfig:
    """No options."""


@attrs.define
class WeightNormConfig:
    """``init_scale``: scale of the data-dependent init (0 disables it; the paper's IAF uses it)."""

    init_scale: float = attrs.field(default=0.0, validator=ge(0.0),
                                    metadata={"help": "data-dependent init scale; 0 = off"})


@attrs.define
class ConditionalWeightNormConfig:
    """No options: the number of classes comes from the dataset."""


@attrs.define
class BatchNormConfig:
    """``momentum`` of the running statistics."""

    momentum: float = attrs.field(default=0.1, validator=between(0.0, 1.0),
                                  metadata={"help": "weight of each batch in the running statistics (PyTorch's 0.1)"})


@attrs.define
class ActNormLayerConfig:
    """``scale``: the output standard deviation the data-dependent init aims for; ``logscale_factor``:
    the learned parameter is ``log s / logscale_factor`` (Glow's actnorm: 3; 1: ``log s`` itself)."""

    # its log is taken: 0 would silence the layer
    scale: float = attrs.field(default=1.0, validator=gt(0.0),
                               metadata={"help": "output std the data-dependent init aims for"})
    logscale_factor: float = attrs.field(
        default=1.0, validator=gt(0.0),
        metadata={"help": "the parameter learned is log s / this (Glow's actnorm: 3; 1 = log s itself)"})
