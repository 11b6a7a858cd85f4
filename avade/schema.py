"""Strict, path-aware validation of config tables into attrs classes (cattrs underneath).

Every component declares its config as an attrs class. :func:`structure` turns a TOML/kwargs mapping
into that class and raises :class:`~avade.errors.ConfigError` naming the exact key path on the first
problem: an unknown key (with close-match suggestions), a wrong type, or a failed validator. No silent
coercion: ``"3"`` is not an int and ``3.5`` is not an int either.
"""

from __future__ import annotations

import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar, get_args, get_origin

import attrs
import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

from avade.errors import ConfigError, did_you_mean

__all__ = [
    "between",
    "describe",
    "ge",
    "gt",
    "one_of",
    "structure",
    "unstructure",
]

T = TypeVar("T")

_TYPE_NAMES = {int: "int", float: "float", bool: "bool", str: "string"}


def _got(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return f"a list {list(value)!r}" if len(repr(value)) < 40 else "a list"
    if isinstance(value, bool):
        return str(value).lower()  # as TOML (and --set) spell it
    return repr(value) if not isinstance(value, str) else f'"{value}"'


def _strict(kind: type) -> Callable[[Any, Any], Any]:
    def hook(value: Any, _t: Any) -> Any:
        ok = type(value) is kind or (kind is float and type(value) is int)
        if not ok:
            raise ConfigError(f"expected {_TYPE_NAMES[kind]}, got {_got(value)}")
        return kind(value)

    return hook


def _is_literal(t: Any) -> bool:
    return get_origin(t) is Literal


def _literal_hook_factory(t: Any) -> Callable[[Any, Any], Any]:
    allowed = get_args(t)

    def hook(value: Any, _t: Any) -> Any:
        if value not in allowed or type(value) is not type(next((a for a in allowed if a == value), value)):
            choices = ", ".join(str(a).lower() if isinstance(a, bool) else repr(a) for a in allowed)  # TOML's
            hint = did_you_mean(value, [str(a) for a in allowed]) if isinstance(value, str) else ""
            raise ConfigError(f"expected one of {choices}, got {_got(value)}{hint}")
        return value

    return hook


def _is_sequence(t: Any) -> bool:
    return get_origin(t) in (list, tuple)


def _sequence_hook_factory(t: Any) -> Callable[[Any, Any], Any]:
    origin, args = get_origin(t), get_args(t)
    if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
        fixed: tuple[Any, ...] | None = args
        elem = None
    else:
        fixed, elem = None, (args[0] if args else Any)

    def hook(value: Any, _t: Any) -> Any:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"expected a list, got {_got(value)}")
        if fixed is not None and len(value) != len(fixed):
            raise ConfigError(f"expected a list of {len(fixed)} items, got {len(value)}")
        out = []
        for i, item in enumerate(value):
            item_t = fixed[i] if fixed is not None else elem
            try:
                out.append(item if item_t is Any else _converter.structure(item, item_t))
            except Exception as exc:
                raise _prefixed(_to_config_error(exc), f"[{i}]") from None
        return origin(out)

    return hook


def _is_dict(t: Any) -> bool:
    return get_origin(t) is dict or t is dict


def _dict_hook_factory(t: Any) -> Callable[[Any, Any], Any]:
    args = get_args(t)
    value_t = args[1] if len(args) == 2 else Any

    def hook(value: Any, _t: Any) -> Any:
        if not isinstance(value, Mapping):
            raise ConfigError(f"expected a table, got {_got(value)}")
        out = {}
        for k, v in value.items():
            try:
                out[str(k)] = v if value_t is Any else _converter.structure(v, value_t)
            except Exception as exc:
                raise _prefixed(_to_config_error(exc), str(k)) from None
        return out

    return hook


def _is_attrs_class(t: Any) -> bool:
    return isinstance(t, type) and attrs.has(t)


def _attrs_hook_factory(t: Any) -> Callable[[Any, Any], Any]:
    base = cattrs.gen.make_dict_structure_fn(t, _converter, _cattrs_forbid_extra_keys=True)

    def hook(value: Any, _t: Any) -> Any:
        if not isinstance(value, Mapping):
            raise ConfigError(f"expected a table, got {_got(value)}")
        fields = [f.alias or f.name for f in attrs.fields(t) if f.init]
        for key in value:
            if key not in fields:
                raise ConfigError(
                    f"unknown key{did_you_mean(str(key), fields)}; valid keys: {', '.join(fields) or '(none)'}",
                    path=str(key),
                )
        return base(value, t)

    return hook


def _any_hook(value: Any, _t: Any) -> Any:
    return value


