"""k-NN precision, recall, density and coverage: the definition, the authors' package, limits, the metric."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from metric_helpers import FakeContext, crops_against_noise, natural_crops

import avade.metrics.prdc as prdc_module
from avade.errors import AvadeError, ConfigError
from avade.metrics.prdc import PRDC, PRDCConfig, prdc_from_features


def _by_definition(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """Naeem et al. 2020, eqs. (1)-(4) with the improved precision/recall of Kynkäänniemi et al. 2019, by
    plain float64 loops over the pairs (no matrix tricks)."""
    def radii(x: np.ndarray) -> np.ndarray:
        d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
        return np.sort(d, axis=1)[:, k]  # column 0 is the point itself

    d = np.sqrt(((fake[:, None, :] - real[None, :, :]) ** 2).sum(-1))  # [M, N]
    r_real, r_fake = radii(real), radii(fake)
    inside = d < r_real[None, :]
    return {"precision": inside.any(1).mean(), "recall": (d < r_fake[:, None]).any(0).mean(),
            "density": inside.sum(1).mean() / k, "coverage": (d.min(0) < r_real).mean()}


def _sets(n: int, m: int, dim: int, shift: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g), torch.randn(m, dim, generator=g) * 1.3 + shift


def test_features_far_from_the_origin_keep_their_distances() -> None:
    """||a||² + ||b||² - 2ab in float32 loses the digits of small distances between large vectors: the features
    are centred first, so an offset of 1000 changes nothing."""
    real, fake = _sets(120, 100, 32, 0.3, seed=7)
    expected = _by_definition(real.double().numpy(), fake.double().numpy(), 5)
    assert prdc_from_features(real + 1000.0, fake + 1000.0, 5) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("n, m, dim, shift, k", [(120, 90, 8, 0.0, 5), (80, 100, 16, 0.7, 3), (60, 60, 4, 1.5, 1)])
@pytest.mark.parametrize("chunk", [2**26, 500])  # one piece, or many rows (and a partial last one) at a time
def test_scores_equal_the_definition(n: int, m: int, dim: int, shift: float, k: int, chunk: int,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prdc_module, "_CHUNK_ENTRIES", chunk)
    real, fake = _sets(n, m, dim, shift, seed=n + m)
    expected = _by_definition(real.double().numpy(), fake.double().numpy(), k)
    got = prdc_from_features(real, fake, k)
    assert got == pytest.approx(expected, abs=1e-12)


def test_scores_equal_the_authors_package() -> None:
    prdc = pytest.importorskip("prdc")
    for seed, shift in [(0, 0.0), (1, 0.5), (2, 3.0)]:
        real, fake = _sets(150, 130, 32, shift, seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = prdc.compute_prdc(real.numpy(), fake.numpy(), nearest_k=5)  # (it prints the set sizes)
        assert prdc_from_features(real, fake, 5) == pytest.approx({k: float(v) for k, v in theirs.items()},
                                                                  abs=1e-12)


def test_identical_sets_score_one_and_disjoint_sets_zero() -> None:
    real, _ = _sets(100, 1, 8, 0.0, seed=3)
    # a sample on each real point: inside its own ball (radius > 0), and each real ball holds k - 1 other
    # points strictly inside plus its own, so density is 1 (the k-th neighbours, on the balls' edges, stay out)
    same = prdc_from_features(real, real.clone(), 5)
    assert same == {"precision": 1.0, "recall": 1.0, "density": 1.0, "coverage": 1.0}
    assert prdc_from_features(real, real + 100.0, 5) == {"precision": 0.0, "recall": 0.0, "density": 0.0,
                                                          "coverage": 0.0}


@pytest.mark.parametrize("dim", [8, 64, 2048])
@pytest.mark.parametrize("chunk", [2**26, 3000])  # one piece, or many rows (and a partial last one) at a time
def test_copied_real_points_get_the_definition_s_density(dim: int, chunk: int, monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """Samples that copy real points (a memorizing model) sit exactly on other real balls' edges, at their k-th
    neighbours' distances: rounding must not count them inside. Distances of samples as rows rounded d(x_j, x_i)
    apart from the radii's d(x_i, x_j) and gave density 1.001-1.02 here; the float64 definition (and the authors'
    package) gives 1 for the copies."""
    monkeypatch.setattr(prdc_module, "_CHUNK_ENTRIES", chunk)
    g = torch.Generator().manual_seed(dim)
    real = torch.randn(200, dim, generator=g)
    fake = torch.cat([real[:150], torch.randn(30, dim, generator=g) * 3])  # copies, and a few far-off samples
    expected = _by_definition(real.double().numpy(), fake.double().numpy(), 5)
    assert prdc_from_features(real, fake, 5) == pytest.approx(expected, abs=1e-12)
    assert prdc_from_features(real, real.clone(), 5)["density"] == 1.0


def test_copies_stay_on_the_edge_when_float64_sums_differ_in_their_last_bit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A GPU may sum a pair's squares in another order for another batch of pairs: the copy's float64 distance then
    differs from its ball's float64 radius in the last bit, and must still count as on the edge, not inside."""
    exact = prdc_module._exact

    def reordered(a, b, rows, cols):  # the pairs' sums one ulp below the radii's (which _ball_radii computes)
        out = exact(a, b, rows, cols)
        return torch.nextafter(out, torch.zeros_like(out)) if a is not b else out

    monkeypatch.setattr(prdc_module, "_exact", reordered)
    real = torch.randn(200, 64, generator=torch.Generator().manual_seed(1))
    assert prdc_from_features(real, real.clone(), 5)["density"] == 1.0


