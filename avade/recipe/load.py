"""Read recipes: TOML -> ``extends`` deep merge -> ``--set`` overrides -> validated :class:`Recipe`.

Every error is a :class:`~avade.errors.ConfigError` naming the file the offending key came from and
its full key path, e.g. ``recipes/x.toml: model.flow.scales: expected int, got "two"``.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import json
import re
import tomllib
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from avade.errors import AvadeError, ConfigError, RegistryError, a_or_an, did_you_mean, one_line, refuse_a_string
from avade.recipe.schema import (
    ADVERSARIAL_VARIANTS,
    DEFAULT_COMPONENTS,
    FLOW_VARIANTS,
    LATENT_VARIANTS,
    LIKELIHOOD_VARIANTS,
    MODEL_COMPONENTS,
    AbsentConfig,
    ComponentRef,
    DataOptions,
    DataSection,
    EvalSection,
    ModelOptions,
    ModelSection,
    Recipe,
    SweepSection,
    TrainSection,
)
from avade.registry import RESERVED_NAME, get_registry
from avade.schema import structure, unstructure

TOP_LEVEL_KEYS = ("name", "description", "extends", "model", "data", "train", "eval", "sweep")
# Set by `without_absent_critic` (evaluating or sampling a trained run): a discriminator this avade lacks
_ABSENT_CRITIC_OK: contextvars.ContextVar[bool] = contextvars.ContextVar("absent_critic_ok", default=False)


@contextlib.contextmanager
def without_absent_critic() -> Iterator[None]:
    """Within it, a recipe whose discriminator this avade does not have (a plugin removed or disabled) still
    loads: the discriminator's table is kept as written (:class:`AbsentConfig`) and the model is built
    without it. For evaluating and sampling a trained run, which only training's critic needs; never for
    training or resuming."""
    token = _ABSENT_CRITIC_OK.set(True)
    try:
        yield
    finally:
        _ABSENT_CRITIC_OK.reset(token)
NONE_NAME = RESERVED_NAME  # `name = "none"` removes a component table inherited through `extends`

Origins = dict[tuple[str, ...], str]


def plain_name(text: str) -> str:
    """``text`` as a plain file name: letters, digits, ``-_.``, no leading dot ("my recipe" -> "my-recipe",
    "../x" -> "x"), so that it can name a directory without leaving its parent."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._") or "recipe"


# -- reading and merging -----------------------------------------------------------------------------


