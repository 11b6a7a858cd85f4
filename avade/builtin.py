"""The built-in components, registered through the same ``avade`` entry point and hook as any plugin."""

from __future__ import annotations

from avade import hookimpl
from avade.registry import Registry


@hookimpl
def avade_register(registry: Registry) -> None:
    """Register every built-in component (lazily: nothing heavy is imported here)."""
    from avade import data, discriminators, flows, metrics, nets, norms, posteriors

    for package in (flows, posteriors, nets, discriminators, norms, data, metrics):
        package.register(registry)
