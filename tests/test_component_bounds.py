"""Config values a component cannot use are refused when the recipe is loaded (`recipe check`), in one line
naming the key -- not by numpy, scikit-learn or a NaN once training (or its final evaluation) runs."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from tiny_recipes import tiny_recipe

from avade.errors import ConfigError
from avade.registry import get_registry
from avade.train.data import BatchStream


def refused(kind: str, name: str, **config: Any) -> str:
    with pytest.raises(ConfigError) as info:
        get_registry().validate(kind, name, config, path=f"{kind}.{name}")
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(("kind", "name", "seed"), [
    ("dataset", "digits", -1), ("dataset", "digits", 2**32), ("dataset", "natural-patches", -1),
    ("metric", "prd", -1), ("metric", "prd", 2**32),
])
def test_seeds_outside_numpy_range_are_refused(kind: str, name: str, seed: int) -> None:
    assert "seed" in refused(kind, name, seed=seed)


@pytest.mark.parametrize(("kind", "name"), [("dataset", "digits"), ("dataset", "natural-patches"), ("metric", "prd")])
def test_seed_in_range_is_accepted(kind: str, name: str) -> None:
    assert get_registry().validate(kind, name, {"seed": 12345}, path="x").seed == 12345


def test_digits_with_any_valid_seed_loads() -> None:
    import avade

    data = avade.create("dataset", "digits", resolution=8, seed=2**32 - 1, split="test")
    assert len(data) > 0


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan"), float("inf")])
def test_actnorm_norm_scale_must_be_positive(scale: float) -> None:
    # log(scale) sets the layer's log-scale: 0 silenced the layer for good, < 0 or NaN gave NaN at step 1
    assert "scale" in refused("norm", "actnorm", scale=scale)


@pytest.mark.parametrize("init_scale", [-1.0, float("nan"), float("inf")])
def test_weight_norm_init_scale_must_be_finite_and_not_negative(init_scale: float) -> None:
    assert "init_scale" in refused("norm", "weight-norm", init_scale=init_scale)


def test_norm_options_are_checked_by_recipe_check(tmp_path) -> None:
    from typer.testing import CliRunner

    from avade.cli.app import app

    recipe = tmp_path / "r.toml"
    recipe.write_text('[model]\nencoder = { name = "conv", norm = "actnorm" }\n'
                      '[data]\nname = "synthetic"\nresolution = 8\n')
    result = CliRunner().invoke(app, ["recipe", "check", str(recipe), "--set",
                                      "model.norm_options={actnorm={scale=-1.0}}"])
    assert result.exit_code == 2
    assert "model.norm_options.actnorm.scale" in result.stderr


@pytest.mark.parametrize(("name", "key"), [("bpd", "split"), ("fid", "split"), ("kid", "split"), ("prd", "split"),
                                           ("gan-test", "train_split"), ("gan-train", "test_split")])
def test_metric_splits_are_train_or_test(name: str, key: str) -> None:
    # a typo here used to pass `recipe check` and fail the run only at its final evaluation, after training
    message = refused("metric", name, **{key: "tset"})
    assert key in message and "'test'" in message


def test_recipe_check_refuses_a_metric_split_typo(tmp_path) -> None:
    from typer.testing import CliRunner

    from avade.cli.app import app

    recipe = tmp_path / "r.toml"
    recipe.write_text('[data]\nname = "synthetic"\nresolution = 8\n[eval]\nmetrics = ["bpd"]\n'
                      '[eval.bpd]\nsplit = "bogus"\n')
    result = CliRunner().invoke(app, ["recipe", "check", str(recipe)])
    assert result.exit_code == 2
    assert "eval.bpd.split" in result.stderr


@pytest.mark.parametrize("seed", [2**32, 1_700_000_000_000_000_000, -(2**32)])
def test_train_seeds_the_trainer_cannot_derive_from_are_refused(seed: int) -> None:
    """The trainer seeds its generators with e.g. ``seed * 100_003 + epoch`` (torch takes 64 bits): a seed of
    ``$(date +%s%N)`` passed recipe check, then failed the run with an internal overflow error."""
    with pytest.raises(ConfigError, match=r"train\.seed") as info:
        tiny_recipe(f"train.seed={seed}")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("seed", [-1, 0, 2**32 - 1])
def test_train_seeds_in_range_seed_every_generator(seed: int) -> None:
    recipe = tiny_recipe(f"train.seed={seed}")
    assert recipe.train.seed == seed
    data = torch.zeros(16, 1, 2, 2, dtype=torch.uint8), torch.zeros(16, dtype=torch.int64)
    stream = BatchStream(torch.utils.data.TensorDataset(*data), 4, seed)
    next(stream.batches(0))  # seed * 100_003 + epoch
    torch.Generator().manual_seed((seed * 1_000_003 + 10**9) * 101 + 7)  # a reseeded process of a grown job


@pytest.mark.parametrize(("override", "path"), [("model.flow.hidden=9223372036854775807", "model.flow"),
                                                ("model.encoder.channels=[8, 4611686018427387904]", "model.encoder")])
def test_recipe_check_refuses_a_component_too_large_to_build(tmp_path, override: str, path: str) -> None:
    """torch cannot allocate such a width: that was an internal error (exit 1, "please report it")."""
    from typer.testing import CliRunner

    from avade.cli.app import app

    recipe = tmp_path / "r.toml"
    recipe.write_text('[model]\nflow = "realnvp"\nencoder = { name = "conv" }\n'
                      '[data]\nname = "synthetic"\nresolution = 8\n')
    result = CliRunner().invoke(app, ["recipe", "check", str(recipe), "--set", override])
    assert result.exit_code == 2, result.output
    assert f"{path}:" in result.stderr and "too large" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
