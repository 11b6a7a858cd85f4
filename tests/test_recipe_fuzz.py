"""Property tests: whatever a recipe file holds, loading it succeeds or raises one ConfigError line.

Never another exception type, never a multi-line message: the CLI turns anything else into an
"internal error". Bounded (about 150 examples per property, derandomized) to stay fast.
"""

from __future__ import annotations

import copy
import datetime as dt
import math
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from avade.cli.app import app
from avade.errors import AvadeError, ConfigError
from avade.recipe import Recipe, expand_sweep, load_recipe, recipe_to_toml

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

BASE: dict[str, Any] = {
    "description": "fuzz base",
    "model": {
        "variant": "av-ade",
        "flow": {"name": "realnvp", "scales": 1, "blocks": 1, "hidden": 8},
        "encoder": {"name": "conv", "channels": [8, 16]},
        "posterior": {"name": "diagonal", "latent_channels": 4},
        "decoder": {"name": "conv"},
        "discriminator": {"name": "dcgan", "channels": [8, 16, 32]},
    },
    "data": {"name": "natural-patches", "resolution": 16, "batch_size": 8},
    "train": {"steps": 10, "lr": 0.002, "betas": [0.5, 0.9]},
    "eval": {"metrics": ["bpd"]},
}

KNOWN_PATHS = [
    "name", "description", "extends", "model", "model.variant", "model.likelihood", "model.sigma",
    "model.sigma_init", "model.logit_alpha", "model.conditional", "model.temperature", "model.flow",
    "model.flow.name", "model.flow.scales", "model.flow.blocks", "model.flow.hidden", "model.flow.norm",
    "model.encoder", "model.encoder.channels", "model.posterior.name", "model.posterior.latent_channels",
    "model.decoder.name", "model.discriminator", "model.discriminator.channels", "data", "data.name",
    "data.resolution", "data.batch_size", "data.root", "data.download", "train", "train.steps", "train.lr",
    "train.betas", "train.d_lr", "train.device", "train.grad_clip", "train.optimizer", "eval",
    "eval.metrics", "eval.every", "eval.fid", "eval.inception_weights", "sweep", "sweep.grid",
    "sweep.combos",
]
TABLES = ["", "model", "model.flow", "model.encoder", "model.posterior", "model.discriminator", "data",
          "train", "eval", "sweep"]
COMPONENT_NAME_PATHS = ["model.flow.name", "model.encoder.name", "model.posterior.name", "model.decoder.name",
                        "model.discriminator.name", "data.name", "eval.metrics"]

# -- strategies ---------------------------------------------------------------------------------------

keys = st.one_of(st.sampled_from(["x", "scales", "Scales", "name", "steps", "lr", "a.b", "", " ", "[/x]"]),
                 st.text(min_size=1, max_size=12))
scalars = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=20),
    st.sampled_from(["realnvp", "glow", "none", "av-ade", "gan", "bpd", "fid", "cpu", "1", "base.toml", "."]),
    st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2100, 1, 1)),
    st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2100, 1, 1)),
)
toml_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=3)),
    max_leaves=8,
)

HEADERS = ["[model]", "[model.flow]", "[model.encoder]", "[train]", "[data]", "[eval]", "[sweep]", "[[model]]",
           "[model.flow.name]", "[sweep.grid]", "[[sweep.combos]]", "[eval.fid]", "[", "[]", "[a b]"]
LITERALS = ['"realnvp"', '"none"', '"natural-patches"', "1", "0", "-3", "2.5", "nan", "inf", "true", "1979-05-27",
            "[1, 2]", "[0.5, 0.9]", '["bpd", "fid"]', "{}", '{name = "glow"}', '"unterminated', "[1,", "0x1f",
            "'lit'", '"""multi\nline"""', "{a = 1", "= 3", '"base.toml"', '["a.toml"]',
            '{"model.flow.scales" = [1, 2]}', '[{"train.seed" = 1}, {"train.seed" = 1}]']
KEY_TEXT = ["name", "variant", "scales", "blocks", "steps", "lr", "betas", "metrics", "extends", "grid", "combos",
            "batch_size", "resolution", "x", '"quoted.key"', "a.b", "scalse", "1", "-"]
lines = st.one_of(
    st.sampled_from(HEADERS),
    st.builds(lambda k, v: f"{k} = {v}", st.sampled_from(KEY_TEXT), st.sampled_from(LITERALS)),
    st.text(max_size=30),
)
toml_like = st.lists(lines, max_size=12).map("\n".join)


