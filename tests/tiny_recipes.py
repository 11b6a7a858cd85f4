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


def perturbed_model(*overrides: str, seed: int = 0) -> Any:
    """The tiny recipe's model in eval mode, every parameter moved by 0.05 N(0, 1): zero-initialised layers (priors,
    merges, the couplings' last convolutions) would otherwise hide what the latents and the flow do."""
    import torch

    from avade.models.build import build_model

    torch.manual_seed(seed)
    model = build_model(tiny_recipe(*overrides)).eval()
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed + 1)
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


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



def checkpoint_key_layer(model: Any, optimizers: dict[str, Any], key: str) -> tuple[str, str]:
    """The layer that a checkpoint tensor belongs to, as (its class name, its kind: ``conv`` for any convolution,
    ``linear``, else ``other``; ``("?", "?")`` where none is found), for ``key`` as the resume tests name one:
    ``model/<state_dict key>`` or ``optimizer/<optimizer>.<parameter index>.<state>`` (the state of
    ``optimizers[<optimizer>]``'s parameter)."""
    from torch import nn
    from torch.nn.modules.conv import _ConvNd
    from torch.nn.utils.parametrize import ParametrizationList

    part, _, name = key.partition("/")
    if part == "optimizer":
        opt, index, _ = [*name.split(".", 2), "", ""][:3]
        params = ([p for group in optimizers[opt].param_groups for p in group["params"]]
                  if opt in optimizers and index.isdigit() else [])
        names = {id(p): n for n, p in model.named_parameters()}
        name = names.get(id(params[int(index)]), "") if index.isdigit() and int(index) < len(params) else ""
        if not name:
            return "?", "?"
    path = name.split(".")[:-1]
    for k in range(len(path), -1, -1):  # a parametrized weight lies in containers below its layer
        try:
            module = model.get_submodule(".".join(path[:k]))
        except AttributeError:
            continue
        if not isinstance(module, (nn.ModuleList, nn.ModuleDict, nn.Sequential, ParametrizationList)):
            kind = "conv" if isinstance(module, _ConvNd) else "linear" if isinstance(module, nn.Linear) else "other"
            return type(module).__name__, kind
    return "?", "?"


def parting_report(step: int | None, keys: list[str], model: Any, optimizers: dict[str, Any]) -> str:
    """Where two runs part, as the resume tests' failure message says it (``scripts/gpu_check.sh
    --only=determinism`` reads it back): ``first at step S in [key (Layer), ...]; layers: conv+linear`` (the
    kinds of every layer a differing key belongs to: whether convolutions (cuDNN) or dense layers (cuBLAS) part)."""
    layers = [checkpoint_key_layer(model, optimizers, key) for key in keys]
    named = [f"{key} ({layer})" for key, (layer, _) in zip(keys, layers, strict=True)]
    kinds = "+".join(sorted({kind for _, kind in layers})) or "none"
    return f"first at step {step} in [{', '.join(named[:8])}{', ...' if len(named) > 8 else ''}]; layers: {kinds}"
