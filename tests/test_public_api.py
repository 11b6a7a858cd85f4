"""The public API that users and plugin authors touch keeps its docstrings and type hints.

"Public": a module, class, function, method or property whose name does not start with ``_``, defined in
the module (not imported into it). A method counts only with its own docstring (an override of a documented
one says what it does differently, or that it does the same). Attrs config classes' fields are not checked:
their help is field metadata.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest

import avade

# The modules (with their submodules) whose API is public to users and plugin authors.
PUBLIC_MODULES = (
    "avade.registry",
    "avade.contracts",
    "avade.testing",
    "avade.recipe",
    "avade.evaluate",
    "avade.metrics",
    "avade.models",
    "avade.flows",
    "avade.posteriors",
    "avade.nets",
    "avade.train.run",
    "avade.train.trainer",
)
# "module.qualname" -> why it may go without (keep this short: every entry is a gap in the docs)
EXEMPT: dict[str, str] = {}


def _modules(name: str) -> Iterator[ModuleType]:
    module = importlib.import_module(name)
    yield module
    if hasattr(module, "__path__"):
        for info in pkgutil.walk_packages(module.__path__, f"{name}."):
            if not any(part.startswith("_") for part in info.name.split(".")):
                yield importlib.import_module(info.name)


def _public(module: ModuleType) -> Iterator[tuple[str, Callable[..., Any] | type]]:
    """``(qualified name, object)`` of each class, function, method and property ``module`` defines publicly."""
    for name, obj in vars(module).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isfunction(obj):
            yield f"{module.__name__}.{name}", obj
        elif inspect.isclass(obj):
            yield f"{module.__name__}.{name}", obj
            for member_name, member in vars(obj).items():
                if member_name.startswith("_") and member_name != "__init__":
                    continue
                if isinstance(member, (staticmethod, classmethod)):
                    member = member.__func__
                elif isinstance(member, property):
                    member = member.fget
                if inspect.isfunction(member) and member.__qualname__.startswith(f"{obj.__qualname__}."):
                    yield f"{module.__name__}.{name}.{member_name}", member


def _has_own_docstring(obj: Any) -> bool:
    doc = vars(obj).get("__doc__") if inspect.isclass(obj) else obj.__doc__
    return bool(doc and doc.strip())


def _unannotated(func: Callable[..., Any], is_init: bool) -> list[str]:
    signature = inspect.signature(func)
    missing = [name for name, p in signature.parameters.items()
               if name not in ("self", "cls") and p.annotation is inspect.Parameter.empty]
    if not is_init and signature.return_annotation is inspect.Signature.empty:
        missing.append("return")
    return missing


@pytest.mark.parametrize("package", PUBLIC_MODULES)
def test_public_api_has_docstrings(package: str) -> None:
    missing = []
    for module in _modules(package):
        if not _has_own_docstring(module):
            missing.append(module.__name__)
        for name, obj in _public(module):
            if name.endswith(".__init__") or name in EXEMPT:
                continue
            if not _has_own_docstring(obj):
                missing.append(name)
    assert not missing, f"public API without a docstring (say what it does and returns): {missing}"


@pytest.mark.parametrize("package", PUBLIC_MODULES)
def test_public_api_has_type_hints(package: str) -> None:
    missing = []
    for module in _modules(package):
        for name, obj in _public(module):
            if inspect.isclass(obj) or name in EXEMPT:
                continue
            if name.endswith(".__init__") and hasattr(vars(module)[name.split(".")[-2]], "__attrs_attrs__"):
                continue  # attrs writes it from the annotated fields
            gaps = _unannotated(obj, is_init=name.endswith(".__init__"))
            if gaps:
                missing.append(f"{name} ({', '.join(gaps)})")
    assert not missing, f"public API without type hints: {missing}"


def test_top_level_exports_exist_and_are_documented() -> None:
    for name in avade.__all__:
        obj = getattr(avade, name)  # an AttributeError names an export that is gone
        if name != "__version__":
            assert _has_own_docstring(obj), f"avade.{name} has no docstring"


def test_every_all_names_what_its_package_has() -> None:
    undefined = []
    for module in _modules("avade"):
        names = getattr(module, "__all__", ())
        undefined += [f"{module.__name__}.{name}" for name in names if not hasattr(module, name)]
    assert not undefined, f"__all__ names what the module does not define: {undefined}"
