"""avade: hybrid likelihood/adversarial generative image models as a zoo of pluggable components.

Light on import: nothing here imports torch, so ``avade list-components`` starts fast.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from avade.errors import AvadeError, CheckpointError, ConfigError, DataError, RegistryError, StoppedError, TrainingError
from avade.hookspecs import hookimpl
from avade.registry import create, get_registry, list_components

if TYPE_CHECKING:  # (type checkers see its signature; at run time __getattr__ imports it on first use)
    from avade.evaluate import load_model

try:
    __version__ = version("avade")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = [
    "AvadeError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "RegistryError",
    "StoppedError",
    "TrainingError",
    "__version__",
    "create",
    "get_registry",
    "hookimpl",
    "list_components",
    "load_model",
]


def __getattr__(name: str) -> Any:
    # Imported on first use: it needs torch, which `import avade` must not import.
    if name == "load_model":
        from avade.evaluate import load_model

        return load_model
    raise AttributeError(f"module 'avade' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))  # load_model too, which __getattr__ provides