def test_mode_dropping_lowers_recall_and_coverage_not_precision() -> None:
    g = torch.Generator().manual_seed(4)
    centers = torch.randn(4, 8, generator=g) * 10
    real = centers[torch.arange(400) % 4] + 0.3 * torch.randn(400, 8, generator=g)
    half = centers[torch.arange(400) % 2] + 0.3 * torch.randn(400, 8, generator=g)  # two modes of four
    scores = prdc_from_features(real, half, 5)
    assert scores["precision"] > 0.9 and scores["recall"] < 0.6 and scores["coverage"] < 0.6


def test_bad_feature_sets_are_refused() -> None:
    real, fake = _sets(10, 10, 4, 0.0, seed=5)
    with pytest.raises(ValueError, match="more than 5 features per side, got 10 real and 5 fake"):
        prdc_from_features(real, fake[:5], 5)
    with pytest.raises(ValueError, match=r"expected features \[N, D\] and \[M, D\]"):
        prdc_from_features(real, fake[:, :3], 2)
    with pytest.raises(ValueError, match="nearest_k must be an int >= 1"):
        prdc_from_features(real, fake, 0)


def test_prdc_metric_scores_samples_against_the_split(tmp_path) -> None:
    ctx = crops_against_noise(tmp_path, 40, "test")
    metric = PRDC(PRDCConfig(samples=30, real_samples=40))
    with pytest.warns(UserWarning, match="test-only"):
        out = metric.compute(ctx)
    assert set(out) == {"prdc_precision", "prdc_recall", "prdc_density", "prdc_coverage"}
    # noise against photographs: its features bunch inside the photographs' wide balls (precision's known
    # weakness, which density and coverage were made for), but cover hardly any of them
    assert out["prdc_recall"] < 0.1 and out["prdc_coverage"] < 0.3
    photos = FakeContext(tmp_path / "photos", ctx.real, sampler=lambda n, labels: natural_crops(n, seed=7),
                         options=ctx.options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert min(PRDC(PRDCConfig(samples=30, real_samples=40)).compute(photos).values()) > 0.7
    assert metric.used == {"real_images": 40, "samples": 30}
    with pytest.warns(UserWarning, match="PRDC used the 40 images of the whole test split, not 50"):
        PRDC(PRDCConfig(samples=50)).compute(ctx)


def test_too_few_images_for_k_are_refused_when_built_or_by_the_split(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"eval.prdc.samples: 5 is too few for nearest_k = 5 .*; raise it \(avade "
                                          r"eval: --samples\) or lower"):  # (what `avade eval --samples 5` set)
        PRDC(PRDCConfig(samples=5))
    with pytest.raises(ConfigError, match=r"eval.prdc.real_samples: 3 is too few for nearest_k = 3 .*; raise it or "):
        PRDC(PRDCConfig(real_samples=3, nearest_k=3))
    ctx = crops_against_noise(tmp_path, 4, "test")
    with (pytest.raises(AvadeError, match="the test split holds only 4 images, too few for nearest_k = 5"),
          warnings.catch_warnings()):
        warnings.simplefilter("ignore")
        PRDC(PRDCConfig(samples=10)).compute(ctx)


def test_ieee_fp32_turns_tf32_off_on_cuda_only_and_puts_it_back() -> None:
    """The distances run on the evaluation's GPU in IEEE fp32 (TF32 would move some across a ball's radius); the
    flags alone are checked here, which need no GPU."""
    from avade.train.device import ieee_fp32

    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    before = (matmul.allow_tf32, cudnn.allow_tf32)
    try:
        matmul.allow_tf32 = cudnn.allow_tf32 = True
        with ieee_fp32(torch.device("cpu")):
            assert matmul.allow_tf32 and cudnn.allow_tf32
        with ieee_fp32(torch.device("cuda", 0)):
            assert not matmul.allow_tf32 and not cudnn.allow_tf32
        assert matmul.allow_tf32 and cudnn.allow_tf32
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = before


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_scores_on_a_gpu_are_the_cpu_s() -> None:
    from avade.train.device import ieee_fp32

    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(600, 64, generator=g), torch.randn(500, 64, generator=g) + 0.3
    device = torch.device("cuda")
    with ieee_fp32(device):
        on_gpu = prdc_from_features(real.to(device), fake.to(device), 5)
    on_cpu = prdc_from_features(real, fake, 5)
    assert on_gpu == pytest.approx(on_cpu, abs=2e-3)


def test_non_finite_features_are_refused() -> None:
    # One NaN sample made every real's nearest-sample distance NaN: coverage 0 (and recall 1), silently.
    real, fake = _sets(30, 30, 4, 0.0, seed=6)
    fake[3, 1] = float("nan")
    with pytest.raises(ValueError, match="1 of the 30 fake features hold NaN or infinite values"):
        prdc_from_features(real, fake, 5)
    real[0, 0] = float("inf")
    with pytest.raises(ValueError, match="1 of the 30 real features hold NaN or infinite values"):
        prdc_from_features(real, fake.nan_to_num(), 5)