def read_toml(path: Path, display: str) -> dict[str, Any]:
    """The TOML file at ``path`` as a dict; a ConfigError naming ``display`` when it cannot be read or parsed."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"recipe file not found: {display}") from None
    except IsADirectoryError:
        raise ConfigError(f"{display} is a folder; give a recipe .toml file (e.g. recipes/quickstart.toml)") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"recipe {display} is not UTF-8 text (byte {exc.start}); TOML files are UTF-8: save it "
                          "as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"cannot read recipe {display}: {exc.strerror or exc} (check the path and its "
                          "permissions)") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", source=display) from None
    except RecursionError:  # tomllib parses nested arrays and inline tables recursively
        data = None
    if data is None or _depth(data) > MAX_DEPTH:  # (merging and validating recurse too)
        raise ConfigError(f"tables or arrays nested more than {MAX_DEPTH} deep; no recipe nests so deep: check the "
                          "file", source=display)
    return data


MAX_DEPTH = 64  # of tables and arrays in a recipe file (recipes nest a handful)


def _depth(node: Any) -> int:
    """How deep tables and arrays nest in ``node`` (counted without recursion)."""
    deepest, stack = 0, [(node, 0)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth <= MAX_DEPTH:
            children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest


def _record(data: Mapping[str, Any], source: str, origins: Origins, prefix: tuple[str, ...] = ()) -> None:
    for key, value in data.items():
        path = (*prefix, str(key))
        origins[path] = source
        if isinstance(value, Mapping):
            _record(value, source, origins, path)


def _is_component_table(path: tuple[str, ...]) -> bool:
    return len(path) == 2 and path[0] == "model" and path[1] in MODEL_COMPONENTS


def deep_merge(base: dict[str, Any], child: Mapping[str, Any], path: tuple[str, ...] = ()) -> dict[str, Any]:
    """``child`` over ``base``: tables merge key by key, everything else (arrays too) is replaced.

    A component table whose ``name`` changes is replaced whole: the old component's options mean
    nothing to the new one.
    """
    out = dict(base)
    for key, value in child.items():
        sub = (*path, key)
        old = out.get(key)
        if _is_component_table(sub):  # the shorthand `flow = "glow"` is the table `{name = "glow"}`
            old, value = _as_table(old), _as_table(value)
        same_component = not (
            _is_component_table(sub) and isinstance(old, Mapping) and isinstance(value, Mapping)
            and "name" in value and value.get("name") != old.get("name")
        )
        if isinstance(old, Mapping) and isinstance(value, Mapping) and same_component:
            out[key] = deep_merge(dict(old), value, sub)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _as_table(component: Any) -> Any:
    """A component given by its name alone (``flow = "glow"``) as its table (``{name = "glow"}``)."""
    return {"name": component} if isinstance(component, str) else component


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # e.g. a name too long for the file system: not a usable recipe either
        return False


def read_recipe_tree(path: str | Path, _chain: tuple[Path, ...] = ()) -> tuple[dict[str, Any], Origins]:
    """The recipe at ``path`` merged over everything it ``extends`` (recursively), with key origins."""
    path = Path(path).expanduser()
    display = _display(path)
    resolved = path.resolve()
    if resolved in _chain:
        cycle = " -> ".join(_display(p) for p in (*_chain, resolved))
        raise ConfigError(f"`extends` forms a cycle: {cycle}", path="extends", source=display)
    data = read_toml(path, display)
    origins: Origins = {}
    merged: dict[str, Any] = {}
    parents = data.pop("extends", None)
    if parents is not None:
        if isinstance(parents, str):
            parents = [parents]
        if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
            raise ConfigError("expected a relative file path (or a list of them)", path="extends", source=display)
        for parent in parents:
            parent_path = path.parent / Path(parent).expanduser()  # (`~` expands, as in every path of a recipe)
            if not _is_file(parent_path):
                raise ConfigError(f"extended recipe not found: {_display(parent_path)}", path="extends",
                                  source=display)
            parent_data, parent_origins = read_recipe_tree(parent_path, (*_chain, resolved))
            merged = deep_merge(merged, parent_data)
            origins.update(parent_origins)
        merged.pop("name", None)  # a name is never inherited: it defaults to this file's stem
    merged = deep_merge(merged, data)
    _record(data, display, origins)
    return merged, origins


# -- overrides ---------------------------------------------------------------------------------------


def parse_override(text: str) -> tuple[str, Any]:
    """``"model.flow.scales=2"`` -> ``("model.flow.scales", 2)``. Values use TOML syntax; a bare word
    that is not valid TOML is taken as a string (``data.name=natural-patches``)."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key_parts(key)):
        raise ConfigError(f"--set expects dotted.key=value, got {text!r}")
    try:
        document = tomllib.loads(f"v = {value.strip()}")
    except tomllib.TOMLDecodeError as exc:
        if value.strip()[:1] in ("\"", "'", "[", "{"):  # meant as a TOML string, array or table: a typo in it
            # (was taken as a bare word: `"digits` became the string '"digits', `[8, 16` the string '[8, 16')
            reason = re.sub(r" \(at line \d+, column \d+\)$", "", str(exc))
            raise ConfigError(f"--set {key}: {value.strip()!r} is not a valid TOML value ({reason}); close its "
                              "quotes and brackets, e.g. --set 'data.root=\"~/my data\"' or "
                              "--set 'model.encoder.channels=[16, 32]'") from None
        parsed = value.strip()
    except RecursionError:
        parsed = None
    else:
        if len(document) > 1:  # `5\ntrain.lr = 3`: the value, then TOML of its own, which would be dropped
            raise ConfigError(f"--set {key}: {value.strip()!r} is more than one value (a line break in it?); "
                              "give one value per --set")
        parsed = document["v"]
    if parsed is None or _depth(parsed) > MAX_DEPTH:
        raise ConfigError(f"--set {key}: its value nests arrays or tables more than {MAX_DEPTH} deep; no recipe key "
                          "takes such a value")
    return key, parsed


