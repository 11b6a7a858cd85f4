"""Whose an unexpected exception is: a plugin's (its traceback's innermost frame in a plugin's code), or a broken
installation's (it was raised while a package was being imported).

A component that raises while a model is checked, trained or evaluated would otherwise surface as
avade's own "internal error"; the message names the plugin (and the component, when the frame lies in
the very module that defines it), so the user knows whom to ask and what to disable.
"""

from __future__ import annotations

import os
import traceback
from types import TracebackType

from avade.registry import BUILTIN_DIST, ComponentInfo, Registry, get_registry

__all__ = ["broken_import", "plugin_at_fault", "raised_where"]


def raised_where(exc: BaseException) -> str:
    """``Type: first line (at file:line)`` of an exception raised inside a component: the innermost frame outside
    torch is the component's own line (torch's are the conv, the matmul, the ``.item()``)."""
    import torch  # (not at import: blame is read by torch-free commands too)

    lines = str(exc).strip().splitlines()
    detail = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    torch_dir = os.path.dirname(torch.__file__)
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(torch_dir)]
    return detail + (f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else "")


def _module_of(info: ComponentInfo) -> str | None:
    factory = info.factory
    if isinstance(factory, str):
        return factory.split(":", 1)[0]
    return getattr(factory, "__module__", None)


def _frames(tb: TracebackType | None) -> list[str]:
    """The module names of a traceback's frames, outermost first."""
    names = []
    while tb is not None:
        names.append(str(tb.tb_frame.f_globals.get("__name__", "")))
        tb = tb.tb_next
    return names


def plugin_at_fault(exc: BaseException, registry: Registry | None = None) -> str:
    """``"posterior 'pw-diag' (from plugin avade-pw 0.1.0)"`` (or ``"plugin avade-pw 0.1.0"`` when its
    module defines several components, or is another module of the plugin's package) for the innermost
    frame of ``exc``'s traceback (or of the exceptions it was raised from) in a third-party plugin's
    package; "" when no plugin's code is on it."""
    try:
        infos = (registry or get_registry()).list()
    except Exception:  # naming a culprit must never hide the error itself
        return ""
    modules: dict[str, list[ComponentInfo]] = {}
    for info in infos:
        module = _module_of(info)
        # avade's own code is never a plugin's, even where a plugin registers avade's class under its own name
        if module and module != BUILTIN_DIST and not module.startswith(f"{BUILTIN_DIST}."):
            modules.setdefault(module, []).append(info)
    packages = {m.split(".", 1)[0]: infos for m, infos in modules.items()}
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    for error in chain:
        # The innermost plugin frame: the error arose in that plugin's code, or in what it called.
        for name in reversed(_frames(error.__traceback__)):
            found = modules.get(name) or packages.get(name.split(".", 1)[0])
            if not found or found[0].dist in (BUILTIN_DIST, "__main__"):
                continue
            exact = modules.get(name)
            if exact and len({i.name for i in exact}) == 1:
                return f"{exact[0].qualname} (from plugin {exact[0].provider})"
            return f"plugin {found[0].provider}"
    return ""


def broken_import(exc: BaseException) -> tuple[str, str]:
    """``("torch", "/.../torch/__init__.py")`` when ``exc`` arose while that third-party package was being imported:
    a broken installation (a missing or mismatched shared library, a half-finished upgrade), not avade's bug; the
    file is the package's own (a ``torch.py`` of the user's shadowing the real one shows there). The package is
    the innermost being imported (torchvision importing a broken torch: torch); ("", "") when none was."""
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        name = str(frame.f_globals.get("__name__", ""))
        top = name.split(".", 1)[0]
        # An import runs the module's code with its spec in place; code run by exec() has none, e.g. the
        # module torch.compile generates and runs (a kernel that fails to compile is no broken installation).
        spec = frame.f_globals.get("__spec__")
        imported = getattr(spec, "name", None) == name
        if frame.f_code.co_name == "<module>" and imported and top not in (BUILTIN_DIST, "__main__", ""):
            # (the package's own file: the outermost frame of that package's code, its __init__ or module)
            outer = next(f for f in frames if str(f.f_globals.get("__name__", "")).split(".", 1)[0] == top)
            return top, str(outer.f_globals.get("__file__") or "")
    return "", ""
