"""Strict, path-aware config validation (avade.schema.structure)."""

from __future__ import annotations

from typing import Any, Literal

import attrs
import pytest

from avade.errors import ConfigError
from avade.schema import between, describe, ge, gt, one_of, structure, unstructure


@attrs.define
class Inner:
    """A nested table."""

    depth: int = 2
    act: Literal["elu", "relu"] = "elu"


@attrs.define
class Outer:
    """Every supported field type."""

    count: int = attrs.field(default=1, validator=ge(1))
    rate: float = attrs.field(default=0.5, validator=between(0.0, 1.0))
    scale: float = attrs.field(default=1.0, validator=gt(0.0))
    flag: bool = False
    label: str = "x"
    mode: Literal["fast", "exact", "approximate"] = "fast"
    optional: int | None = None
    betas: tuple[float, float] = (0.9, 0.999)
    channels: tuple[int, ...] = (8, 16)
    names: list[str] = attrs.Factory(list)
    inner: Inner = attrs.Factory(Inner)
    pick: str = attrs.field(default="a", validator=one_of("a", "b"))


def error(data: dict[str, Any], path: str = "cfg") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        structure(Outer, data, path=path)
    assert "\n" not in str(info.value)
    return info.value


def test_defaults_and_valid_values() -> None:
    assert structure(Outer, {}) == Outer()
    cfg = structure(Outer, {"count": 3, "rate": 1, "flag": True, "label": "y", "mode": "exact", "optional": 4,
                            "betas": [0.5, 0.9], "channels": [1, 2, 3], "names": ["a"], "inner": {"depth": 5},
                            "pick": "b"})
    assert cfg.count == 3 and cfg.rate == 1.0 and type(cfg.rate) is float
    assert cfg.betas == (0.5, 0.9) and cfg.channels == (1, 2, 3) and cfg.inner == Inner(5, "elu")
    assert cfg.optional == 4


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("count", 3.5, "expected int, got 3.5"),
        ("count", "3", 'expected int, got "3"'),
        ("count", True, "expected int, got true"),
        ("count", 3.0, "expected int, got 3.0"),
        ("rate", True, "expected float, got true"),
        ("rate", "0.5", 'expected float, got "0.5"'),
        ("flag", 1, "expected bool, got 1"),
        ("flag", "true", "expected bool"),
        ("label", 3, "expected string, got 3"),
        ("optional", "4", "expected int"),
        ("optional", 4.5, "expected int"),
        ("names", "abc", "expected a list"),
        ("inner", 3, "expected a table, got 3"),
        ("betas", [0.1], "expected a list of 2 items, got 1"),
    ],
)
def test_strict_types(key: str, value: Any, expected: str) -> None:
    err = error({key: value})
    assert err.path == f"cfg.{key}"
    assert expected in err.detail


def test_int_is_accepted_for_float() -> None:
    cfg = structure(Outer, {"rate": 0, "scale": 2})
    assert cfg.rate == 0.0 and type(cfg.rate) is float and type(cfg.scale) is float


def test_none_is_accepted_for_optional_only() -> None:
    assert structure(Outer, {"optional": None}).optional is None
    assert error({"count": None}).path == "cfg.count"


def test_literal_lists_choices_and_suggests() -> None:
    err = error({"mode": "exakt"})
    assert err.path == "cfg.mode"
    assert "expected one of 'fast', 'exact', 'approximate'" in err.detail
    assert "did you mean 'exact'" in err.detail
    assert "did you mean" not in error({"mode": "zzzzzz"}).detail


def test_nested_paths() -> None:
    err = error({"inner": {"depth": "deep"}}, path="model.flow")
    assert err.path == "model.flow.inner.depth"
    assert str(err) == 'model.flow.inner.depth: expected int, got "deep"'
    err = error({"inner": {"act": "rellu"}})
    assert err.path == "cfg.inner.act" and "did you mean 'relu'" in err.detail


def test_list_element_paths_use_brackets() -> None:
    err = error({"betas": [0.9, "x"]}, path="train")
    assert err.path == "train.betas[1]"
    assert str(err) == 'train.betas[1]: expected float, got "x"'
    assert error({"channels": [8, 2.5, 4]}).path == "cfg.channels[1]"
    assert error({"names": ["a", "b", 3]}).path == "cfg.names[2]"


@attrs.define
class Required:
    """A plugin config with a field that has no default."""

    size: int
    rate: float = 1.0


@attrs.define
class HoldsRequired:
    inner: Required = attrs.Factory(lambda: Required(1))


