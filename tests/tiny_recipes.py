"""Tiny recipes for trainer tests: synthetic data, 8x8 images, a few channels.

A uniquely named module (not conftest.py): spawned worker processes import it by name, and another
conftest.py earlier on sys.path would shadow it.
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

from avade.recipe.load import apply_overrides, load_recipe, recipe_from_dict
from avade.recipe.schema import Recipe
from avade.recipe.sweep import expand_sweep

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


ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "recipes").rglob("[!_]*.toml"))  # every shipped recipe


def shipped_id(path: Path) -> str:
    return str(path.relative_to(ROOT / "recipes"))


def shipped_recipe_step(path: Path, device: str, run: Path, batch_size: int = 4) -> dict[str, float]:
    """One full Algorithm 1 step (no MLE warm-up) of the shipped recipe at ``path`` (a sweep's first
    variant), on synthetic data of its own resolution and channels, batch ``batch_size`` (at least 2:
    the data-dependent inits need two values per channel)."""
    data = tomllib.loads(path.read_text(encoding="utf-8")).get("data", {})
    overrides = ["data.name=synthetic", f"data.resolution={data.get('resolution', 32)}",
                 f"data.channels={data.get('channels', 3)}", "data.size=8", "data.test_size=8",
                 f"data.batch_size={batch_size}", "train.warmup_steps=0", f"train.device={device}",
                 'eval.metrics=["bpd"]']
    (variant, *_) = expand_sweep(load_recipe(path, overrides))
    from avade.train.trainer import Trainer  # torch-heavy: only where a step is taken

    trainer = Trainer(variant.recipe, run, progress=False)
    return trainer.train_step(*next(trainer.stream.batches(0)))
