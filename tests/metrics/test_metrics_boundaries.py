"""Boundaries the metric formulas and their image-set front ends must keep: strict ball edges, the smallest
sets, which array of an .npz is read, the seed of KID's subsets, and PRDC's warning about a short split."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from metric_helpers import crops_against_noise

from avade.errors import DataError
from avade.metrics.features import extract
from avade.metrics.images import as_image_batch, kid_of_images, prd_of_images, prdc_of_images
from avade.metrics.kid import kernel_inception_distance
from avade.metrics.prd import prd_from_features
from avade.metrics.prdc import PRDC, PRDCConfig, prdc_from_features
from avade.metrics.random_features import RandomConvFeatures

pytestmark = pytest.mark.filterwarnings("ignore:.*test-only feature extractor")


def _images(seed: int, n: int = 24) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_a_sample_on_the_edge_of_a_real_ball_neither_covers_it_nor_counts_as_precise() -> None:
    """Strict ``<`` for coverage and precision (as the authors' package): integer features, exact in float32,
    put the samples nearest to reals 0 and 90 exactly on those reals' 1-NN ball edges (radius 10)."""
    real = torch.arange(0, 100, 10, dtype=torch.float32)[:, None]  # 0, 10, ..., 90: every radius is 10
    fake = torch.tensor([[-10.0], [100.0], [1000.0], [2000.0]])
    scores = prdc_from_features(real, fake, 1)
    assert scores["coverage"] == 0.0 and scores["precision"] == 0.0 and scores["density"] == 0.0


def test_one_image_is_too_few_to_score() -> None:
    with pytest.raises(DataError, match="need at least 2 images, got 1"):
        as_image_batch(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    assert as_image_batch(torch.zeros(2, 3, 8, 8, dtype=torch.uint8)).shape == (2, 3, 8, 8)


def test_an_npz_with_arr_0_and_other_arrays_gives_arr_0(tmp_path) -> None:
    images = np.full((4, 8, 8, 3), 7, np.uint8)
    np.savez(tmp_path / "s.npz", images, labels=np.zeros(4, np.int64))  # labels is stored before arr_0
    got = as_image_batch(tmp_path / "s.npz")
    assert got.shape == (4, 3, 8, 8) and bool((got == 7).all())


def test_kid_of_images_draws_its_subsets_from_its_seed() -> None:
    net = RandomConvFeatures(dim=16)
    real, fake = _images(0), _images(1) // 2
    real_f, fake_f = extract(net, [real])[0], extract(net, [fake])[0]
    by_seed = {seed: kernel_inception_distance(real_f, fake_f, 5, 6, generator=torch.Generator().manual_seed(seed))
               for seed in (0, 3)}
    assert by_seed[0] != by_seed[3]  # (else the check below says nothing)
    assert kid_of_images(real, fake, extractor=net, subsets=5, subset_size=6, seed=3) == pytest.approx(by_seed[3],
                                                                                                       rel=1e-6)


def test_prdc_warns_when_the_split_is_one_image_short(tmp_path) -> None:
    ctx = crops_against_noise(tmp_path, 19, "test")
    with pytest.warns(UserWarning, match="PRDC used the 19 images of the whole test split, not 20"):
        PRDC(PRDCConfig(samples=20, nearest_k=3, batch_size=10)).compute(ctx)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", "PRDC used")
        PRDC(PRDCConfig(samples=19, nearest_k=3, batch_size=10)).compute(ctx)


def test_prdc_and_prd_of_overlapping_sets_take_their_k_and_which_set_is_which() -> None:
    """Sets that overlap in part (disjoint ones score 0 whatever k or the order): prdc_of_images uses its
    nearest_k (density differs between k = 3 and 5 here), prd_of_images scores fake against real (their
    curves differ when swapped)."""
    net = RandomConvFeatures(dim=16, num_classes=10)
    real = _images(0)
    fake = torch.cat([real[:16], _images(1)[:8]])
    real_f, fake_f = extract(net, [real])[0], extract(net, [fake])[0]
    by_k = {k: prdc_from_features(real_f, fake_f, k) for k in (3, 5)}
    assert by_k[3]["density"] != pytest.approx(by_k[5]["density"], abs=1e-6)
    assert prdc_of_images(real, fake, extractor=net, nearest_k=3) == pytest.approx(by_k[3], abs=1e-9)
    expected = prd_from_features(fake_f, real_f, 5, 11, 2)
    swapped = prd_from_features(real_f, fake_f, 5, 11, 2)
    assert not np.allclose(expected[0], swapped[0])
    precision, recall = prd_of_images(real, fake, extractor=net, num_clusters=5, num_angles=11, num_runs=2)
    np.testing.assert_allclose(precision, expected[0], atol=1e-9)
    np.testing.assert_allclose(recall, expected[1], atol=1e-9)