def set_path(data: dict[str, Any], path: str, value: Any) -> None:
    """``data[a][b][c] = value`` for ``"a.b.c"``, replacing non-tables on the way."""
    node = data
    parts = path.split(".") if path else []
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    if parts:
        node[parts[-1]] = value
    elif isinstance(value, dict):
        data.update(value)


# -- assertions ----------------------------------------------------------------------------------------


def assert_one_line(exc: BaseException) -> None:
    assert isinstance(exc, ConfigError), f"{type(exc).__name__} is not a ConfigError: {exc}"
    message = str(exc)
    assert message.strip(), repr(message)
    assert len(message.splitlines()) == 1, repr(message)


def load_or_config_error(path: Path, overrides: list[str] | None = None) -> Recipe | None:
    """Load ``path``; only a one-line ConfigError may escape. A loaded recipe must also show and expand."""
    try:
        recipe = load_recipe(path, overrides or [])
    except AvadeError as exc:
        assert_one_line(exc)
        return None
    text = recipe_to_toml(recipe)
    tomllib.loads(text)
    try:
        expand_sweep(recipe)
    except AvadeError as exc:
        assert_one_line(exc)
    return recipe


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fuzz")
    (path / "base.toml").write_text(tomli_w.dumps(BASE), encoding="utf-8")
    return path


def write(folder: Path, text: str | bytes) -> Path:
    path = folder / "recipe.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
    return path


# -- properties ----------------------------------------------------------------------------------------


@FUZZ
@given(text=st.one_of(st.text(max_size=200), toml_like, st.binary(max_size=64)))
def test_random_text(folder: Path, text: str | bytes) -> None:
    load_or_config_error(write(folder, text))


@FUZZ
@given(path=st.sampled_from(KNOWN_PATHS), value=toml_values)
def test_wrong_values_for_known_keys(folder: Path, path: str, value: Any) -> None:
    data = copy.deepcopy(BASE)
    set_path(data, path, value)
    load_or_config_error(write(folder, tomli_w.dumps(data)))


@FUZZ
@given(table=st.sampled_from(TABLES), key=st.text(max_size=12).map(lambda k: "zz" + k), value=toml_values)
def test_unknown_keys(folder: Path, table: str, key: str, value: Any) -> None:
    data = copy.deepcopy(BASE)
    set_path(data, f"{table}.{key}" if table else key, value)
    with pytest.raises(AvadeError) as info:
        load_recipe(write(folder, tomli_w.dumps(data)))
    assert_one_line(info.value)
    assert "unknown" in str(info.value)
    assert info.value.path.startswith(f"{table}.zz" if table else "zz"), info.value.path


@FUZZ
@given(path=st.sampled_from(COMPONENT_NAME_PATHS), name=st.one_of(st.text(max_size=20), st.sampled_from(
    ["realnvp", "glow", "nice", "none", "resnet", "conv", "iaf", "topdown", "digits", "fid", "REALNVP", "real nvp"])))
def test_random_component_names(folder: Path, path: str, name: str) -> None:
    data = copy.deepcopy(BASE)
    set_path(data, path, [name] if path == "eval.metrics" else name)
    load_or_config_error(write(folder, tomli_w.dumps(data)))


@FUZZ
@given(overrides=st.lists(st.one_of(
    st.text(max_size=30),
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KNOWN_PATHS), st.sampled_from([*LITERALS, "glow", "a b"])),
), max_size=3))
def test_random_set_overrides(folder: Path, overrides: list[str]) -> None:
    load_or_config_error(folder / "base.toml", overrides)


@FUZZ
@given(extends=st.one_of(st.text(max_size=30), st.sampled_from(["base.toml", "recipe.toml", ".", "", "..", "/"]),
                         st.lists(st.sampled_from(["base.toml", "nope.toml", "recipe.toml"]), max_size=3)),
       sweep=st.one_of(st.none(), st.dictionaries(st.sampled_from(["model.flow.scales", "train.seed", "x.y",
                                                                   "model.flow", "train.lr.z"]),
                                                  st.lists(scalars, max_size=3), max_size=2)))
def test_random_extends_and_sweeps(folder: Path, extends: Any, sweep: dict[str, Any] | None) -> None:
    data: dict[str, Any] = {"extends": extends, "train": {"seed": 1}}
    if sweep is not None:
        data["sweep"] = {"grid": sweep}
    load_or_config_error(write(folder, tomli_w.dumps(data)))


# -- valid recipes -------------------------------------------------------------------------------------

