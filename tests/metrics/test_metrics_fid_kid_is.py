"""FID, KID and IS math: zero on identical sets, equal to torchmetrics on the same features."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from avade.metrics.fid import fid_from_features, frechet_distance, gaussian_stats
from avade.metrics.inception_score import inception_score
from avade.metrics.kid import kernel_inception_distance


def _features(n: int, d: int, seed: int, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g, dtype=torch.float64) / d**0.5
    return (torch.randn(n, d, generator=g, dtype=torch.float64) @ mix) * scale + shift


class _Identity(torch.nn.Module):
    """A 'feature extractor' for torchmetrics that hands the features through."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.num_features = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_fid_of_a_set_with_itself_is_zero() -> None:
    real = _features(500, 64, seed=0)
    assert abs(fid_from_features(real, real)) < 1e-6
    assert abs(fid_from_features(real.float(), real.float())) < 1e-6


def test_gaussian_stats_match_numpy() -> None:
    x = _features(200, 16, seed=1)
    mu, sigma = gaussian_stats(x)
    np.testing.assert_allclose(mu.numpy(), x.numpy().mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sigma.numpy(), np.cov(x.numpy(), rowvar=False), rtol=1e-10, atol=1e-12)


def test_frechet_distance_of_known_gaussians() -> None:
    # Diagonal case: ||m1 - m2||² + sum (s1 + s2 - 2 sqrt(s1 s2)) = sum (sqrt(s1) - sqrt(s2))².
    mu1, mu2 = torch.zeros(3), torch.tensor([1.0, 2.0, 0.0])
    s1, s2 = torch.diag(torch.tensor([1.0, 4.0, 9.0])), torch.diag(torch.tensor([4.0, 4.0, 1.0]))
    expected = 5.0 + (1 - 2) ** 2 + 0 + (3 - 1) ** 2
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("n", "d"), [(400, 32), (60, 48)])  # full rank, and singular covariances
def test_fid_equals_torchmetrics(n: int, d: int) -> None:
    fid_mod = pytest.importorskip("torchmetrics.image.fid")
    real, fake = _features(n, d, seed=2), _features(n, d, seed=3, scale=1.3, shift=0.2)
    metric = fid_mod.FrechetInceptionDistance(feature=_Identity(d))
    metric.update(real, real=True)
    metric.update(fake, real=False)
    expected = float(metric.compute())
    assert expected > 1.0
    assert fid_from_features(real, fake) == pytest.approx(expected, rel=1e-4)


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save")
def test_kid_equals_torchmetrics_with_the_same_seed() -> None:
    kid_mod = pytest.importorskip("torchmetrics.image.kid")
    real, fake = _features(300, 32, seed=4), _features(250, 32, seed=5, scale=1.2, shift=0.1)
    metric = kid_mod.KernelInceptionDistance(feature=_Identity(32), subsets=20, subset_size=100)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    torch.manual_seed(7)  # torchmetrics draws its subsets from the global generator
    mean_tm, std_tm = (float(v) for v in metric.compute())
    mean, std = kernel_inception_distance(real, fake, subsets=20, subset_size=100,
                                          generator=torch.Generator().manual_seed(7))
    assert mean > 0.0
    assert mean == pytest.approx(mean_tm, rel=1e-4)
    assert std == pytest.approx(std_tm, rel=1e-4)


def test_kid_is_near_zero_for_the_same_distribution_and_caps_subset_size() -> None:
    a, b = _features(120, 16, seed=6), _features(120, 16, seed=6)
    mean, _ = kernel_inception_distance(a, b, subsets=5, subset_size=1000,
                                        generator=torch.Generator().manual_seed(0))
    shifted, _ = kernel_inception_distance(a, b + 1.0, subsets=5, subset_size=1000,
                                           generator=torch.Generator().manual_seed(0))
    assert abs(mean) < 0.05 * shifted


def test_inception_score_extremes() -> None:
    k = 10
    # Confident and evenly spread over k classes -> IS = k; the same distribution everywhere -> IS = 1.
    one_hot = torch.eye(k).repeat(20, 1)
    mean, std = inception_score(one_hot, splits=10)
    assert mean == pytest.approx(k, rel=1e-9)
    assert std == pytest.approx(0.0, abs=1e-9)
    flat = torch.full((200, k), 1.0 / k)
    assert inception_score(flat, splits=10)[0] == pytest.approx(1.0, abs=1e-12)
    # Mixed: half the rows one-hot over 2 classes, the marginal over those 2 -> exp(log 2) = 2.
    two = torch.eye(k)[torch.arange(200) % 2]
    assert inception_score(two, splits=4)[0] == pytest.approx(2.0, rel=1e-9)
    assert not math.isnan(inception_score(torch.softmax(torch.randn(100, k), 1), splits=10)[1])


