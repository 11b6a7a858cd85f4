"""The component registry, filled through pluggy from the ``avade`` entry-point group.

One way to register (``registry.register``), one way to build (``create``), one way to look
(``list_components('*iaf*')``). The built-in components arrive through the same entry point and hook
as any third-party plugin, so nothing here knows about them.
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.metadata as metadata
import inspect
import os
import re
import traceback
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
import pluggy

from avade import hookspecs
from avade.contracts import contract_problem
from avade.errors import AvadeError, ConfigError, RegistryError, did_you_mean
from avade.schema import structure, unstructure

KINDS: tuple[str, ...] = (
    "flow",
    "posterior",
    "encoder",
    "decoder",
    "discriminator",
    "norm",
    "dataset",
    "metric",
)
# The keyword context avade passes to each kind's factory (CONTRIBUTING's table): what a factory
# with **kwargs is taken to accept, and what a factory lacking one of them is told it must take.
FACTORY_CONTEXT: dict[str, tuple[str, ...]] = {
    "flow": ("in_shape",),
    "posterior": ("stage_shapes", "num_classes"),
    "encoder": ("in_shape", "num_classes"),
    "decoder": ("stage_shapes", "out_shape", "num_classes"),
    "discriminator": ("in_shape", "num_classes"),
    "norm": ("layer", "num_classes"),
    "dataset": ("split",),
    "metric": (),
}
ENTRY_POINT_GROUP = "avade"
DISABLE_ENV = "AVADE_DISABLE_PLUGINS"
# How a user gets past a broken plugin, appended to every message that blames one.
PLUGIN_FIX_HINT = f"; fix or disable that plugin (--disable-plugins / {DISABLE_ENV})"
BUILTIN_DIST = "avade"  # the distribution whose entry point registers the built-in components
# Component names: lowercase words of letters and digits joined by single dashes, nothing else: names are
# split on commas (`--metrics bpd,fid`), become parts of dotted key paths (`--set eval.fid.samples=...`),
# globbed (`list-components '*iaf*'`) and turned into result keys (`gan-test` -> `gan_test`).
NAME_PATTERN = r"^[a-z0-9]+(-[a-z0-9]+)*$"
RESERVED_NAME = "none"  # `name = "none"` in a recipe removes an inherited component table (norms excepted)
NAME_RULE = f"names are lowercase letters and digits, words joined by single dashes, e.g. 'my-flow' ({NAME_PATTERN})"


class PluginWarning(UserWarning):
    """A plugin could not be loaded; the rest of avade keeps working.

    A warning about a plugin that failed to load carries its :class:`PluginFailure` (``failure``), whose
    exception the CLI shows with ``--debug``; other plugin warnings carry None.
    """

    def __init__(self, message: str, failure: PluginFailure | None = None) -> None:
        super().__init__(message)
        self.failure = failure


def _defaults(cfg_cls: type, given: Mapping[str, Any]) -> dict[str, Any]:
    """The config class's defaults for the keys not ``given``, as data, so that they are type-checked like
    a recipe's values (attrs checks only validators on defaults, not types)."""
    out = {}
    for f in attrs.fields(cfg_cls):
        if (not f.init or f.name in given or f.default is attrs.NOTHING
                or (isinstance(f.default, attrs.Factory) and f.default.takes_self)):  # type: ignore[arg-type]
            continue
        value = f.default.factory() if isinstance(f.default, attrs.Factory) else f.default  # type: ignore[arg-type]
        # as data, all the way down: a list or table of attrs instances too; a None inside stays None
        out[f.alias or f.name] = unstructure(value, drop_none=False)
    return out


def is_valid_name(name: object) -> bool:
    """Whether ``name`` is a valid component name (:data:`NAME_PATTERN`: ``realnvp``, ``gan-test``)."""
    return isinstance(name, str) and re.fullmatch(NAME_PATTERN, name) is not None


