"""avade-nice: an example third-party avade plugin (NICE flow, spectral-norm discriminator).

avade loads this module through the ``avade`` entry-point group declared in ``pyproject.toml`` and
calls :func:`avade_register`. Like avade's own component packages it imports no torch here: the
factories are lazy ``"module:attr"`` strings, so ``avade list-components`` stays fast.
"""

from __future__ import annotations

from typing import Any

from avade import hookimpl

__version__ = "0.1.0"


@hookimpl
def avade_register(registry: Any) -> None:
    """Register the ``nice`` flow and the ``sngan`` discriminator."""
    registry.register(
        "flow", "nice", factory="avade_nice.nice:NICE", config="avade_nice.nice:NICEConfig",
        summary="NICE (Dinh et al. 2014): additive conv couplings, image masks, learned diagonal scaling.")
    registry.register(
        "discriminator", "sngan", factory="avade_nice.sngan:SNGANDiscriminator",
        config="avade_nice.sngan:SNGANDiscriminatorConfig",
        summary="Spectral-norm residual discriminator (Miyato et al. 2018), projection-conditional.")
