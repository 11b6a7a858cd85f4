"""Tiny recipes for trainer tests: synthetic data, 8x8 images, a few channels.

A uniquely named module (not conftest.py): spawned worker processes import it by name, and another
conftest.py earlier on sys.path would shadow it.
"""

from __future__ import annotations

import copy
from typing import Any

from avade.recipe.load import apply_overrides, recipe_from_dict
from avade.recipe.schema import Recipe

TINY: dict[str, Any] = {
    "name": "tiny",
    "model": {
        "variant": "av-ade",
        "flow": {"name": "realnvp", "hidden": 4, "blocks": 1, "layers": 2},
        "encoder": {"name": "conv", "channels": [4, 8]},
        "posterior": {"name": "topdown", "latent_channels": 2},
        "decoder": {"name": "conv"},
        "discriminator": {"name": "dcgan", "channels": [4, 8]},
    },
    "data": {"name": "synthetic", "size": 64, "test_size": 16, "resolution": 8, "batch_size": 8,
             "eval_batch_size": 16},
    "train": {"steps": 4, "log_every": 1, "sample_every": 1000, "checkpoint_every": 2, "seed": 0,
              "adv_weight": 1.0, "gp_weight": 1.0},
    "eval": {"metrics": ["bpd"]},
}


def tiny_dict(*overrides: str) -> dict[str, Any]:
    """The tiny recipe as a dict, with ``dotted.key=value`` overrides."""
    return apply_overrides(copy.deepcopy(TINY), list(overrides))


def tiny_recipe(*overrides: str) -> Recipe:
    return recipe_from_dict(tiny_dict(*overrides))
