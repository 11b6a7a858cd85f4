"""The Python API, called from a notebook with the wrong kind of argument, says which argument and how to fix it,
before anything runs (not an AttributeError from deep inside, nor a string taken character by character)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_recipes import ROOT, tiny_dict

from avade.evaluate import evaluate_run
from avade.recipe import load_recipe
from avade.train.run import run_recipe, run_recipe_file
from avade.train.trainer import Trainer

QUICKSTART = ROOT / "recipes" / "quickstart.toml"


@pytest.mark.parametrize("recipe", [str(QUICKSTART), QUICKSTART, tiny_dict()], ids=["str", "path", "dict"])
def test_training_takes_a_recipe_and_says_how_to_make_one(recipe: object, tmp_path: Path) -> None:
    # (was: AttributeError: 'str' object has no attribute 'source' / 'dict' object has no attribute 'train')
    for what, call in (("run_recipe", lambda: run_recipe(recipe, tmp_path / "run")),  # type: ignore[arg-type]
                       ("Trainer", lambda: Trainer(recipe, tmp_path / "run"))):  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=f"^{what}: expected a Recipe, got .*load_recipe\\(path, overrides\\)"):
            call()
    assert not (tmp_path / "run").exists()


def test_a_list_given_as_one_string_is_refused(tmp_path: Path) -> None:
    # (was: "--set expects dotted.key=value, got 't'" and "unknown metric 'b'")
    with pytest.raises(TypeError, match=r"^load_recipe: overrides: .*got the string 'train.steps=3'; put it in a "
                                        r"list: \['train.steps=3'\]"):
        load_recipe(QUICKSTART, "train.steps=3")
    with pytest.raises(TypeError, match=r"^run_recipe_file: overrides: .*got the string 'train.steps=3'"):
        run_recipe_file(QUICKSTART, "train.steps=3", out_dir=tmp_path / "run")
    with pytest.raises(TypeError, match=r"^metrics: expected a list of strings, .*got the string 'bpd'"):
        evaluate_run(tmp_path / "run", metrics="bpd")
    with pytest.raises(TypeError, match=r"^overrides: .*got the string 'data.root=x'"):
        evaluate_run(tmp_path / "run", overrides="data.root=x")
    assert not (tmp_path / "run").exists()
    assert load_recipe(QUICKSTART, ("train.steps=3",)).train.steps == 3  # any other iterable still works


def test_overrides_given_as_a_dict_are_refused_with_the_list_to_give() -> None:
    # (was: the dict's keys alone were taken: "--set expects dotted.key=value, got 'train.steps'")
    from avade.recipe import apply_overrides

    with pytest.raises(TypeError, match=r"""^load_recipe: overrides: .*got a dict; give its items as strings: """
                                        r"""\['train.steps=3', 'data.root="/d"'\]"""):
        load_recipe(QUICKSTART, {"train.steps": 3, "data.root": "/d"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^apply_overrides: overrides: .*got the string 'train.steps=3'"):
        apply_overrides({}, "train.steps=3")  # type: ignore[arg-type]


def test_a_dict_of_overrides_is_hinted_as_strings_a_set_takes() -> None:
    # (was: a Path value raised "Object of type PosixPath is not JSON serializable", and JSON's NaN and {"k": v}
    # were no --set values: NaN the string 'NaN', {"name": "glow"} a TOML error)
    import ast
    from pathlib import Path

    from avade.recipe import apply_overrides, parse_override

    given = {"data.root": Path("/d"), "train.lr": float("nan"), "model.flow": {"name": "glow"}, "model.a": [1, True]}
    with pytest.raises(TypeError, match=r"got a dict; give its items as strings: ") as err:
        apply_overrides({}, given)  # type: ignore[arg-type]
    items = ast.literal_eval(str(err.value).split("give its items as strings: ")[1])  # (the list, as repr wrote)
    parsed = dict(parse_override(item) for item in items)
    assert parsed["data.root"] == "/d" and parsed["train.lr"] != parsed["train.lr"]
    assert parsed["model.flow"] == {"name": "glow"} and parsed["model.a"] == [1, True]


def test_training_one_recipe_refuses_a_sweep_instead_of_training_its_base_alone(tmp_path: Path) -> None:
    # (was: run_recipe and Trainer trained the base recipe once, none of the sweep's variants, without a word)
    from avade.errors import ConfigError
    from avade.recipe import expand_sweep, recipe_from_dict

    sweep = recipe_from_dict({**tiny_dict("train.steps=1"), "sweep": {"grid": {"train.lr": [0.001, 0.002]}}})
    for what, call in (("run_recipe", lambda: run_recipe(sweep, tmp_path / "run", progress=False)),
                       ("Trainer", lambda: Trainer(sweep, tmp_path / "run", progress=False))):
        with pytest.raises(ConfigError, match=f"^sweep: {what} trains one recipe, but this one has a \\[sweep\\].*"
                                              "run_recipe_file.*expand_sweep"):
            call()
    assert not (tmp_path / "run").exists()
    first = expand_sweep(sweep)[0].recipe  # a variant is one recipe: trained as it is
    assert first.sweep is None and first.train.lr == 0.001


def test_a_dict_with_extends_is_refused_instead_of_built_from_the_defaults() -> None:
    # (was: extends was dropped, silently: the recipe got the default model and data, not the parent's)
    from avade.errors import ConfigError
    from avade.recipe import recipe_from_dict

    with pytest.raises(ConfigError, match=r"^extends: .*quickstart\.toml.* a dict's extends is not followed.*"
                                          r"load_recipe\(path, overrides\)"):
        recipe_from_dict({"extends": str(QUICKSTART), "train": {"steps": 3}})
    assert recipe_from_dict(tiny_dict()).name == "tiny"  # a dict without it, as ever


@pytest.mark.parametrize("recipe", [str(QUICKSTART), QUICKSTART, tiny_dict()], ids=["str", "path", "dict"])
def test_building_and_expanding_take_a_recipe_and_say_how_to_make_one(recipe: object) -> None:
    # (was: AttributeError: 'dict' object has no attribute 'model' / 'str' object has no attribute 'sweep')
    from avade.models.build import build_model
    from avade.recipe import expand_sweep

    for what, call in (("build_model", lambda: build_model(recipe)),  # type: ignore[arg-type]
                       ("expand_sweep", lambda: expand_sweep(recipe))):  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=f"^{what}: expected a Recipe, got .*load_recipe\\(path, overrides\\)"):
            call()


def test_a_channels_last_data_shape_and_a_non_generator_are_named() -> None:
    # (was: "input resolution 8x3 is not divisible by 2", and "'int' object has no attribute 'device'")
    import torch

    from avade.errors import ConfigError
    from avade.models.build import build_model
    from avade.recipe import recipe_from_dict

    recipe = recipe_from_dict(tiny_dict())
    with pytest.raises(ConfigError, match=r"data_shape \(8, 8, 3\) looks like \(height, width, channels\); give "
                                          r"\(channels, height, width\): \(3, 8, 8\)"):
        build_model(recipe, data_shape=(8, 8, 3))
    model = build_model(recipe, data_shape=(3, 8, 8))
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    with pytest.raises(TypeError, match=r"generator must be a torch.Generator \(or None\), got int 0"):
        model.log_likelihood(x, generator=0)  # type: ignore[arg-type]
    assert model.log_likelihood(x, generator=torch.Generator().manual_seed(0))["bpd"].shape == (2,)