def key_parts(key: str) -> list[str]:
    """A dotted key's parts, TOML's quoting understood: ``sweep.grid."model.flow.scales"`` is three parts
    (one sweep axis), ``model.flow.scales`` three as well."""
    if '"' not in key and "'" not in key:
        return key.split(".")
    try:
        node: Any = tomllib.loads(f"{key} = 0")
    except tomllib.TOMLDecodeError:
        raise ConfigError(f"--set: {key} is not a TOML key (quote a part that holds dots: "
                          'sweep.grid."model.flow.scales"=[1, 2])') from None
    parts = []
    while isinstance(node, dict):
        (part, node), = node.items()
        parts.append(part)
    return parts


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str | tuple[str, Any]],
                    origins: Origins | None = None, source: str = "--set") -> dict[str, Any]:
    """Set dotted keys in a copy of ``raw``. Setting ``<component>.name`` to another component drops
    the previous component's options."""
    refuse_a_string(overrides, "apply_overrides: overrides", '["train.steps=100"]')
    out = copy.deepcopy(raw)
    for item in overrides:
        key, value = parse_override(item) if isinstance(item, str) else item
        parts = key_parts(key)
        if parts[0] == "extends":  # parents are merged when the file is read, before any override
            raise ConfigError("extends cannot be set with --set; write it in the recipe file (or a recipe that "
                              "extends it)", source=source)
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if isinstance(child, str) and _is_component_table(tuple(parts[: i + 1])):
                child = node[part] = _as_table(child)
            if child is None:
                child = node[part] = {}
                if origins is not None:  # a table only this override made: errors in it are the override's
                    origins[tuple(parts[: i + 1])] = source
            elif not isinstance(child, dict):
                raise ConfigError(f"cannot set {key}: {'.'.join(parts[: i + 1])} is not a table", source=source)
            node = child
        last = parts[-1]
        # ([data] without a name is the default dataset's: its options are that one's)
        current = node.get("name", _DEFAULT_DATASET if tuple(parts[:-1]) == ("data",) else None)
        if last == "name" and len(parts) >= 2 and current not in (None, value) and (
            _is_component_table(tuple(parts[:-1])) or tuple(parts[:-1]) == ("data",)
        ):
            keep = {} if parts[0] == "model" else {k: v for k, v in node.items() if k in _LOADER_KEYS}
            node.clear()
            node.update(keep)
            dropped = _drop_sweep_axes(out, ".".join(parts[:-1]), keep={"name", *keep})
            if dropped:
                table = ".".join(parts[:-1])
                warnings.warn(f"{source} {key}: the sweep's axes {', '.join(dropped)} set options of the former "
                              f"{table} and are dropped (its variants would all be alike); sweep the new one's "
                              "options with sweep.grid", UserWarning, stacklevel=2)
        node[last] = value
        if origins is not None:
            origins[tuple(parts)] = source
    return out


_LOADER_KEYS = {f.name for f in attrs.fields(DataOptions)}
_DEFAULT_DATASET = attrs.fields(DataOptions).name.default


def _drop_sweep_axes(raw: dict[str, Any], table: str, keep: set[str]) -> list[str]:
    """A switched component's options are gone, so sweep axes over them go too (e.g. an LSUN
    ``data.category`` grid under ``--set data.name=natural-patches``); returns the axes dropped."""
    sweep = raw.get("sweep")
    if not isinstance(sweep, dict):
        return []

    def stale(key: Any) -> bool:
        return isinstance(key, str) and key.startswith(f"{table}.") and key[len(table) + 1:] not in keep

    dropped: list[str] = []
    grid = sweep.get("grid")
    if isinstance(grid, dict):
        for key in [k for k in grid if stale(k)]:
            del grid[key]
            dropped.append(key)
    combos = sweep.get("combos")
    if isinstance(combos, list):
        unique: list[Any] = []
        for combo in combos:
            if isinstance(combo, dict):
                dropped += [k for k in combo if stale(k) and k not in dropped]
                combo = {k: v for k, v in combo.items() if not stale(k)}
            if combo not in unique:
                unique.append(combo)
        sweep["combos"] = [c for c in unique if c != {}] if len(unique) > 1 else unique
    if not sweep.get("grid") and not any(sweep.get("combos") or []):
        del raw["sweep"]
    return dropped


# -- validation --------------------------------------------------------------------------------------


def _table(value: Any, path: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"expected a table, got {value!r}", path=path)
    return dict(value)


def _component(kind: str, table: Any, path: str) -> ComponentRef | None:
    """Validate a component table ``{name = ..., <config>}`` (or the shorthand ``"name"``)."""
    if isinstance(table, str):
        table = {"name": table}
    table = _table(table, path)
    name = table.pop("name", None)
    if name is None:
        raise ConfigError(f"missing `name` (choose {a_or_an(kind)}; see `avade list-components --kind {kind}`)",
                          path=path)
    if not isinstance(name, str):
        raise ConfigError(f"expected {a_or_an(kind)} name (string), got {name!r}", path=f"{path}.name")
    if name == NONE_NAME:
        if table:  # options of no component: a mistake (the table was meant for another), never used
            raise ConfigError(f"{path}.name is \"{NONE_NAME}\" (no {kind}), so its {', '.join(map(str, table))} "
                              f"would do nothing; remove {'it' if len(table) == 1 else 'them'}, or name "
                              f"{a_or_an(kind)}",
                              path=f"{path}.{next(iter(table))}")
        return None
    registry = get_registry()
    try:
        registry.get(kind, name)
    except AvadeError as exc:
        absent = (kind, name) not in registry and (kind, name) not in registry.conflicts
        if kind == "discriminator" and _ABSENT_CRITIC_OK.get() and absent:
            return ComponentRef(name, AbsentConfig(table))
        raise ConfigError(str(exc), path=f"{path}.name") from None
    try:
        config = registry.validate(kind, name, table, path=path)
    except ConfigError as exc:
        key = exc.path.removeprefix(f"{path}.")
        if exc.path == key or "." in key or not exc.detail.startswith("unknown key"):
            raise
        raise ConfigError(_with_owners(exc.detail, kind, name, key, path), path=exc.path) from None
    return ComponentRef(name, config)


