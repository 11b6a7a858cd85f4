"""A class-conditional model whose generator ignores the labels (no conditional norm anywhere in it) is
warned about when its model is checked (`recipe check`, before training): only its critic would be
class-conditional, every class would get the same samples, and GAN-test/GAN-train would score chance."""

from __future__ import annotations

import warnings

import pytest
from tiny_recipes import tiny_recipe

from avade.models.build import check_model


def _warnings(*overrides: str) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_model(tiny_recipe(*overrides))
    return [str(w.message) for w in caught if "ignores the labels" in str(w.message)]


def test_a_conditional_model_with_a_label_blind_generator_is_warned_about() -> None:
    (message,) = _warnings("model.conditional=true")
    assert "model.decoder.norm = 'weight-norm'" in message and 'norm = "cwn"' in message


@pytest.mark.parametrize("overrides", [
    ("model.conditional=true", "model.decoder.norm=cwn"),
    ("model.conditional=true", "model.posterior.norm=cwn"),  # the latent groups alone: p(z | y) conditions it
    ("model.conditional=true", "model.decoder.norm=cwn", "model.posterior.norm=cwn"),
    ("model.conditional=false",),
])
def test_no_warning_when_the_generator_takes_the_labels_or_the_model_is_unconditional(overrides: tuple[str, ...]
                                                                                       ) -> None:
    assert _warnings(*overrides) == []


def test_cwn_in_an_unconditional_model_is_warned_about_as_plain_weight_norm() -> None:
    """`norm = "cwn"` without labels has one shared gain and bias: weight norm under another name."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_model(tiny_recipe("model.conditional=false", "model.decoder.norm=cwn"))
        check_model(tiny_recipe("model.conditional=true", "model.decoder.norm=cwn", "model.posterior.norm=cwn"))
    said = [str(w.message) for w in caught if "plain weight normalization" in str(w.message)]
    assert len(said) == 1 and 'norm = "weight-norm"' in said[0] and "model.conditional = true" in said[0], said
