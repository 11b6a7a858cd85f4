"""Resolved recipe -> TOML that loads back to the same :class:`Recipe`."""

from __future__ import annotations

from typing import Any

import tomli_w

from avade.recipe.schema import MODEL_COMPONENTS, ComponentRef, Recipe
from avade.schema import unstructure


def _component(ref: ComponentRef) -> dict[str, Any]:
    return {"name": ref.name, **(unstructure(ref.config) if ref.config is not None else {})}


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The recipe as plain nested data, in the same shape as the TOML a user writes."""
    model: dict[str, Any] = unstructure(recipe.model.options)
    for key in MODEL_COMPONENTS:
        ref = getattr(recipe.model, key)
        if ref is not None:
            model[key] = _component(ref)
    data = unstructure(recipe.data.options)
    if recipe.data.dataset is not None and recipe.data.dataset.config is not None:
        data.update(unstructure(recipe.data.dataset.config))
    eval_section = unstructure(recipe.eval)
    eval_section.pop("settings", None)
    for metric, ref in recipe.eval.settings.items():
        options = unstructure(ref.config) if ref.config is not None else {}
        if options:
            eval_section[metric] = options
    out: dict[str, Any] = {"name": recipe.name}
    if recipe.description:
        out["description"] = recipe.description
    out.update(model=model, data=data, train=unstructure(recipe.train), eval=eval_section)
    if recipe.sweep is not None:
        out["sweep"] = unstructure(recipe.sweep)
    return out


def recipe_to_toml(recipe: Recipe) -> str:
    """The fully resolved recipe as TOML text."""
    return tomli_w.dumps(recipe_to_dict(recipe))
