"""Expand a ``[sweep]`` into named variants (grid = cartesian product; combos = explicit list)."""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Callable
from typing import Any

import attrs

from avade.errors import ConfigError
from avade.recipe.load import apply_overrides, key_parts, one_line, plain_name, recipe_from_dict
from avade.recipe.schema import Recipe, refuse_a_non_recipe
from avade.recipe.write import recipe_to_dict


@attrs.frozen
class Variant:
    """One run of a sweep: its name, the overrides that make it, and the validated recipe."""

    name: str
    overrides: dict[str, Any]
    recipe: Recipe


def _slug(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        # numbers keep what tells them apart: 1e+30 -> 1e30 (not "1e-30"), -1 -> m1 (not "1")
        text = (f"{value:g}" if isinstance(value, float) else str(value)).replace("e+", "e")
        text = f"m{text[1:]}" if text.startswith("-") else text
    else:
        text = str(value).lower()
    return re.sub(r"[^a-z0-9.]+", "-", text).strip("-") or "x"


def _slug_before_2026_11_29(value: Any) -> str:
    """Variant names before signs and exponents were kept apart (``-1`` and ``1`` were both ``1``)."""
    text = str(value).lower() if not isinstance(value, float) else f"{value:g}"
    return re.sub(r"[^a-z0-9.]+", "-", text).strip("-") or "x"


def former_variant_name(base: str, overrides: dict[str, Any]) -> str:
    """The name an older avade gave this variant's directory (``--resume`` of a sweep it started)."""
    return variant_name(base, overrides, _slug_before_2026_11_29)


def variant_name(base: str, overrides: dict[str, Any], slug: Callable[[Any], str] = _slug,
                 labels: dict[str, str] | None = None) -> str:
    """``av_ade_t9`` + ``{"model.flow.scales": 2, "model.flow.blocks": 4}`` -> ``av_ade_t9-scales2-blocks4``.
    ``labels``: a key's label in the name instead of its last part (see :func:`_variant_names`)."""
    parts = [f"{(labels or {}).get(key, key.rsplit('.', 1)[-1])}{slug(value)}" for key, value in overrides.items()]
    return plain_name("-".join([base, *parts]))  # it names the variant's directory: no path separators


def _variant_names(base: str, every: list[dict[str, Any]]) -> list[str]:
    """Each variant's name: its keys by their last part, or, where that makes two variants' names meet
    because different keys end alike (combos of ``model.encoder.norm`` and ``model.decoder.norm``), those
    keys by as many of their last parts as tell them apart (``encoder.norm``). (Only then: the names of
    sweeps that did not meet stay as they were, so that --resume finds their directories.)"""
    names = [variant_name(base, overrides) for overrides in every]
    if len(set(names)) == len(names):
        return names
    keys = list(dict.fromkeys(k for overrides in every for k in overrides))
    labels = {}
    for key in keys:
        parts = key.split(".")
        others = [k.split(".") for k in keys if k != key and k.split(".")[-1] == parts[-1]]
        n = 1
        while n < len(parts) and any(other[-n:] == parts[-n:] for other in others):
            n += 1
        labels[key] = ".".join(parts[-n:])
    return [variant_name(base, overrides, labels=labels) for overrides in every]


def sweep_overrides(recipe: Recipe) -> list[dict[str, Any]]:
    """The override dicts a recipe's sweep expands to (``[{}]`` without a sweep)."""
    sweep = recipe.sweep
    if sweep is None:
        return [{}]
    grid_keys = list(sweep.grid)
    grid = [dict(zip(grid_keys, values, strict=True))
            for values in itertools.product(*(sweep.grid[k] for k in grid_keys))] if grid_keys else [{}]
    combos = sweep.combos or [{}]
    return [{**combo, **point} for combo in combos for point in grid]


def _sweep_base(recipe: Recipe) -> dict[str, Any]:
    """What the variants' overrides apply to: what the recipe wrote (as --set applies them to a file), not its
    resolved form, which holds every default component, e.g. an av-ade base's flow, that a grid over
    model.variant would carry into its vae variant, refused there ("has no flow f"). The resolved form only
    when the recipe no longer says what it wrote (changed since it was loaded, e.g. by ``attrs.evolve``)."""
    resolved = recipe_to_dict(recipe)
    written = copy.deepcopy(recipe.raw) if recipe.raw is not None else None
    if written is not None:
        written["name"] = recipe.name  # (the file's name when it writes none; each variant names itself anyway)
        try:
            current = recipe_to_dict(recipe_from_dict(copy.deepcopy(written), source=recipe.source)) == resolved
        except ConfigError:
            current = False
        if current:
            resolved = written
    resolved.pop("sweep", None)
    return resolved


def expand_sweep(recipe: Recipe) -> list[Variant]:
    """Every variant of ``recipe``, each validated (errors name the sweep entry)."""
    refuse_a_non_recipe(recipe, "expand_sweep")
    if recipe.sweep is None:
        return [Variant(recipe.name, {}, recipe)]
    base = _sweep_base(recipe)
    variants, seen = [], set()
    every = sweep_overrides(recipe)
    for i, (overrides, name) in enumerate(zip(every, _variant_names(recipe.name, every), strict=True)):
        try:
            # A variant's overrides hold together: a component's (or the dataset's) new name goes first, so
            # that the options set with it are the new one's (set before it, the switch dropped them).
            raw = apply_overrides(base, sorted(overrides.items(), key=lambda item: key_parts(item[0])[-1] != "name"))
            raw["name"] = name
            variant = recipe_from_dict(raw, source=recipe.source)
        except ConfigError as exc:
            raise ConfigError(one_line(f"sweep variant {i} ({name}): {exc.detail}"), path=one_line(exc.path),
                              source=recipe.source) from None
        if name in seen:
            # (a name keeps 6 digits of a number: grid values such as 0.001 and 0.0010000001 meet too)
            raise ConfigError(one_line(f"two sweep variants are both named {name!r}: their values read alike in a "
                                       "name; make them distinct (sweep.grid or sweep.combos)"),
                              path="sweep", source=recipe.source)
        seen.add(name)
        variants.append(Variant(name, overrides, variant))
    return variants