def dist_version(name: str) -> str | None:
    """The installed version of distribution ``name`` (a package's name on PyPI), or None when it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def normalized_name(name: str) -> str:
    """A distribution name as PEP 503 compares them: ``Avade_My.Plug`` and ``avade-my-plug`` are one."""
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


def _resolve(ref: Any, what: str, hint: str = "") -> Any:
    """``"package.module:attr"`` -> the object (lazy so that listing components stays cheap)."""
    if not isinstance(ref, str):
        return ref
    module_name, _, attr = ref.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split(".") if attr else ():
            obj = getattr(obj, part)
    except (Exception, SystemExit) as exc:  # a plugin module may raise anything while importing, sys.exit too
        raise RegistryError(f"{what}: cannot import {ref!r} ({type(exc).__name__}: {exc}){hint}") from None
    return obj


@attrs.define(eq=False)
class ComponentInfo:
    """One registration: what it is, how to build it, what it accepts, and who provides it."""

    kind: str
    name: str
    factory: Callable[..., Any] | str
    config: type | str | None
    summary: str
    dist: str
    version: str

    @property
    def qualname(self) -> str:
        """``kind 'name'``, as messages name the component."""
        return f"{self.kind} '{self.name}'"

    @property
    def provider(self) -> str:
        """The distribution and version that registered it (e.g. ``avade 0.1.0``), as messages name it."""
        return f"{self.dist} {self.version}".strip()

    def blame(self) -> tuple[str, str]:
        """(what, hint) for errors in a lazy reference: a plugin's is named, with how to get rid of it."""
        if self.dist in (BUILTIN_DIST, "__main__"):
            return self.qualname, ""
        return f"{self.qualname} (from plugin {self.provider})", PLUGIN_FIX_HINT

    def load_factory(self) -> Callable[..., Any]:
        """The factory, imported now when it was registered as a ``"module:attr"`` string."""
        self.factory = _resolve(self.factory, *self.blame())
        if not callable(self.factory):  # e.g. "pkg.module" without ":attr", which names the module itself
            what, hint = self.blame()
            raise RegistryError(f"{what}: factory must be callable (a class or function), got "
                                f"{type(self.factory).__name__} {self.factory!r}{hint}")
        return self.factory

    def load_config(self) -> type | None:
        """The attrs config class (imported now when given as a string), or None for a component without options."""
        self.config = _resolve(self.config, *self.blame())
        if self.config is not None and not attrs.has(self.config):  # type: ignore[arg-type]
            what, hint = self.blame()
            raise RegistryError(f"{what}: config schema must be an attrs class, got {self.config!r}{hint}")
        return self.config  # type: ignore[return-value]

    def context_params(self) -> list[str]:
        """Keyword arguments the factory accepts besides the config (e.g. ``in_shape`` for flows)."""
        params = list(inspect.signature(self.load_factory()).parameters.values())
        if self.load_config() is not None and params:
            params = params[1:]
        names = [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if any(p.kind is p.VAR_KEYWORD for p in params):  # e.g. a wrapper's (cfg, **context): takes them all
            names += [n for n in FACTORY_CONTEXT.get(self.kind, ()) if n not in names]
        return names

    def required_context(self) -> list[str]:
        """The context keywords the factory cannot do without (no default), e.g. a flow's ``in_shape``."""
        params = inspect.signature(self.load_factory()).parameters
        return [n for n in self.context_params() if n in params and params[n].default is inspect.Parameter.empty]


def _refuse_signature(info: ComponentInfo, context: dict[str, Any], accepted: list[str] | None = None) -> None:
    """Refuse, naming the signature avade calls it with, a factory that takes no keyword of ``context`` that avade
    passes to its kind (e.g. a flow's ``in_shape``): its signature is wrong, not the caller's option."""
    passed = FACTORY_CONTEXT.get(info.kind, ())
    if not any(key in passed for key in context):
        return
    try:
        accepted = info.context_params() if accepted is None else accepted
    except (TypeError, ValueError):  # a factory inspect cannot read (a builtin): calling it says what is wrong
        return
    for key in context:
        if key in passed and key not in accepted:
            sig = ", ".join(("*", *(f"{n}=None" if n == "num_classes" else n for n in passed)))
            what, fix = info.blame()
            raise RegistryError(f"{what}: its factory takes no keyword argument '{key}'; {info.kind} factories are "
                                f"called as factory(cfg, {sig}){fix}")


@attrs.frozen
class PluginFailure:
    """A plugin that failed to import or to register: ``reason`` is one line; ``exception``, when there is
    one, keeps the plugin's own traceback (shown by ``avade --debug``)."""

    dist: str
    entry_point: str
    reason: str
    exception: BaseException | None = attrs.field(default=None, eq=False, repr=False)

    def format_traceback(self) -> str:
        """The exception with its traceback, as Python prints it ("" when there is none)."""
        if self.exception is None:
            return ""
        return "".join(traceback.format_exception(self.exception))

    @property
    def message(self) -> str:
        """The reason and how to get past it: a user who cannot fix the plugin learns how to silence it."""
        return self.reason + PLUGIN_FIX_HINT


@attrs.frozen
class PluginRecord:
    """A plugin that was loaded."""

    dist: str
    version: str
    entry_point: str
    count: int


class Registry:
    """All registered components, keyed by (kind, name)."""

    def __init__(self) -> None:
        self._items: dict[tuple[str, str], ComponentInfo] = {}
        self.conflicts: dict[tuple[str, str], list[ComponentInfo]] = {}
        self.failures: list[PluginFailure] = []
        self.plugins: list[PluginRecord] = []
        # plugin registrations skipped because a built-in has the name (the conformance kit reports them)
        self.skipped: list[ComponentInfo] = []
        self._provider: tuple[str, str] = ("__main__", "")
        self._collect_conflicts = False
        self._pending_warnings: list[str] = []

    # -- registration ------------------------------------------------------------------------------
    def register(
        self,
        kind: str,
        name: str,
        *,
        factory: Callable[..., Any] | str,
        config: type | str | None = None,
        summary: str = "",
    ) -> ComponentInfo:
        """Register a component.

        ``factory(config, **context)`` builds it (``factory(**context)`` when ``config`` is None);
        ``config`` is an attrs class of its settings (defaults and types). Either may be a lazy
        ``"module:attr"`` string. ``summary`` is one line shown by ``avade list-components``.
        Registered in-process (not by a plugin's hook), a name registered before by the same module is replaced
        (a notebook cell run again); one of another module, a built-in's or a plugin's is refused.
        """
        dist, version = self._provider
        # a plugin's failure warning names it already; one registered in-process has no name to give
        who = "" if self._collect_conflicts or dist == "__main__" else f"{dist}: "
        if not isinstance(kind, str) or kind not in KINDS:
            # Nothing would ever build a component of another kind: a typo ("flows") must not pass silently.
            raise RegistryError(f"{who}invalid component kind {kind!r}"
                                f"{did_you_mean(kind, KINDS) if isinstance(kind, str) else ''}; "
                                f"kinds: {', '.join(KINDS)}")
        if not is_valid_name(name):
            raise RegistryError(f"{who}invalid component name {name!r}; {NAME_RULE}")
        if name == RESERVED_NAME and kind != "norm":  # norms are named by a string (`norm = "none"`), not a table
            raise RegistryError(f"{who}{kind} name 'none' is reserved (`name = \"none\"` removes a component "
                                "table in a recipe); register it under another name")
        if not (callable(factory) or isinstance(factory, str)):
            raise RegistryError(f"{who}{kind} '{name}': factory must be callable or a \"module:attr\" string, "
                                f"got {type(factory).__name__} {factory!r}")
        if not (config is None or isinstance(config, str | type)):
            raise RegistryError(f"{who}{kind} '{name}': config must be an attrs class, a \"module:attr\" string "
                                f"or None, got {type(config).__name__} {config!r}")
        if not isinstance(summary, str):
            raise RegistryError(f"{who}{kind} '{name}': summary must be a string (one line), got "
                                f"{type(summary).__name__}")
        info = ComponentInfo(kind, name, factory, config, summary.strip().splitlines()[0] if summary.strip() else "",
                             dist, version)
        key = (kind, name)
        if key in self._items:
            first = self._items[key]
            if self._collect_conflicts and first.dist == BUILTIN_DIST and info.dist != BUILTIN_DIST:
                # A plugin cannot shadow (or, by making the name ambiguous, break) a built-in that
                # recipes rely on: its registration is the one skipped, the built-in keeps working.
                self._pending_warnings.append(
                    f"{kind} '{name}' from {info.provider} is skipped: the name belongs to the built-in "
                    f"{kind} of {first.provider}; the plugin must register it under another name")
                self.skipped.append(info)
                return info
            if first.dist == info.dist and self._collect_conflicts:  # the plugin's own mistake, not a clash
                raise RegistryError(f"it registers {kind} '{name}' twice; register each name once")
            if not self._collect_conflicts:  # registered in-process (a script, a notebook)
                if first.dist == info.dist and _origin(first.factory) == _origin(info.factory):
                    # the same code's earlier registration: a notebook cell (or a script's module) run again
                    self._items[key] = info
                    return info
                if first.dist == info.dist:  # two modules of this process: neither may silently win
                    raise RegistryError(f"{kind} '{name}' is registered twice in this process, by "
                                        f"{_origin(first.factory)} and by {_origin(info.factory)}; register each "
                                        "name once")
                if first.dist == BUILTIN_DIST:
                    raise RegistryError(f"{kind} '{name}' is the built-in {kind}; register yours under another name")
                raise RegistryError(f"{kind} '{name}' is plugin {first.provider}'s {kind}; register yours under "
                                    f"another name, or disable that plugin ({DISABLE_ENV}={first.dist})")
            message = (
                f"{kind} '{name}' is registered twice: by {first.provider} and by {info.provider}; "
                f"uninstall one or disable it with {DISABLE_ENV}={info.dist}"
            )
            self.conflicts.setdefault(key, [first]).append(info)
            # Reported once the plugin's hook has finished: a plugin that then fails is rolled back
            # (conflict included) and gets one warning only, its failure.
            self._pending_warnings.append(message)
            return info
        self._items[key] = info
        return info

    # -- lookup ------------------------------------------------------------------------------------
    def kinds(self) -> list[str]:
        """Every component kind: the built-in ones and any a plugin registered."""
        return sorted({k for k, _ in self._items} | set(KINDS))

    def get(self, kind: str, name: str) -> ComponentInfo:
        """The registration for (kind, name), or a RegistryError with close matches."""
        key = (kind, name)
        if key in self.conflicts:
            providers = " and ".join(i.provider for i in self.conflicts[key])
            raise RegistryError(
                f"{kind} '{name}' is provided by both {providers}; disable one with {DISABLE_ENV}=<dist>"
            )
        if key in self._items:
            return self._items[key]
        if kind not in self.kinds():
            raise RegistryError(f"unknown component kind {kind!r}{did_you_mean(kind, self.kinds())}; "
                                f"kinds: {', '.join(self.kinds())}")
        names = [n for k, n in self._items if k == kind]
        # a plugin that failed to load may be the one that provides it: say so (its reason was a warning)
        broken = ", ".join(f"'{f.dist}' ({f.reason})" for f in self.failures)
        raise RegistryError(
            f"unknown {kind} {name!r}{did_you_mean(str(name), names)}; "
            f"see all with `avade list-components --kind {kind}`"
            + (f"; plugins that failed to load, which may provide it: {broken}" if broken else "")
        )

    def list(self, kind: str | None = None, pattern: str | None = None) -> list[ComponentInfo]:
        """Registrations sorted by (kind, name), filtered by kind and a glob like ``'*iaf*'`` (case-insensitive; one
        with a ``/``, such as ``'flow/*'``, matches ``kind/name`` as :func:`list_components` names them)."""
        if kind is not None and kind not in self.kinds():
            raise RegistryError(f"unknown component kind {kind!r}{did_you_mean(kind, self.kinds())}; "
                                f"kinds: {', '.join(self.kinds())}")
        out = [
            info
            for (k, n), info in sorted(self._items.items())
            if (kind is None or k == kind) and (pattern is None or fnmatch.fnmatchcase(
                (f"{k}/{n}" if "/" in pattern else n).lower(), pattern.lower()))
        ]
        return out

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._items

    # -- building ----------------------------------------------------------------------------------
    def validate(self, kind: str, name: str, data: Mapping[str, Any] | None, path: str = "",
                 source: str | None = None) -> Any:
        """Validate a config table for (kind, name); returns the config instance (or None)."""
        info = self.get(kind, name)
        cfg_cls = info.load_config()
        data = dict(data or {})
        if cfg_cls is None:
            if data:
                key = sorted(data)[0]
                raise ConfigError(f"{info.qualname} takes no options", path=_join(path, key), source=source)
            return None
        try:
            return structure(cfg_cls, {**_defaults(cfg_cls, data), **data}, path=path, source=source)
        except ConfigError as exc:
            rest = exc.path[len(path):].lstrip(".") if path and exc.path.startswith(path) else exc.path
            key = rest.split(".")[0].split("[")[0]
            defaulted = {f.name for f in attrs.fields(cfg_cls) if f.default is not attrs.NOTHING}
            if (key and key not in data and key in defaulted  # (a required key left out is the recipe's)
                    and _default_fails(cfg_cls, data, key)):  # (not a check against a value the recipe set)
                # the component's own default fails its type or validator: not the recipe's doing
                what, fix = info.blame()
                raise RegistryError(f"{what}: the default of '{key}' is invalid ({exc.detail}); "
                                    f"{fix.removeprefix('; ') or 'this is a bug in avade: please report it'}"
                                    ) from None
            raise

    def create(self, kind: str, name: str, **kwargs: Any) -> Any:
        """Build (kind, name): keys of its config schema are validated; the rest go to the factory."""
        info = self.get(kind, name)
        cfg_cls = info.load_config()
        context_names = info.context_params()
        fields = [f.name for f in attrs.fields(cfg_cls)] if cfg_cls is not None else []
        cfg_data = {k: v for k, v in kwargs.items() if k in fields}
        context = {k: v for k, v in kwargs.items() if k not in fields}
        _refuse_signature(info, context, context_names)
        for key in context:
            if key not in context_names:
                raise ConfigError(f"unknown option{did_you_mean(key, fields + context_names)}; "
                                  f"options: {', '.join(fields + context_names)}", path=f"{kind}.{name}.{key}")
        missing = [k for k in info.required_context() if k not in context]
        if missing:
            hint = ", e.g. in_shape=(3, 32, 32)" if "in_shape" in missing else ""
            raise ConfigError(f"{info.qualname} needs the keyword argument(s) {', '.join(missing)}{hint}",
                              path=f"{kind}.{name}")
        cfg = self.validate(kind, name, cfg_data, path=f"{kind}.{name}")
        return self.build(info, cfg, **context)

    def build(self, info: ComponentInfo, cfg: Any, **context: Any) -> Any:
        """Call the factory with an already validated config."""
        factory = info.load_factory()
        _refuse_signature(info, context)  # (the model builder calls build directly, not create)
        try:
            built = factory(**context) if info.load_config() is None else factory(cfg, **context)
        except (AvadeError, OSError):  # a bad setting or a missing/unreadable file: the user's to fix
            raise
        except Exception as exc:
            if info.dist == BUILTIN_DIST:  # avade's own factories failing is avade's bug: keep the traceback
                raise
            what, fix = info.blame()  # a plugin's is named; one registered in-process (__main__) is not
            raise RegistryError(f"{what} failed to build: {type(exc).__name__}: {exc}{fix}") from exc
        # a module without a member of its kind's contract failed later, as an AttributeError mid-step
        problem = contract_problem(info.kind, built)
        if problem is not None:
            what, fix = info.blame()
            raise RegistryError(f"{what} built {problem}{fix}")
        return built

    # -- plugins -----------------------------------------------------------------------------------
    def add_plugin(self, plugin: Any, dist: str, version: str = "", entry_point: str = "") -> bool:
        """Run one plugin's ``avade_register`` hook; on failure roll back and record a warning."""
        pm = _plugin_manager()
        before = set(self._items)
        conflicts_before = {key: list(infos) for key, infos in self.conflicts.items()}
        skipped_before = list(self.skipped)
        self._provider = (dist, version)
        self._collect_conflicts = True
        self._pending_warnings = []
        try:
            if not hasattr(plugin, "avade_register"):
                raise RegistryError("it defines no `avade_register(registry)` hook")
            pm.register(plugin, name=f"{dist}:{entry_point}:{id(plugin)}")
            impls = [impl for impl in pm.hook.avade_register.get_hookimpls() if impl.plugin is plugin]
            if not impls:
                # pluggy ignores functions without the marker: say so instead of registering nothing.
                raise RegistryError("its `avade_register` is not decorated with `@avade.hookimpl`")
            for impl in impls:
                returned = impl.function(registry=self)
                if returned is not None:  # e.g. a list of components: avade would silently register nothing
                    raise RegistryError(f"its `avade_register` returned a {type(returned).__name__}; it must "
                                        "call registry.register(...) for each component and return None")
        except (Exception, SystemExit) as exc:  # sys.exit() in a plugin must not end avade
            for key in set(self._items) - before:
                del self._items[key]
            self.conflicts = conflicts_before
            self.skipped = skipped_before
            reason = f"{type(exc).__name__}: {exc}" if not isinstance(exc, RegistryError) else str(exc)
            self._fail(dist, entry_point, reason, exc)
            return False
        finally:
            self._provider = ("__main__", "")
            self._collect_conflicts = False
            pending, self._pending_warnings = self._pending_warnings, []
            if pm.is_registered(plugin):
                pm.unregister(plugin)
        for message in pending:
            warnings.warn(message, PluginWarning, stacklevel=2)
        self.plugins.append(PluginRecord(dist, version, entry_point, len(set(self._items) - before)))
        return True

    def _fail(self, dist: str, entry_point: str, reason: str, exception: BaseException | None = None) -> None:
        """Record a plugin that failed (``reason`` made one line) and warn once, the failure attached."""
        failure = PluginFailure(dist, entry_point, " ".join(reason.split()), exception)
        self.failures.append(failure)
        warnings.warn(PluginWarning(f"plugin '{dist}' failed to load and is skipped: {failure.message}", failure),
                      stacklevel=3)

    def load_entry_points(self, disabled: Iterable[str] = ()) -> None:
        """Load every plugin in the ``avade`` entry-point group, each isolated from the others."""
        blocked = {normalized_name(d) for d in disabled if d.strip()}
        if BUILTIN_DIST in blocked:  # the built-ins are not a plugin: every recipe would then fail to build
            blocked.discard(BUILTIN_DIST)
            warnings.warn(f"{DISABLE_ENV} / --disable-plugins names '{BUILTIN_DIST}', whose built-in components "
                          "cannot be disabled; ignored", PluginWarning, stacklevel=2)
        known: set[str] = set()  # the names `disabled` may use: distributions and entry points, lowercase
        dists: set[str] = set()
        found = sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=_builtin_first)
        if not any(ep.value == BUILTIN_MODULE for ep in found):
            # avade imported from a source tree that is not installed (or whose metadata another
            # distribution shadows): its own entry point is missing, so the built-ins register directly.
            import importlib

            from avade import __version__

            self.add_plugin(importlib.import_module(BUILTIN_MODULE), BUILTIN_DIST, __version__, BUILTIN_DIST)
            known.add(BUILTIN_DIST)
            dists.add(BUILTIN_DIST)
        for ep in found:
            dist = ep.dist.name if ep.dist is not None else ep.name
            version = ep.dist.version if ep.dist is not None else ""
            known.update((normalized_name(dist), normalized_name(ep.name)))
            dists.add(dist)
            if normalized_name(dist) in blocked or normalized_name(ep.name) in blocked:
                continue
            try:
                plugin = ep.load()
            except (Exception, SystemExit) as exc:
                self._fail(dist, ep.name, f"import of {ep.value!r} failed: {type(exc).__name__}: {exc}", exc)
                continue
            self.add_plugin(plugin, dist, version, ep.name)
        for name in sorted(blocked - known):  # a typo would otherwise leave the plugin loaded, silently
            warnings.warn(f"{DISABLE_ENV} / --disable-plugins names '{name}', which is no installed plugin"
                          f"{did_you_mean(name, sorted(dists))}; installed: {', '.join(sorted(dists))}",
                          PluginWarning, stacklevel=2)


