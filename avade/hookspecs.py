"""The plugin contract. Every avade plugin -- the built-ins included -- implements exactly these hooks.

A plugin is a module listed under the ``avade`` entry-point group that defines::

    from avade import hookimpl

    @hookimpl
    def avade_register(registry):
        registry.register("flow", "my-flow", factory=..., config=..., summary="...")
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from avade.registry import Registry

PROJECT = "avade"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def avade_register(registry: Registry) -> None:
    """Register components with ``registry.register(kind, name, factory=..., config=..., summary=...)``."""