def _with_owners(detail: str, kind: str, name: str, key: str, path: str) -> str:
    """An "unknown key" ``detail`` that says which other components of ``kind`` take ``key``: options of Glow
    under a Real-NVP flow (the name changed, the options not), e.g. ``steps``."""
    owners = []
    for info in get_registry().list(kind=kind):
        try:
            cfg_cls = info.load_config() if info.name != name else None
        except AvadeError:  # (a plugin's broken schema: no owner to name)
            continue
        if cfg_cls is not None and key in {f.name for f in attrs.fields(cfg_cls)}:
            owners.append(f"'{info.name}'")
    if not owners:
        return detail
    hint = (f" ({key} is an option of {kind} {' and '.join(owners[:3])}{' and more' if len(owners) > 3 else ''}, "
            f"not of '{name}': set {path}.name to that {kind}, or remove {key})")
    head, sep, tail = detail.partition("; valid keys")
    return head + hint + sep + tail


def _unneeded_tables(variant: str, keys: list[str]) -> str:
    """One line naming every component table ``variant`` has no use for (``--set model.variant=flow`` on an
    AV-ADE recipe: all four at once, not one per attempt)."""
    why = {"flow": "flow f", "discriminator": "discriminator (no L_Q)"}
    items = [why.get(k, k) for k in keys]
    latent = [i for i, k in enumerate(keys) if k not in why]
    if latent:  # (encoder, posterior, decoder: the flow alone's latent is f(x) itself)
        items[latent[-1]] += " (its latent is f(x) itself, standard normal)"
    tables = [f"[model.{k}]" for k in keys]
    if len(keys) == 1:
        return f"variant '{variant}' has no {items[0]}; remove {tables[0]} or set model.{keys[0]}.name = \"none\""
    return (f"variant '{variant}' has no {', '.join(items[:-1])} or {items[-1]}; remove {', '.join(tables[:-1])} "
            f"and {tables[-1]}, or set each one's name = \"none\"")


def _model(raw: Any) -> ModelSection:
    table = _table(raw, "model")
    component_tables = {k: table.pop(k) for k in list(table) if k in MODEL_COMPONENTS}
    option_keys = [f.name for f in attrs.fields(ModelOptions)]
    for key, value in table.items():  # a mistyped option or component table: suggest among both
        if key in option_keys:
            continue
        if isinstance(value, dict):
            raise ConfigError(f"unknown table{did_you_mean(key, list(MODEL_COMPONENTS))}; component tables: "
                              f"{', '.join(MODEL_COMPONENTS)}", path=f"model.{key}")
        # (a component may be named alone, `flow = "glow"`: `flwo = "glow"` is one mistyped)
        raise ConfigError(f"unknown key{did_you_mean(key, [*option_keys, *MODEL_COMPONENTS])}; valid keys: "
                          f"{', '.join(option_keys)}, and the component tables {', '.join(MODEL_COMPONENTS)}",
                          path=f"model.{key}")
    options = structure(ModelOptions, table, path="model")
    registry = get_registry()
    normalized = {}
    for norm, norm_table in options.norm_options.items():  # validated here, applied by build_model
        try:
            cfg = registry.validate("norm", norm, norm_table, path=f"model.norm_options.{norm}")
        except RegistryError as exc:
            raise ConfigError(str(exc), path=f"model.norm_options.{norm}") from None
        # Canonical values (1 and 1.0 alike), and no table that only restates the defaults: one model,
        # one fingerprint.
        if cfg is not None and cfg != registry.validate("norm", norm, {}):
            normalized[norm] = unstructure(cfg)
    options.norm_options = normalized
    variant = options.variant
    refs: dict[str, ComponentRef | None] = {}
    unneeded: list[str] = []  # tables the variant has no use for: named all at once, after the loop
    for key, kind in MODEL_COMPONENTS.items():
        needed = {
            "flow": variant in FLOW_VARIANTS,
            "discriminator": variant in ADVERSARIAL_VARIANTS,
        }.get(key, variant in LATENT_VARIANTS)
        if key in component_tables:
            ref = _component(kind, component_tables[key], f"model.{key}")
        else:
            ref = _component(kind, DEFAULT_COMPONENTS[key], f"model.{key}") if needed else None
        if ref is not None and not needed:
            unneeded.append(key)
        if ref is None and needed:
            raise ConfigError(f"variant '{variant}' needs {a_or_an(kind)}; choose one with model.{key}.name",
                              path=f"model.{key}.name")
        refs[key] = ref
    if unneeded:
        raise ConfigError(_unneeded_tables(variant, unneeded), path=f"model.{unneeded[0]}")
    if variant == "flow" and options.conditional:  # (a flow here takes no labels)
        raise ConfigError("variant 'flow' is unconditional (the flow takes no labels); set model.conditional = "
                          "false, or train a class-conditional av-ade", path="model.conditional")
    if options.likelihood == "discretized-logistic" and refs["flow"] is not None:
        raise ConfigError("discretized-logistic needs pixel space: use it without a flow (vae/av-gde) "
                          "or set likelihood = \"gaussian\"", path="model.likelihood")
    return ModelSection(options=options, **refs)