BUILTIN_MODULE = "avade.builtin"  # the module behind avade's own entry point


def _builtin_first(ep: metadata.EntryPoint) -> tuple[int, str]:
    # Built-ins load first so that a conflicting third-party name is the one reported and skipped.
    return (0 if ep.value == BUILTIN_MODULE else 1, ep.value)


def _default_fails(cfg_cls: type, data: Mapping[str, Any], key: str) -> bool:
    """Whether the default of ``key`` fails without the recipe's values too: a validator that compares it
    with another field (``high > low``) fails the default only because of the value the recipe gave that
    field. The defaults are validated alone, the recipe's value taken in only for a key whose default fails
    as well (or that has none)."""
    base = {**_defaults(cfg_cls, {}), **{k: v for k, v in data.items()
                                         if all((f.alias or f.name) != k or f.default is attrs.NOTHING
                                                for f in attrs.fields(cfg_cls))}}
    for _ in range(len(attrs.fields(cfg_cls)) + 1):
        try:
            structure(cfg_cls, base)
        except ConfigError as exc:
            failed = exc.path.split(".")[0].split("[")[0]
            if failed == key or failed not in data:  # key's own default, or another broken default
                return True
            if base.get(failed) is data[failed]:  # the recipe's own value fails
                return False
            base[failed] = data[failed]
        else:
            return False
    return True


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