def _union_hook_factory(t: Any) -> Callable[[Any, Any], Any]:
    args = get_args(t)
    non_none = [a for a in args if a is not type(None)]

    def hook(value: Any, _t: Any) -> Any:
        if value is None and type(None) in args:
            return None
        errors = []
        for a in non_none:
            try:
                return _converter.structure(value, a)
            except Exception as exc:
                errors.append(_to_config_error(exc))
        if len(errors) == 1:
            raise errors[0]
        names = " or ".join(_type_name(a) for a in non_none)
        raise ConfigError(f"expected {names}, got {_got(value)}")

    return hook


def _is_union(t: Any) -> bool:
    return get_origin(t) in (typing.Union, types.UnionType)


_converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
for _kind in (int, float, bool, str):
    _converter.register_structure_hook(_kind, _strict(_kind))
_converter.register_structure_hook(Any, _any_hook)
_converter.register_structure_hook_factory(_is_literal, _literal_hook_factory)
_converter.register_structure_hook_factory(_is_union, _union_hook_factory)
_converter.register_structure_hook_factory(_is_sequence, _sequence_hook_factory)
_converter.register_structure_hook_factory(_is_dict, _dict_hook_factory)
_converter.register_structure_hook_factory(_is_attrs_class, _attrs_hook_factory)


def _prefixed(err: ConfigError, prefix: str) -> ConfigError:
    """``err`` one level down: ``betas`` + ``[1]`` -> ``betas[1]`` (list indices take no dot)."""
    return ConfigError(err.detail, path=_join(prefix, err.path), source=err.source)


def _to_config_error(exc: BaseException) -> ConfigError:
    """Flatten cattrs' exception groups into the first error, with its key path."""
    if isinstance(exc, ConfigError):
        return exc
    if isinstance(exc, ForbiddenExtraKeysError):
        fields = [f.name for f in attrs.fields(exc.cl)]
        key = sorted(exc.extra_fields)[0]
        return ConfigError(f"unknown key{did_you_mean(key, fields)}", path=key)
    if isinstance(exc, ClassValidationError | IterableValidationError):
        with_notes, without_notes = exc.group_exceptions()
        for sub, note in with_notes:
            prefix = getattr(note, "name", None)
            if prefix is None:
                prefix = f"[{getattr(note, 'index', '?')}]"
            if isinstance(sub, KeyError):  # the note already names the missing key; its args repeat it
                return ConfigError("missing required key", path=prefix)
            return _prefixed(_to_config_error(sub), prefix)
        for sub in without_notes:
            return _to_config_error(sub)
    if isinstance(exc, BaseExceptionGroup):
        return _to_config_error(exc.exceptions[0])
    if isinstance(exc, KeyError):
        return ConfigError("missing required key", path=str(exc.args[0]) if exc.args else "")
    if isinstance(exc, TypeError) and "missing" in str(exc) and "required" in str(exc):
        name = str(exc).rsplit("'", 2)[-2] if "'" in str(exc) else ""
        return ConfigError("missing required key", path=name)
    if isinstance(exc, ValueError | TypeError) and len(exc.args) > 1 and isinstance(exc.args[0], str):
        # attrs' validators add (attribute, options, value) to the message: keep the message, locate the key
        attribute = exc.args[1]
        return ConfigError(exc.args[0], path=attribute.name if isinstance(attribute, attrs.Attribute) else "")
    named = re.match(r"'(\w+)' must ", str(exc)) if isinstance(exc, ValueError | TypeError) else None
    return ConfigError(str(exc) or type(exc).__name__, path=named.group(1) if named else "")  # attrs' ge, lt, ...


def structure(cls: type[T], data: Mapping[str, Any] | None, path: str = "", source: str | None = None) -> T:
    """Validate ``data`` against the attrs class ``cls``; raise ConfigError at ``source: path.key``."""
    try:
        return _converter.structure(dict(data or {}) if isinstance(data, Mapping) else data, cls)
    except Exception as exc:
        err = _to_config_error(exc)
        # Join "a" + "[0]" without a dot.
        err = ConfigError(err.detail, path=_join(path, err.path), source=source or err.source)
        raise err from None


def _join(prefix: str, path: str) -> str:
    if not prefix:
        return path
    if not path:
        return prefix
    return prefix + path if path.startswith("[") else f"{prefix}.{path}"


def unstructure(obj: Any, drop_none: bool = True) -> Any:
    """attrs instance -> plain TOML-able data (tuples become lists, ``None`` values are dropped unless
    ``drop_none`` is False: data that :func:`structure` reads back, where a ``None`` of an ``Optional`` field
    must stay ``None`` rather than become the field's default)."""
    data = _converter.unstructure(obj)
    return _drop_none(data) if drop_none else data


