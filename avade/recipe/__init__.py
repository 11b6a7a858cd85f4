"""TOML recipes: one attrs schema, ``extends`` with deep merge, ``--set`` overrides, sweeps."""

from avade.recipe.load import apply_overrides, load_recipe, parse_override, recipe_from_dict
from avade.recipe.schema import ComponentRef, Recipe
from avade.recipe.sweep import Variant, expand_sweep
from avade.recipe.write import recipe_to_dict, recipe_to_toml

__all__ = [
    "ComponentRef",
    "Recipe",
    "Variant",
    "apply_overrides",
    "expand_sweep",
    "load_recipe",
    "parse_override",
    "recipe_from_dict",
    "recipe_to_dict",
    "recipe_to_toml",
]
