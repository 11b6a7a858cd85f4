"""``data.n_bits`` (Glow's ``n_bits_x``): b-bit data, its dequantization, densities and bits/dim."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_recipes import tiny_dict, tiny_recipe
from torchvision.transforms.v2 import functional as TF

from avade.data.base import TensorImageDataset
from avade.data.posterized import PosterizedDataset, with_bits
from avade.errors import ConfigError
from avade.models.likelihood import discretized_logistic_log_prob, sample_discretized_logistic
from avade.models.preprocess import Preprocess, to_uint8
from avade.train.datasets import load_datasets

ALL_VALUES = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)


@pytest.mark.parametrize("bits", [1, 3, 5, 7])
def test_dequantized_values_lie_in_their_bin_and_round_trip_to_the_posterized_image(bits):
    pre = Preprocess(0.05, bits=bits)
    k = 2 ** (8 - bits)
    u = pre.dequantize(ALL_VALUES.expand(64, 1, 16, 16), torch.Generator().manual_seed(0))
    low = (ALL_VALUES.to(torch.float32) // k) * k
    assert bool(((u >= low) & (u < low + k)).all())
    # the noise fills the whole bin, not its first unit
    assert float((u - low).max()) > k - 0.5 and float((u - low).min()) < 0.5
    assert torch.equal(pre.to_uint8(u), TF.posterize(ALL_VALUES, bits).expand(64, 1, 16, 16))
    assert torch.equal(pre.levels(ALL_VALUES), ALL_VALUES // k)


@pytest.mark.parametrize("bits", [1, 5, 8])
def test_dequantized_values_stay_in_their_bin_when_float32_rounds_up(bits, monkeypatch):
    # torch.rand's largest float32, 1 - 2^-24: x + noise rounds to x + 1 for every x >= 1 (for x = 255 any
    # noise above 1 - 2^-17 does, ~8e-6 of the pixels): u = 256 leaves [0, 256) and logit(alpha + (1 - 2 alpha)
    # u / 256) is inf for a small alpha, so bits/dim would be NaN.
    top = 1.0 - 2.0 ** -24
    real_rand = torch.rand
    monkeypatch.setattr(torch, "rand", lambda *a, **kw: real_rand(*a, **kw).clamp(min=top))
    pre = Preprocess(1e-8, bits=bits)
    k = 2 ** (8 - bits)
    u = pre.dequantize(ALL_VALUES)
    low = (ALL_VALUES.to(torch.float32) // k) * k
    assert bool(((u >= low) & (u < low + k)).all()) and float(u.max()) < 256.0
    assert torch.equal(pre.to_uint8(u), TF.posterize(ALL_VALUES, bits))
    y, logdet = pre(u)
    assert bool(torch.isfinite(y).all()) and bool(torch.isfinite(logdet).all())


def test_eight_bits_is_the_preprocessing_as_it_was():
    pre = Preprocess(0.05)
    assert (pre.bits, pre.bins, pre.bin_width) == (8, 256, 1)
    u = pre.dequantize(ALL_VALUES, torch.Generator().manual_seed(3))
    noise = torch.rand(ALL_VALUES.shape, generator=torch.Generator().manual_seed(3))
    assert torch.equal(u, ALL_VALUES.float() + noise)
    assert torch.equal(pre.to_uint8(u * 0.999), to_uint8(u * 0.999))
    _, logdet = pre(u)
    _, logdet_8 = Preprocess(0.05, bits=8)(u)
    assert torch.equal(logdet, logdet_8)


@pytest.mark.parametrize("bits", [2, 5, 8])
@pytest.mark.parametrize("logit", [False, True])
def test_a_uniform_density_over_the_unit_cube_is_n_bits_per_dimension(bits, logit):
    # v = u / 256 uniform on [0, 1) has density 1: log p(x) = log p(v) - D log 2^b, i.e. exactly b bits/dim.
    pre = Preprocess(0.05, logit=logit, bits=bits).double()
    u = pre.dequantize(torch.randint(0, 256, (3, 2, 4, 4), dtype=torch.uint8)).double()
    y, logdet = pre(u)
    if logit:  # density of y = logit(alpha + (1 - 2 alpha) v) when v is uniform: 1 / |dy/dv|
        w = torch.sigmoid(y)
        log_p_y = (torch.log(w) + torch.log1p(-w)).flatten(1).sum(1) - 32 * math.log(1 - 2 * 0.05)
    else:  # y = 2 v - 1 uniform on [-1, 1)
        log_p_y = torch.full((3,), -32 * math.log(2.0), dtype=torch.float64)
    bpd = -(log_p_y + logdet) / (32 * math.log(2.0))
    assert torch.allclose(bpd, torch.full_like(bpd, float(bits)), atol=1e-9)


@pytest.mark.parametrize("bins", [2, 32, 256])
def test_discretized_logistic_is_a_distribution_over_its_levels(bins):
    levels = torch.arange(bins, dtype=torch.uint8).view(bins, 1, 1, 1)
    for mean, log_scale in ((0.3, -3.0), (-0.9, 0.5), (0.0, -6.0)):
        probs = discretized_logistic_log_prob(levels, torch.full((bins, 1, 1, 1), mean),
                                              torch.tensor(log_scale).view(1, 1, 1), bins=bins).exp()
        assert float(probs.sum()) == pytest.approx(1.0, abs=1e-4)


def test_discretized_logistic_samples_land_on_the_b_bit_levels():
    mean = torch.linspace(-1.2, 1.2, 4096).view(1, 1, 64, 64)
    log_scale = torch.full((1, 1, 1), -3.0)
    u = sample_discretized_logistic(mean, log_scale, torch.Generator().manual_seed(0), bins=32)
    noise = torch.rand(mean.shape, generator=torch.Generator().manual_seed(0)).clamp(1e-5, 1 - 1e-5)
    levels = ((mean + log_scale.exp() * (noise.log() - (-noise).log1p())).clamp(-1, 1) + 1.0) * 15.5
    levels = levels.round()
    assert torch.equal((u / 8).floor(), levels)  # the sampled level, also 0 and 31
    assert {0.0, 31.0} <= set(levels.unique().tolist())
    assert torch.equal(Preprocess(bits=5).to_uint8(u), (levels * 8).to(torch.uint8))
    assert float((u - levels * 8).std()) == pytest.approx(8 / math.sqrt(12), rel=0.1)  # dequantized in the bin


def test_posterized_dataset_serves_posterized_images_and_the_wrapped_attributes():
    images = torch.randint(0, 256, (6, 3, 4, 4), dtype=torch.uint8)
    base = TensorImageDataset(images, torch.arange(6), num_classes=6)
    ds = with_bits(base, 3)
    assert isinstance(ds, PosterizedDataset) and with_bits(base, 8) is base
    assert ds.shape == (3, 4, 4) and ds.num_classes == 6 and len(ds) == 6
    assert torch.equal(ds[2][0], images[2] & 0b11100000) and ds[2][1] == 2
    assert torch.equal(ds.as_tensors()[0], images & 0b11100000)
    assert ds.labels is base.labels  # delegated (GAN-train reads the label list)
    clone = pickle.loads(pickle.dumps(ds))  # DataLoader workers
    assert torch.equal(clone[5][0], ds[5][0])


def test_recipe_datasets_and_model_follow_data_n_bits():
    recipe = tiny_recipe("data.n_bits=4")
    train, test = load_datasets(recipe)
    assert int((train.as_tensors()[0] % 16).max()) == 0 and int((test[0][0] % 16).max()) == 0
    from avade.models import build_model

    model = build_model(recipe, train.shape, train.num_classes)
    assert (model.preprocess.bits, model.preprocess.bins) == (4, 16)
    samples = model.sample(4, generator=torch.Generator().manual_seed(0))
    assert int((samples % 16).max()) == 0


@pytest.mark.parametrize("value", [0, 9, 8.0, True])
def test_data_n_bits_is_validated(value):
    from avade.recipe.load import recipe_from_dict

    raw = tiny_dict()
    raw["data"]["n_bits"] = value
    with pytest.raises(ConfigError, match=r"data\.n_bits"):
        recipe_from_dict(raw)


def test_vae_with_discretized_logistic_at_five_bits_trains_and_evaluates(tmp_path):
    from avade.train.run import run_recipe

    recipe = tiny_recipe("data.n_bits=5", "model.variant=vae", "model.flow.name=none",
                         "model.discriminator.name=none", "model.likelihood=discretized-logistic",
                         "train.sample_every=4")
    summary = run_recipe(recipe, tmp_path / "run", progress=False)
    # 5-bit data: the untrained model is near log2(32) = 5 bits/dim, not near 8
    assert 3.0 < summary["bpd"] < 6.5 and summary["bpd_untrained"] < 7.0
    grid = np.asarray(Image.open(next((tmp_path / "run" / "samples").glob("samples_*.png"))))
    assert int((grid % 8).max()) == 0


def test_reference_statistics_are_cached_per_bit_depth(tmp_path):
    from avade.evaluate import RunContext

    keys = set()
    for bits in (8, 8, 5, 3):
        recipe = tiny_recipe(f"data.n_bits={bits}")
        train, test = load_datasets(recipe)
        ctx = RunContext(model=None, recipe=recipe, train=train, test_set=test, device=torch.device("cpu"),
                         out_dir=tmp_path, cache_dir=tmp_path)
        keys.add(ctx.dataset_key)
    assert len(keys) == 3


def test_a_large_in_memory_dataset_is_not_copied_but_read_item_by_item(monkeypatch):
    import avade.data.posterized as posterized

    images = torch.randint(0, 256, (6, 3, 4, 4), dtype=torch.uint8)
    ds = with_bits(TensorImageDataset(images, torch.arange(6), num_classes=6), 2)
    monkeypatch.setattr(posterized, "COPY_LIMIT", images.numel() - 1)
    assert ds.as_tensors() is None  # the batch stream then indexes items, each posterized
    assert torch.equal(ds[4][0], images[4] & 0b11000000)


def test_training_reads_the_wrapped_tensors_and_trains_as_on_posterized_ones(tmp_path):
    # the model takes the levels itself: the stream needs no posterized copy, and the numbers are the same
    from avade.train.data import BatchStream

    recipe = tiny_recipe("data.n_bits=3")
    train, _ = load_datasets(recipe)
    stream = BatchStream(train, 8, seed=0)
    x, _ = next(stream.batches(0))
    assert stream._tensors[0] is train.dataset.as_tensors()[0]  # no copy
    from avade.models import build_model

    model = build_model(recipe, train.shape, train.num_classes).eval()
    posterized = TF.posterize(x, 3)
    assert not torch.equal(posterized, x)
    torch.manual_seed(0)  # (the latents are drawn from the global generator)
    a = model.log_likelihood(x, generator=torch.Generator().manual_seed(1))["bpd"]
    torch.manual_seed(0)
    b = model.log_likelihood(posterized, generator=torch.Generator().manual_seed(1))["bpd"]
    assert torch.equal(a, b)
