"""A model cast with ``.double()`` runs every public entry in float64 (exactness checks); one cast to a 16-bit
type is refused in one line pointing at autocast, instead of a dtype mismatch deep inside a convolution; and
mean_bpd takes what a notebook has at hand (batches of images alone), naming a malformed batch."""

from __future__ import annotations

import copy

import pytest
import torch
from tiny_recipes import tiny_recipe

from avade.errors import DataError
from avade.models.build import build_model


def _model(*overrides: str) -> torch.nn.Module:
    recipe = tiny_recipe(*overrides)
    cfg = recipe.data.dataset.config
    return build_model(recipe, (getattr(cfg, "channels", 3), cfg.resolution, cfg.resolution), 0).eval()


VAE = ('model.variant="vae"', 'model.flow.name="none"', 'model.discriminator.name="none"')


@pytest.mark.parametrize("overrides", [(), VAE, (*VAE, 'model.likelihood="discretized-logistic"')])
def test_a_float64_model_runs_in_float64(overrides: tuple[str, ...]) -> None:
    model = _model(*overrides)
    x = torch.randint(0, 256, (3, *model.data_shape), dtype=torch.uint8)
    m64 = copy.deepcopy(model).double()
    out = m64.log_likelihood(x, generator=torch.Generator().manual_seed(0))
    assert out["bpd"].dtype == torch.float64 and torch.isfinite(out["bpd"]).all()
    assert m64.log_likelihood(x, importance_samples=2)["bpd"].dtype == torch.float64
    assert torch.isfinite(torch.tensor(m64.mean_bpd([(x, torch.zeros(3, dtype=torch.int64))])))
    assert m64.sample(2).dtype == torch.uint8 and m64.reconstruct(x).dtype == torch.uint8
    # the float32 model is untouched and agrees in size (same dequantization noise from the generator)
    ref = model.log_likelihood(x, generator=torch.Generator().manual_seed(0))["bpd"]
    assert ref.dtype == torch.float32 and torch.allclose(out["bpd"].float(), ref, atol=0.5)


def test_a_bfloat16_model_is_refused_naming_autocast() -> None:
    model = copy.deepcopy(_model()).bfloat16()
    x = torch.randint(0, 256, (2, *model.data_shape), dtype=torch.uint8)
    for call in (lambda: model.log_likelihood(x), lambda: model.sample(2), lambda: model.reconstruct(x)):
        with pytest.raises(DataError, match=r"bfloat16.*autocast"):
            call()


def test_mean_bpd_takes_batches_of_images_alone_and_names_a_malformed_batch() -> None:
    model = _model()
    x = torch.randint(0, 256, (4, *model.data_shape), dtype=torch.uint8)
    pairs = model.mean_bpd([(x[:2], torch.zeros(2)), (x[2:], torch.zeros(2))])
    assert model.mean_bpd(torch.split(x, 2)) == pairs  # labels unused by an unconditional model
    with pytest.raises(DataError, match="batch 0 is a list of 3"):
        model.mean_bpd([[x, x, x]])