def _data(raw: Any) -> DataSection:
    table = _table(raw, "data")
    loader = {k: table.pop(k) for k in list(table) if k in _LOADER_KEYS}
    options = structure(DataOptions, loader, path="data")
    if options.name == NONE_NAME:
        raise ConfigError("every recipe needs a dataset; see `avade list-components --kind dataset`",
                          path="data.name")
    try:
        dataset = _component("dataset", {"name": options.name, **table}, "data")
    except ConfigError as exc:
        key = exc.path.removeprefix("data.")
        if not exc.detail.startswith("unknown key") or "." in key:
            raise
        # [data] mixes loader keys and the dataset's own: suggest from both (`batchsize` -> `batch_size`).
        cfg_cls = get_registry().get("dataset", options.name).load_config()
        fields = sorted(_LOADER_KEYS) + ([f.name for f in attrs.fields(cfg_cls)] if cfg_cls is not None else [])
        raise ConfigError(_with_owners(f"unknown key{did_you_mean(key, fields)}; valid keys: {', '.join(fields)}",
                                       "dataset", options.name, key, "data"), path=exc.path) from None
    return DataSection(options=options, dataset=dataset)


_EVAL_FIELDS = [f.name for f in attrs.fields(EvalSection) if f.name != "settings"]


def _eval(raw: Any) -> EvalSection:
    table = _table(raw, "eval")
    registry = get_registry()
    metric_names = [i.name for i in registry.list(kind="metric")]
    tables = {}
    for key in list(table):
        if key not in _EVAL_FIELDS:
            if key not in metric_names:
                raise ConfigError(f"unknown key{did_you_mean(key, _EVAL_FIELDS + metric_names)}; valid keys: "
                                  f"{', '.join(_EVAL_FIELDS)} or a metric's table", path=f"eval.{key}")
            tables[key] = table.pop(key)
    section = structure(EvalSection, table, path="eval")
    for i, metric in enumerate(section.metrics):
        if metric not in metric_names:
            raise ConfigError(f"unknown metric '{metric}'{did_you_mean(metric, metric_names)}; see "
                              "`avade list-components --kind metric`", path=f"eval.metrics[{i}]")
        if metric in section.metrics[:i]:  # computed twice at the end of training, then refused as a clash
            raise ConfigError(f"'{metric}' is listed twice; list each metric once", path=f"eval.metrics[{i}]")
    settings = {}
    for metric in sorted(set(section.metrics) | set(tables)):
        ref = _component("metric", {"name": metric, **_table(tables.get(metric), f"eval.{metric}")},
                         f"eval.{metric}")
        assert ref is not None
        settings[metric] = ref
    section.settings = settings
    return section


def _sweep(raw: Any) -> SweepSection | None:
    if raw is None:
        return None
    table = _table(raw, "sweep")
    _refuse_unquoted_axes(table)
    sweep = structure(SweepSection, table, path="sweep")
    for key, values in sweep.grid.items():
        if not values:
            raise ConfigError("a grid axis needs at least one value", path=f"sweep.grid.{key}")
    if not sweep.grid and not sweep.combos:
        raise ConfigError("a [sweep] needs `grid` and/or `combos`", path="sweep")
    axes = [(f"sweep.grid.{key}", key) for key in sweep.grid]
    axes += [(f"sweep.combos[{i}].{key}", key) for i, combo in enumerate(sweep.combos) for key in combo]
    for where, key in axes:
        try:
            first = key_parts(key)[0]
        except ConfigError:
            raise ConfigError(f"{key} is not a dotted key: quote a part that holds dots, as in "
                              "\"model.'a.b'\"", path=where) from None
        if first in _NOT_AXES:
            raise ConfigError(f"{first} cannot be a sweep axis: {_NOT_AXES[first]}; remove it", path=where)
    for i, combo in enumerate(sweep.combos):
        for key in combo:
            if key in sweep.grid:  # each variant is a combo with a grid point over it: the grid's value wins
                raise ConfigError(f"sweep.grid sets {key} in every variant too, so this value would never be "
                                  "used; set it in the grid or in the combos", path=f"sweep.combos[{i}].{key}")
    return sweep


