"""``build_model(recipe)`` in a notebook: the image shape and class count from the dataset's settings, where they
say them without loading the data; a ConfigError asks for what they do not."""

from __future__ import annotations

from pathlib import Path

import pytest

from avade.errors import ConfigError
from avade.models.build import build_model
from avade.recipe import load_recipe

QUICKSTART = Path(__file__).resolve().parents[2] / "recipes" / "quickstart.toml"


def test_shape_and_classes_come_from_the_dataset_settings() -> None:
    model = build_model(load_recipe(QUICKSTART))
    assert model.data_shape == (3, 16, 16) and model.num_classes == 0
    digits = build_model(load_recipe(QUICKSTART, ['data.name="digits"', "model.conditional=true"]))
    assert digits.data_shape == (1, 16, 16) and digits.num_classes == 10
    # what is given wins
    assert build_model(load_recipe(QUICKSTART), (1, 16, 16)).data_shape == (1, 16, 16)


def test_what_the_settings_do_not_say_is_asked_for() -> None:
    folder = load_recipe(QUICKSTART, ['data.name="image-folder"', 'data.root="/nowhere"', "model.conditional=true"])
    with pytest.raises(ConfigError, match=r"says its class count only once loaded; pass num_classes="):
        build_model(folder)
    assert build_model(folder, num_classes=3).num_classes == 3
    with pytest.raises(ConfigError, match=r"needs a labelled dataset; 'natural-patches' has no labels"):
        build_model(load_recipe(QUICKSTART, ["model.conditional=true"]))
