"""Config values a component cannot use are refused when the recipe is loaded (`recipe check`), in one line
naming the key -- not by numpy, scikit-learn or a NaN once training (or its final evaluation) runs."""

from __future__ import annotations

from typing import Any

import pytest

from avade.errors import ConfigError
from avade.registry import get_registry


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