def _refuse_unquoted_axes(sweep: Mapping[str, Any]) -> None:
    """TOML nests a dotted key, ``train.seed = 1`` is ``{train = {seed = 1}}``: as a grid axis that is no
    list, and in a combo it would replace the variant's whole [train]. Say to quote it."""
    grid, combos = sweep.get("grid"), sweep.get("combos")
    tables = [("sweep.grid", grid)] if isinstance(grid, Mapping) else []
    if isinstance(combos, list):
        tables += [(f"sweep.combos[{i}]", c) for i, c in enumerate(combos) if isinstance(c, Mapping)]
    for where, values in tables:
        for key, value in values.items():
            grid_axis = where == "sweep.grid"
            if isinstance(value, Mapping) and value and (grid_axis or key in TOP_LEVEL_KEYS):
                dotted, node = [str(key)], value
                while isinstance(node, Mapping) and node:
                    sub, node = next(iter(node.items()))
                    dotted.append(str(sub))
                what = "a grid axis is one key" if grid_axis else f"a table here replaces all of [{key}] in the variant"
                raise ConfigError(f"{what}: TOML reads the dotted key {'.'.join(dotted)} as nested tables; quote "
                                  f"it: \"{'.'.join(dotted)}\" = ...", path=f"{where}.{key}")


_NOT_AXES = {  # top-level keys a sweep cannot vary, and why
    "name": "each variant is named after the recipe and its own values",
    "extends": "the extended recipes are merged as the file is read, before any variant",
    "sweep": "a variant is one run, not another sweep",
}


# Component keys added with a default that builds another model than before: a recipe that avade saved
# (a run's recipe.toml, a checkpoint's state) lists every key of its version, so one that lacks such a
# key was trained with the value here, which rebuilds the former model.
SAVED_BEFORE: dict[tuple[str, str], dict[str, Any]] = {
    # Glow's logscale factor 3 and its edge channel came with parameters of their own
    ("flow", "glow"): {"logscale_factor": 0.0, "edge_bias": False},
}


def with_saved_defaults(raw: Mapping[str, Any]) -> dict[str, Any]:
    """``raw``, a recipe avade saved, with the keys of :data:`SAVED_BEFORE` its version did not have yet."""
    out = dict(raw)
    model = raw.get("model")
    if not isinstance(model, Mapping):
        return out
    model = dict(model)
    for (kind, name), former in SAVED_BEFORE.items():
        table = model.get(kind)
        if isinstance(table, Mapping) and table.get("name") == name:
            model[kind] = {**{k: v for k, v in former.items() if k not in table}, **table}
    out["model"] = model
    return out


def saved_before_hint(saved: Any, recipe_dict: Mapping[str, Any]) -> str:
    """For a recipe that does not fit a checkpoint whose recipe avade ``saved`` before a key of
    :data:`SAVED_BEFORE` existed: what to set to rebuild that model ("" when no such key differs)."""
    if not isinstance(saved, Mapping) or not isinstance(saved.get("model"), Mapping):
        return ""
    model = recipe_dict.get("model", {})
    hints = []
    for (kind, name), former in SAVED_BEFORE.items():
        table, ours = saved["model"].get(kind), model.get(kind)
        if not (isinstance(table, Mapping) and table.get("name") == name and isinstance(ours, Mapping)
                and ours.get("name") == name):
            continue
        # JSON spells these scalars as TOML and --set do (false, 0.0)
        hints += [f"model.{kind}.{k} = {json.dumps(v)}" for k, v in former.items()
                  if k not in table and ours.get(k) != v]
    return (f"; it was saved before {', '.join(h.split(' = ')[0] for h in hints)} existed: set "
            f"{', '.join(hints)} to resume it") if hints else ""