flows = st.one_of(
    st.builds(lambda s, b, h: {"name": "realnvp", "scales": s, "blocks": b, "hidden": h},
              st.integers(1, 3), st.integers(1, 4), st.integers(1, 64)),
    st.builds(lambda s, n: {"name": "glow", "scales": s, "steps": n}, st.integers(1, 3), st.integers(1, 8)),
)
valid_recipes = st.fixed_dictionaries({
    "variant": st.sampled_from(["av-ade", "v-ade", "av-gde", "vae", "gan"]),
    "flow": flows,
    "posterior": st.sampled_from(["diagonal", "iaf", "topdown"]),
    "discriminator": st.sampled_from(["dcgan", "resnet"]),
    "data": st.sampled_from(["natural-patches", "digits", "synthetic"]),
    "steps": st.integers(1, 10**6),
    "lr": st.floats(1e-6, 1.0),
    "betas": st.tuples(st.floats(0, 0.99), st.floats(0, 0.9999)),
    "seed": st.integers(0, 2**31),
    "metrics": st.lists(st.sampled_from(["bpd", "fid", "kid", "is", "prd"]), unique=True, min_size=1),
    "sweep": st.one_of(st.none(), st.lists(st.integers(0, 5), min_size=1, max_size=3, unique=True)),
})


@FUZZ
@given(spec=valid_recipes)
def test_valid_recipes_load_and_round_trip(folder: Path, spec: dict[str, Any]) -> None:
    model: dict[str, Any] = {"variant": spec["variant"], "posterior": {"name": spec["posterior"]}}
    if spec["variant"] in ("av-ade", "v-ade"):
        model["flow"] = spec["flow"]
    if spec["variant"] in ("av-ade", "av-gde", "gan"):
        model["discriminator"] = {"name": spec["discriminator"]}
    data: dict[str, Any] = {
        "model": model,
        "data": {"name": spec["data"]},
        "train": {"steps": spec["steps"], "lr": spec["lr"], "betas": list(spec["betas"]), "seed": spec["seed"]},
        "eval": {"metrics": spec["metrics"]},
    }
    if spec["sweep"] is not None:
        data["sweep"] = {"grid": {"train.seed": spec["sweep"]}}
    recipe = load_recipe(write(folder, tomli_w.dumps(data)))
    assert recipe.variant == spec["variant"] and recipe.train.seed == spec["seed"]
    assert math.isclose(recipe.train.lr, spec["lr"])
    assert (recipe.model.flow is not None) == (spec["variant"] in ("av-ade", "v-ade"))
    again = load_recipe(write(folder, recipe_to_toml(recipe)))
    assert again == recipe
    variants = expand_sweep(recipe)
    assert len(variants) == (len(spec["sweep"]) if spec["sweep"] is not None else 1)


# -- through the CLI -----------------------------------------------------------------------------------


@settings(FUZZ, max_examples=25)
@given(path=st.sampled_from(KNOWN_PATHS), value=toml_values)
def test_cli_recipe_check_fails_in_one_line(folder: Path, path: str, value: Any) -> None:
    data = copy.deepcopy(BASE)
    set_path(data, path, value)
    result = CliRunner().invoke(app, ["recipe", "check", str(write(folder, tomli_w.dumps(data)))])
    assert result.exit_code in (0, 2), (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    else:
        assert result.stdout.startswith("ok: ")


@pytest.mark.parametrize("text", ["x = " + "[" * 2000 + "]" * 2000, "x = " + "{a = " * 400 + "1" + "}" * 400,
                                  "[" + ".".join(["a"] * 3000) + "]", "x = " + "[" * 70 + "]" * 70])
def test_deeply_nested_recipe_is_one_config_error(tmp_path: Path, text: str) -> None:
    # tomllib (arrays, inline tables) and extends' merge (dotted tables) recurse: a RecursionError was an
    # internal error
    path = tmp_path / "deep.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"deep.toml: tables or arrays nested more than 64 deep"):
        load_recipe(path)
    with pytest.raises(ConfigError, match=r"--set train.betas: its value nests .* more than 64 deep"):
        (tmp_path / "ok.toml").write_text(tomli_w.dumps(BASE))
        load_recipe(tmp_path / "ok.toml", ["train.betas=" + "[" * 2000 + "]" * 2000])


@pytest.mark.parametrize("name", ["a\nb", "red\x1b[31m", "tab\there", "nul\x00"])
def test_a_recipe_name_with_control_characters_is_refused(tmp_path: Path, name: str) -> None:
    # training prints the name (`<name> (<variant>) -> <run>`, every progress line): a line break or an escape
    # sequence of a shared recipe reached the terminal
    path = tmp_path / "r.toml"
    path.write_text(tomli_w.dumps({**BASE, "name": name}))
    with pytest.raises(ConfigError, match=r"r.toml: name: .* holds a control character") as info:
        load_recipe(path)
    assert str(info.value).isprintable()