def test_missing_required_key_names_it_once() -> None:
    with pytest.raises(ConfigError) as info:
        structure(Required, {"rate": 2.0}, path="model.flow")
    assert str(info.value) == "model.flow.size: missing required key"
    with pytest.raises(ConfigError) as info:
        structure(HoldsRequired, {"inner": {}}, path="model")
    assert info.value.path == "model.inner.size"


def test_unknown_keys_suggest_and_list_valid_keys() -> None:
    err = error({"cuont": 2})
    assert err.path == "cfg.cuont"
    assert "unknown key (did you mean 'count'?)" in err.detail
    assert "valid keys: count, rate" in err.detail
    nested = error({"inner": {"dpeth": 3}})
    assert nested.path == "cfg.inner.dpeth" and "did you mean 'depth'" in nested.detail


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("count", 0, "expected a number >= 1, got 0"),
        ("rate", 1.5, "expected a number in [0.0, 1.0], got 1.5"),
        ("scale", 0.0, "expected a number > 0.0, got 0.0"),
        ("scale", float("nan"), "expected a finite number > 0.0, got nan"),
        ("scale", float("inf"), "expected a finite number > 0.0, got inf"),
        ("scale", 1e39, "expected a number > 0.0 within float32's range (at most 3.403e+38), got 1e+39"),
        ("pick", "c", "expected one of 'a', 'b', got \"c\""),
    ],
)
def test_validators_are_readable_and_located(key: str, value: Any, expected: str) -> None:
    err = error({key: value}, path="x")
    assert err.path == f"x.{key}"
    assert expected in err.detail


def test_source_is_prefixed() -> None:
    with pytest.raises(ConfigError) as info:
        structure(Outer, {"count": "1"}, path="model", source="recipes/a.toml")
    assert str(info.value) == 'recipes/a.toml: model.count: expected int, got "1"'


def test_unstructure_round_trip_and_describe() -> None:
    cfg = Outer(count=2, channels=(4,), optional=None)
    data = unstructure(cfg)
    assert "optional" not in data and data["channels"] == [4]
    assert structure(Outer, data) == cfg
    fields = {f["name"]: f for f in describe(Outer)}
    assert fields["count"]["type"] == "int" and fields["count"]["default"] == 1
    assert fields["betas"]["default"] == [0.9, 0.999]
    assert fields["mode"]["type"] == "'fast' | 'exact' | 'approximate'"


def test_a_literal_takes_its_values_only_not_equal_ones_of_another_type() -> None:
    # True == 1 and 1.0 == 1 in Python: `channels = true` or `1.0` must not pass as channels 1
    @attrs.define
    class Cfg:
        channels: Literal[1, 3] = 3

    assert structure(Cfg, {"channels": 1}).channels == 1
    for bad in (True, 1.0):
        with pytest.raises(ConfigError, match="channels: expected one of 1, 3"):
            structure(Cfg, {"channels": bad})


def test_none_passes_only_a_union_that_has_none() -> None:
    @attrs.define
    class Cfg:
        size: int | str = 1
        limit: int | None = 1

    assert structure(Cfg, {"limit": None}).limit is None
    with pytest.raises(ConfigError, match="size: expected int or string, got None"):
        structure(Cfg, {"size": None})


@attrs.define
class _Derived:
    size: int = 4
    half: int = attrs.field(default=attrs.Factory(lambda self: self.size // 2, takes_self=True))


@attrs.define
class _DerivedRequired:
    root: str
    copy: str = attrs.field(default=attrs.Factory(lambda self: self.root, takes_self=True))


def test_describe_shows_a_default_computed_from_other_fields() -> None:
    # (a takes_self factory called without the instance raised TypeError: list-components --json --schema crashed)
    assert [r["default"] for r in describe(_Derived)] == [4, 2]
    assert [r["default"] for r in describe(_DerivedRequired)] == ["<required>", "<computed>"]


def test_unstructure_keeps_none_when_asked() -> None:
    @attrs.define
    class Opt:
        clamp: float | None = 1.0

    assert unstructure(Opt(clamp=None)) == {}
    assert unstructure(Opt(clamp=None), drop_none=False) == {"clamp": None}
    assert structure(Opt, unstructure(Opt(clamp=None), drop_none=False)).clamp is None


def test_component_kinds_take_their_article_in_messages() -> None:
    from avade.errors import a_or_an
    from avade.recipe import recipe_from_dict

    assert [a_or_an(k) for k in ("flow", "encoder", "posterior", "IAF")] == ["a flow", "an encoder", "a posterior",
                                                                             "an IAF"]
    with pytest.raises(ConfigError, match=r"missing `name` \(choose an encoder;"):  # (was "choose a encoder")
        recipe_from_dict({"model": {"encoder": {"channels": [8]}}})