@pytest.mark.parametrize("n", [1000, 1003, 57])
def test_inception_score_splits_as_the_reference_code(n) -> None:
    # OpenAI's and torch-fidelity's chunks are [i*N//splits, (i+1)*N//splits): the same score for any N.
    probs = torch.softmax(3 * torch.randn(n, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64), 1)
    scores = []
    for i in range(10):
        part = probs[i * n // 10:(i + 1) * n // 10]
        kl = (part * (part.log() - part.mean(0, keepdim=True).log())).sum(1)
        scores.append(kl.mean().exp())
    reference = torch.stack(scores)
    mean, std = inception_score(probs, splits=10)
    assert mean == pytest.approx(float(reference.mean()), rel=1e-12)
    assert std == pytest.approx(float(reference.std(unbiased=False)), rel=1e-9)


def test_inception_score_equals_torchmetrics_on_the_same_logits() -> None:
    # torchmetrics' InceptionScore shuffles the rows (torch.randperm on the global generator), cuts them
    # with Tensor.chunk and reports the unbiased std; with N a multiple of splits, chunk's pieces are the
    # reference's [i*N//splits, (i+1)*N//splits), so avade on the same permutation gives the same mean,
    # and its population std (np.std, as OpenAI's code) times sqrt(S/(S-1)) is torchmetrics' std.
    import warnings

    from torchmetrics.image.inception import InceptionScore as TMInceptionScore

    n, k, splits = 1000, 37, 10
    logits = 3 * torch.randn(n, k, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "will save all extracted features in buffer"
        tm = TMInceptionScore(feature=_Identity(k), splits=splits)
    tm.update(logits)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        tm_mean, tm_std = tm.compute()
        torch.manual_seed(5)
        order = torch.randperm(n)
    mean, std = inception_score(torch.softmax(logits[order], dim=1), splits=splits)
    assert mean == pytest.approx(float(tm_mean), rel=1e-12)
    assert std * math.sqrt(splits / (splits - 1)) == pytest.approx(float(tm_std), rel=1e-9)

    # OpenAI's improved-gan inception_score.py, written out in numpy: exp(mean_x KL(p(y|x) || p(y))) per
    # split, p(y) the split's mean; np.mean and np.std (population) over the splits.
    probs = torch.softmax(logits, dim=1).numpy()
    scores = []
    for i in range(splits):
        part = probs[i * n // splits:(i + 1) * n // splits]
        kl = (part * (np.log(part) - np.log(part.mean(axis=0, keepdims=True)))).sum(axis=1).mean()
        scores.append(np.exp(kl))
    mean, std = inception_score(torch.softmax(logits, dim=1), splits=splits)
    assert mean == pytest.approx(float(np.mean(scores)), rel=1e-12)
    assert std == pytest.approx(float(np.std(scores)), rel=1e-9)


def test_non_finite_features_are_refused_by_fid_and_kid() -> None:
    gen = torch.Generator().manual_seed(0)
    real, fake = torch.randn(50, 8, generator=gen), torch.randn(50, 8, generator=gen)
    fake[3, 2] = float("nan")
    with pytest.raises(ValueError, match="1 of the 50 feature rows hold NaN or infinite values"):
        fid_from_features(real, fake)
    with pytest.raises(ValueError, match="NaN or infinite"):
        frechet_distance(torch.zeros(2), torch.eye(2), torch.tensor([0.0, float("nan")]), torch.eye(2))
    # KID was finite whenever no subset drew the NaN row
    with pytest.raises(ValueError, match="1 of the 50 fake features hold NaN or infinite values"):
        kernel_inception_distance(real, fake, subsets=2, subset_size=5, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"expected features \[N, D\] and \[M, D\]"):
        kernel_inception_distance(real, real[:, :5], subsets=2, subset_size=5)


def test_inception_score_refuses_what_are_not_probabilities() -> None:
    logits = torch.randn(20, 5, generator=torch.Generator().manual_seed(0))
    probs = torch.softmax(logits, 1)
    with pytest.raises(ValueError, match="need class probabilities"):
        inception_score(logits, splits=2)  # was NaN
    with pytest.raises(ValueError, match="need class probabilities"):
        inception_score(3 * probs, splits=2)  # was a (wrong) finite score
    probs16 = probs.half().float()  # float16 softmax round-off is still accepted
    assert inception_score(probs16, splits=2)[0] == pytest.approx(inception_score(probs, splits=2)[0], rel=1e-2)