def recipe_from_dict(raw: Mapping[str, Any], source: str | None = None, default_name: str = "recipe",
                     origins: Origins | None = None) -> Recipe:
    """Validate a merged recipe mapping into a :class:`Recipe` (errors name file and key path)."""
    try:
        if not isinstance(raw, Mapping):
            raise ConfigError("a recipe must be a TOML table")
        raw = dict(raw)
        if "extends" in raw:  # (a file's parents are merged as it is read: a dict's would be dropped, silently)
            raise ConfigError(f"{raw['extends']!r}: a dict's extends is not followed (only a file's is, as it is "
                              "read); load the file with avade.recipe.load_recipe(path, overrides), or merge the "
                              "parent's table into the dict and drop extends", path="extends")
        for key in raw:
            if key not in TOP_LEVEL_KEYS:
                raise ConfigError(f"unknown top-level key{did_you_mean(key, TOP_LEVEL_KEYS)}; valid keys: "
                                  f"{', '.join(TOP_LEVEL_KEYS)}", path=key)
        name = raw["name"] if "name" in raw else plain_name(default_name)
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"expected a non-empty string, got {name!r}", path="name")
        if not name.isprintable():  # it is printed as training runs: a line break or an escape sequence there
            raise ConfigError(f"{name!r} holds a control character (a line break, an escape sequence); name the "
                              "recipe with printable characters", path="name")
        description = raw.get("description", "")
        if not isinstance(description, str):
            raise ConfigError(f"expected a string, got {description!r}", path="description")
        recipe = Recipe(
            name=name,
            description=description,
            model=_model(raw.get("model")),
            data=_data(raw.get("data")),
            train=structure(TrainSection, _table(raw.get("train"), "train"), path="train"),
            eval=_eval(raw.get("eval")),
            sweep=_sweep(raw.get("sweep")),
            source=source,
            raw=copy.deepcopy(raw),
        )
        if recipe.sweep is None:  # a sweep's base is never run as it is: each variant is checked instead
            _check_consistency(recipe)
        return recipe
    except ConfigError as exc:
        detail, last, origin = exc.detail, exc.path.rsplit(".", 1)[-1], _origin(exc.path, origins) or source
        if "." in exc.path and last in _FILE_KEYS and detail.startswith("unknown key") and (
                origins and origin != "--set"):  # (in a file, not a --set or a sweep variant)
            # `extends = "base.toml"` written at the end of the file: TOML reads it as a key of the last table
            detail = (f"unknown key here: {last} is a top-level key, and TOML puts every key below a [table] header "
                      f"into that table; move `{last} = ...` above the file's first [table]")
        raise ConfigError(one_line(detail), path=one_line(exc.path), source=origin) from None


_FILE_KEYS = ("name", "description", "extends")  # the top-level keys that are no table


def _check_consistency(recipe: Recipe) -> None:
    """Settings that are valid alone but not together."""
    _check_metrics_fit_model(recipe.eval.metrics, recipe.model)
    bpd = recipe.eval.settings.get("bpd")
    k = getattr(bpd.config, "importance_samples", 1) if bpd is not None else 1
    if k > 1 and recipe.eval.importance_samples > 1 and k != recipe.eval.importance_samples:
        # training reports bpd_iw<eval.importance_samples>, avade eval bpd_iw<[eval.bpd]'s>: one number is meant
        raise ConfigError(f"eval.importance_samples = {recipe.eval.importance_samples} and eval.bpd.importance_samples "
                          f"= {k} disagree; set one of them", path="eval.bpd.importance_samples")
    train = recipe.train
    if train.kl_warmup_steps and (recipe.variant not in LIKELIHOOD_VARIANTS or recipe.variant not in LATENT_VARIANTS):
        raise ConfigError(f"variant '{recipe.variant}' has no KL term to warm up; remove "
                          "train.kl_warmup_steps, or train a variant with latents (av-ade, v-ade, av-gde, vae)",
                          path="train.kl_warmup_steps")
    posterior = recipe.model.posterior
    if posterior is not None and recipe.variant not in LIKELIHOOD_VARIANTS:
        for key, plain in (("free_bits", 0.0), ("kl", "sample")):
            if getattr(posterior.config, key, plain) != plain:
                raise ConfigError(f"variant '{recipe.variant}' trains no KL term, so the posterior's {key} would do "
                                  f"nothing; remove model.posterior.{key}, or train a variant with latents",
                                  path=f"model.posterior.{key}")
    if train.lr_final_ratio and train.lr_schedule == "constant":
        raise ConfigError(f"{train.lr_final_ratio} is the end of a decay, but train.lr_schedule is constant; set "
                          "train.lr_schedule to cosine or linear, or drop lr_final_ratio", path="train.lr_final_ratio")
    if train.lr_warmup_steps >= train.steps:
        raise ConfigError(f"{train.lr_warmup_steps} warm-up steps in a run of train.steps = {train.steps}: the "
                          "learning rate would never reach train.lr; lower train.lr_warmup_steps",
                          path="train.lr_warmup_steps")