_PM: pluggy.PluginManager | None = None


def _plugin_manager() -> pluggy.PluginManager:
    global _PM
    if _PM is None:
        _PM = pluggy.PluginManager(hookspecs.PROJECT)
        _PM.add_hookspecs(hookspecs)
    return _PM


_REGISTRY: Registry | None = None


def disabled_plugins() -> list[str]:
    """Plugin names blocked through ``AVADE_DISABLE_PLUGINS`` (comma separated)."""
    return [p for p in os.environ.get(DISABLE_ENV, "").split(",") if p.strip()]


def get_registry() -> Registry:
    """The process-wide registry, loaded from entry points on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        registry = Registry()
        registry.load_entry_points(disabled_plugins())
        _REGISTRY = registry
    return _REGISTRY


def reset_registry(registry: Registry | None = None) -> None:
    """Forget the cached registry (or install ``registry``); the next use reloads entry points."""
    global _REGISTRY
    _REGISTRY = registry


def create(kind: str, name: str, **config: Any) -> Any:
    """Build a registered component: ``create("flow", "realnvp", in_shape=(3, 32, 32), scales=2)``."""
    return get_registry().create(kind, name, **config)


def list_components(pattern: str | None = None, kind: str | None = None) -> list[str]:
    """Names like ``"flow/realnvp"`` matching a glob (timm style): ``list_components('*iaf*')``."""
    return [f"{i.kind}/{i.name}" for i in get_registry().list(kind=kind, pattern=pattern)]


def _origin(factory: Callable[..., Any] | str) -> str:
    """The module a factory comes from (a lazy ``"module:attr"``'s module): a notebook's and a script's own are
    ``__main__``."""
    if isinstance(factory, str):
        return factory.split(":", 1)[0]
    return str(getattr(factory, "__module__", None) or "?")