def _drop_none(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _drop_none(v) for k, v in data.items() if v is not None}
    if isinstance(data, list | tuple):
        return [_drop_none(v) for v in data]
    return data


def _type_name(t: Any) -> str:
    if t in _TYPE_NAMES:
        return _TYPE_NAMES[t]
    if _is_literal(t):
        return " | ".join(str(a).lower() if isinstance(a, bool) else repr(a) for a in get_args(t))  # TOML spelling
    if _is_union(t):
        return " | ".join(_type_name(a) for a in get_args(t))
    if t is type(None):
        return "none"
    if _is_sequence(t):
        args = get_args(t)
        return f"list[{_type_name(args[0])}]" if args else "list"
    if _is_dict(t):
        return "table"
    return getattr(t, "__name__", str(t))


def describe(cls: type) -> list[dict[str, Any]]:
    """The fields of a config schema: name, type, default (JSON-friendly), for docs and ``--json``."""
    hints = typing.get_type_hints(cls)
    out = []
    instance: Any = None
    for f in attrs.fields(cls):
        default: Any
        if f.default is attrs.NOTHING:
            default = "<required>"
        elif isinstance(f.default, attrs.Factory) and f.default.takes_self:  # type: ignore[arg-type]
            # computed from the other fields: the value a config of all defaults gets
            if instance is None:
                try:
                    instance = cls()
                except Exception:  # a required field (or a failing default): no such config
                    instance = False
            default = unstructure(getattr(instance, f.name)) if instance is not False else "<computed>"
        elif isinstance(f.default, attrs.Factory):  # type: ignore[arg-type]
            default = unstructure(f.default.factory())
        else:
            default = unstructure(f.default) if attrs.has(type(f.default)) else f.default
        if isinstance(default, tuple):
            default = list(default)
        out.append({"name": f.name, "type": _type_name(hints.get(f.name, f.type)), "default": default,
                    "help": f.metadata.get("help", "")})
    return out


# --- validators with readable messages -------------------------------------------------------------


FLOAT32_MAX = 3.4028234663852886e38  # what the networks, their optimizers and losses compute in


def _number(value: Any) -> str:
    return "a finite number" if isinstance(value, float) and not math.isfinite(value) else "a number"


def _beyond_float32(value: Any, bound: str, attr: attrs.Attribute) -> None:
    """A ConfigError for a float past float32's range (e.g. ``train.lr = 1e39``: the optimizer cannot take it)."""
    if isinstance(value, float) and math.isfinite(value) and abs(value) > FLOAT32_MAX:
        raise ConfigError(f"expected a number {bound} within float32's range (at most {FLOAT32_MAX:.4g}), got "
                          f"{_got(value)}", path=attr.name)


def ge(bound: float) -> Callable[[Any, attrs.Attribute, Any], None]:
    """attrs validator: value >= bound."""

    def check(_inst: Any, attr: attrs.Attribute, value: Any) -> None:
        # Written as `not (value >= bound)` so that NaN fails too; infinity is no setting either.
        if value is not None and not (value >= bound and math.isfinite(value)):
            raise ConfigError(f"expected {_number(value)} >= {bound}, got {_got(value)}", path=attr.name)
        _beyond_float32(value, f">= {bound}", attr)

    return check


def gt(bound: float) -> Callable[[Any, attrs.Attribute, Any], None]:
    """attrs validator: value > bound."""

    def check(_inst: Any, attr: attrs.Attribute, value: Any) -> None:
        if value is not None and not (value > bound and math.isfinite(value)):
            raise ConfigError(f"expected {_number(value)} > {bound}, got {_got(value)}", path=attr.name)
        _beyond_float32(value, f"> {bound}", attr)

    return check


def between(low: float, high: float) -> Callable[[Any, attrs.Attribute, Any], None]:
    """attrs validator: low <= value <= high."""

    def check(_inst: Any, attr: attrs.Attribute, value: Any) -> None:
        if value is not None and not (low <= value <= high):
            raise ConfigError(f"expected a number in [{low}, {high}], got {_got(value)}", path=attr.name)

    return check


def one_of(*choices: Any) -> Callable[[Any, attrs.Attribute, Any], None]:
    """attrs validator: value is one of ``choices`` (for values not expressible as ``Literal``)."""

    def check(_inst: Any, attr: attrs.Attribute, value: Any) -> None:
        if value not in choices:
            hint = did_you_mean(value, [str(c) for c in choices]) if isinstance(value, str) else ""
            raise ConfigError(
                f"expected one of {', '.join(map(repr, choices))}, got {_got(value)}{hint}", path=attr.name
            )

    return check