def _check_metrics_fit_model(metrics: list[str], model: ModelSection) -> None:
    """Metrics of class-conditional samples (``needs_conditional``) need a class-conditional model."""
    if model.options.conditional:
        return
    registry = get_registry()
    for i, name in enumerate(metrics):
        info = registry.get("metric", name)
        declared = _declared_needs_conditional(info)
        if declared if declared is not None else getattr(info.load_factory(), "needs_conditional", False):
            raise ConfigError(f"metric '{name}' scores class-conditional samples, but model.conditional = false; "
                              "set model.conditional = true (with a labelled dataset) or remove it",
                              path=f"eval.metrics[{i}]")


def _declared_needs_conditional(info: Any) -> bool | None:
    """A metric's ``needs_conditional`` as its config class says it, without importing the factory's module (the
    built-ins' are torch-free, their factories' modules not); None where the class says nothing or is not the
    factory's package's own: a plugin reusing (or subclassing) a built-in config class inherits its False, which
    says nothing of the plugin's factory."""
    config = info.load_config()
    owner = next((c for c in getattr(config, "__mro__", ()) if "needs_conditional" in vars(c)), None)
    declared = vars(owner)["needs_conditional"] if owner is not None else None
    factory = info.factory
    package = (factory.split(":", 1)[0] if isinstance(factory, str) else str(getattr(factory, "__module__", "")))
    if not isinstance(declared, bool) or owner.__module__.split(".")[0] != package.split(".")[0]:
        return None
    return declared


def _origin(path: str, origins: Origins | None) -> str | None:
    """The file that set the longest prefix of ``path`` (so extended recipes are blamed correctly)."""
    if not origins or not path:
        return None
    parts = tuple(path.replace("[", ".[").split("."))
    for n in range(len(parts), 0, -1):
        if parts[:n] in origins:
            return origins[parts[:n]]
    return None


def _without_absent_metrics(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """A run's recipe without the eval metrics this avade lacks (a metric plugin uninstalled since): the
    model and data are all a run needs to be evaluated, sampled or resumed; the metric is left out, said once."""
    table = raw.get("eval")
    if not isinstance(table, Mapping):
        return raw
    known = {i.name for i in get_registry().list(kind="metric")}
    listed = table.get("metrics")
    names = [m for m in listed if isinstance(m, str)] if isinstance(listed, list) else []
    absent = sorted({m for m in names if m not in known}
                    | {k for k, v in table.items() if isinstance(v, Mapping) and k not in known})
    if isinstance(listed, list) and len(names) == len(listed) and len(set(names)) < len(names):
        # listed twice (refused since; a run trained so, with bpd listed twice, still loads)
        listed = list(dict.fromkeys(names))
        table = {**table, "metrics": listed}
        raw = {**raw, "eval": table}
    if not absent:
        return raw
    from avade.registry import PluginWarning

    warnings.warn(f"{where}: eval metric(s) {', '.join(absent)} not installed (a plugin removed or disabled?): "
                  "left out", PluginWarning, stacklevel=3)
    kept = {k: v for k, v in table.items() if k not in absent}
    if isinstance(listed, list):
        kept["metrics"] = [m for m in listed if m not in absent]
    return {**raw, "eval": kept}


def load_recipe(path: str | Path, overrides: Iterable[str] = (), saved: bool = False) -> Recipe:
    """Load, merge, override and validate the recipe at ``path`` (``saved``: one avade wrote, a run's
    recipe.toml, read as the avade that wrote it meant it: see :func:`with_saved_defaults`)."""
    refuse_a_string(overrides, "load_recipe: overrides", '["train.steps=100"]')
    path, overrides = Path(path), list(overrides)  # (read twice: applied, then checked against the sweep)
    try:
        raw, origins = read_recipe_tree(path)
        if saved:
            raw = _without_absent_metrics(with_saved_defaults(raw), str(path))
        raw = apply_overrides(raw, overrides, origins)
    except ConfigError as exc:
        raise ConfigError(one_line(exc.detail), path=one_line(exc.path),
                          source=one_line(exc.source) if exc.source else exc.source) from None
    recipe = recipe_from_dict(raw, source=_display(path), default_name=path.stem, origins=origins)
    if recipe.sweep is not None:  # a --set key that a sweep axis sets again in every variant does nothing
        axes = {*recipe.sweep.grid, *(k for combo in recipe.sweep.combos for k in combo)}
        hidden = [key for key in (parse_override(o)[0] if isinstance(o, str) else o[0] for o in overrides)
                  if key in axes]
        if hidden:
            warnings.warn(f"--set {', '.join(hidden)}: the sweep sets {'it' if len(hidden) == 1 else 'them'} in every "
                          "variant, so this value is not used; change sweep.grid (or sweep.combos) instead",
                          UserWarning, stacklevel=2)
    return recipe
