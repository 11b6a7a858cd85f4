"""Precision-recall for distributions: limits, monotonicity, F-scores, AUC, plot."""

from __future__ import annotations

import itertools
import json
import math
import warnings

import attrs
import numpy as np
import pytest
import torch
from metric_helpers import crops_against_noise, noise_images

from avade.errors import AvadeError, ConfigError
from avade.metrics.prd import PRD, PRDConfig, max_f_beta, plot_prd, prd_auc, prd_curve, prd_from_features


def _blobs(n: int, centers: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    which = rng.integers(0, len(centers), n)
    return centers[which] + 0.3 * rng.standard_normal((n, centers.shape[1]))


CENTERS = np.random.default_rng(0).standard_normal((6, 8)) * 10


def _check_curve(precision: np.ndarray, recall: np.ndarray) -> None:
    assert precision.shape == recall.shape == (1001,)
    assert np.all((precision >= 0) & (precision <= 1)) and np.all((recall >= 0) & (recall <= 1))
    # Along increasing angle (slope), precision can only grow and recall only shrink.
    assert np.all(np.diff(precision) >= -1e-12)
    assert np.all(np.diff(recall) <= 1e-12)
    assert 0.0 <= prd_auc(precision, recall) <= 1.0


def test_discrete_curve_limits() -> None:
    p = np.array([0.2, 0.3, 0.5])
    precision, recall = prd_curve(p, p)
    _check_curve(precision, recall)
    assert precision.max() == pytest.approx(1.0) and recall.max() == pytest.approx(1.0)
    assert prd_auc(precision, recall) == pytest.approx(1.0, abs=1e-3)
    precision, recall = prd_curve(np.array([0.5, 0.5, 0.0, 0.0]), np.array([0.0, 0.0, 0.5, 0.5]))
    assert precision.max() == 0.0 and recall.max() == 0.0 and prd_auc(precision, recall) == 0.0


def test_same_distribution_gives_precision_and_recall_near_one() -> None:
    precision, recall = prd_from_features(_blobs(600, CENTERS, 1), _blobs(600, CENTERS, 2),
                                          num_clusters=20, num_runs=3)
    _check_curve(precision, recall)
    f8, f1_8 = max_f_beta(precision, recall)
    assert precision.max() > 0.9 and recall.max() > 0.9
    assert f8 > 0.9 and f1_8 > 0.9
    assert prd_auc(precision, recall) > 0.85


def test_disjoint_clusters_give_near_zero() -> None:
    far = CENTERS + 1000.0
    precision, recall = prd_from_features(_blobs(400, far, 1), _blobs(400, CENTERS, 2), num_clusters=20,
                                          num_runs=2)
    _check_curve(precision, recall)
    assert precision.max() < 0.05 and recall.max() < 0.05
    assert prd_auc(precision, recall) < 0.01


def test_mode_dropping_lowers_recall_not_precision() -> None:
    # The "model" covers only half the modes of the data: F_1/8 (precision) stays high, F_8 (recall) drops.
    model = _blobs(600, CENTERS[:3], 3)
    precision, recall = prd_from_features(model, _blobs(600, CENTERS, 4), num_clusters=20, num_runs=3)
    f8, f1_8 = max_f_beta(precision, recall)
    assert f1_8 > 0.9
    assert f8 < 0.7
    assert recall.max() == pytest.approx(0.5, abs=0.1)


def test_unbalanced_sets_are_refused() -> None:
    with pytest.raises(ValueError, match="as many samples"):
        prd_from_features(np.zeros((10, 2)), np.zeros((12, 2)), num_clusters=2, num_runs=1)


def test_plot_writes_a_png_with_several_curves(tmp_path) -> None:
    good = prd_curve(np.array([0.25, 0.25, 0.5]), np.array([0.3, 0.2, 0.5]))
    bad = prd_curve(np.array([0.9, 0.1, 0.0]), np.array([0.3, 0.2, 0.5]))
    path = plot_prd({"run a": good, "run b": bad}, tmp_path / "sub" / "prd.png", title="two runs")
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 5000


def test_prd_component_writes_plot_and_curve(tmp_path) -> None:
    ctx = crops_against_noise(tmp_path, 60, "train")
    metric = PRD(PRDConfig(samples=60, num_clusters=5, num_runs=2, num_angles=101))
    with pytest.warns(UserWarning, match="test-only"):
        out = metric.compute(ctx)
    assert set(out) == {"prd_f8", "prd_f1_8", "prd_auc"}
    assert all(0.0 <= v <= 1.0 for v in out.values())
    assert out["prd_auc"] < 0.2  # noise against photographs
    assert (ctx.out_dir / "prd.png").is_file()
    curve = json.loads((ctx.out_dir / "prd_curve.json").read_text())
    assert len(curve["precision"]) == len(curve["recall"]) == 101



def test_prd_with_more_samples_than_the_split_says_how_many_it_used(tmp_path) -> None:
    # PRD compares as many samples as real images: samples = 60 on a split of 40 uses 40 of each, while
    # eval.json records samples = 60; it must say so (it did silently, e.g. the default 10000 on 3072 images)
    drawn = []
    ctx = crops_against_noise(tmp_path, 40, "train",
                              sampler=lambda n, labels: drawn.append(n) or noise_images(n, seed=1))
    with pytest.warns(UserWarning, match="PRD used 40 samples against the 40 images of the whole train split, "
                                         "not samples = 60"):
        prd = PRD(PRDConfig(samples=60, num_clusters=5, num_runs=1, num_angles=11, plot=False))
        prd.compute(ctx)
    assert drawn == [40] and prd.used == {"real_images": 40, "samples": 40}  # (eval.json records it)
    with warnings.catch_warnings():  # as many samples as the split holds: nothing to say
        warnings.filterwarnings("error", message="PRD used")
        warnings.filterwarnings("ignore", message=".*test-only")
        PRD(PRDConfig(samples=40, num_clusters=5, num_runs=1, num_angles=11, plot=False)).compute(ctx)

# Cross-checks against the definition of PRD(Q, P) (Sajjadi et al. 2018, section 3) and
# the protocol of the authors' prd_score.py, computed independently of avade.metrics.prd.

def _random_pair(rng: np.random.Generator, k: int, zeros: bool) -> tuple[np.ndarray, np.ndarray]:
    """Model histogram Q and reference histogram P over k bins, with zero bins in either if ``zeros``."""
    q, p = rng.random(k), rng.random(k)
    if zeros:
        q[rng.random(k) < 0.3] = 0.0
        p[rng.random(k) < 0.3] = 0.0
    q[rng.integers(k)] += 0.1  # never all zero
    p[rng.integers(k)] += 0.1
    return q / q.sum(), p / p.sum()


def _prd_by_definition(q: np.ndarray, p: np.ndarray, num_angles: int, epsilon: float) -> np.ndarray:
    """``[(alpha(lambda), beta(lambda))]`` with ``alpha = sum_i min(lambda P(i), Q(i))``, ``beta = alpha/lambda``,
    for ``lambda = tan(angle)`` on the equiangular grid ``epsilon .. pi/2 - epsilon``, in plain Python."""
    out = []
    for j in range(num_angles):
        lam = math.tan(epsilon + j * (math.pi / 2 - 2 * epsilon) / (num_angles - 1))
        alpha = math.fsum(min(lam * pi, qi) for qi, pi in zip(q.tolist(), p.tolist(), strict=True))
        out.append((alpha, alpha / lam))
    return np.array(out)


@pytest.mark.parametrize("zeros", [False, True])
def test_prd_curve_equals_the_definition(zeros: bool) -> None:
    rng = np.random.default_rng(1 + zeros)
    for trial in range(40):
        k = int(rng.integers(1, 30))
        q, p = _random_pair(rng, k, zeros)
        precision, recall = prd_curve(q, p)  # the paper's defaults: 1001 angles, epsilon 1e-10
        expected = _prd_by_definition(q, p, 1001, 1e-10)
        np.testing.assert_allclose(precision, expected[:, 0], rtol=0, atol=1e-12, err_msg=f"trial {trial}")
        np.testing.assert_allclose(recall, expected[:, 1], rtol=0, atol=1e-12, err_msg=f"trial {trial}")


def test_prd_curve_ends_at_the_supports() -> None:
    # lambda -> infinity: precision -> Q(supp P), recall -> 0; lambda -> 0: precision -> 0, recall ->
    # P(supp Q). Bins empty on one side cap the other's value there.
    q = np.array([0.5, 0.3, 0.2, 0.0])
    p = np.array([0.0, 0.4, 0.4, 0.2])
    precision, recall = prd_curve(q, p, num_angles=7, epsilon=1e-10)
    assert precision[-1] == pytest.approx(0.5, abs=1e-9) and recall[-1] == pytest.approx(0.0, abs=1e-9)
    assert precision[0] == pytest.approx(0.0, abs=1e-9) and recall[0] == pytest.approx(0.8, abs=1e-9)
    # Identical histograms: the curve passes through (1, 1) at lambda = 1 (the middle angle, pi/4).
    precision, recall = prd_curve(p, p, num_angles=5)
    assert precision[2] == pytest.approx(1.0, abs=1e-12) and recall[2] == pytest.approx(1.0, abs=1e-12)
    # A single bin: lambda and 1/lambda capped at 1.
    precision, recall = prd_curve(np.ones(1), np.ones(1), num_angles=3, epsilon=0.05)
    np.testing.assert_allclose(precision, [math.tan(0.05), 1.0, 1.0], atol=1e-15)
    np.testing.assert_allclose(recall, [1.0, 1.0, math.tan(0.05)], atol=1e-15)


def test_max_f_beta_is_the_definition() -> None:
    rng = np.random.default_rng(3)
    q, p = _random_pair(rng, 12, zeros=True)
    precision, recall = prd_curve(q, p)

    def f(b: float) -> float:  # F_b = (1 + b^2) p r / (b^2 p + r), with the reference's 1e-10 in the denominator
        return max((1 + b * b) * pi * ri / (b * b * pi + ri + 1e-10) for pi, ri in zip(precision, recall, strict=True))

    f8, f1_8 = max_f_beta(precision, recall)  # beta = 8 by default
    assert f8 == pytest.approx(f(8.0), rel=1e-12) and f1_8 == pytest.approx(f(1 / 8), rel=1e-12)
    # F_8 weighs recall, F_1/8 precision. A model on half the modes: the curve reaches (p, r) = (1, 1/2)
    # at lambda = 2, where F_8 = 65/2 / 64.5 and F_1/8 = (65/64)/2 / (1/64 + 1/2).
    precision, recall = prd_curve(np.array([0.5, 0.5, 0.0, 0.0]), np.full(4, 0.25))
    f8, f1_8 = max_f_beta(precision, recall)
    assert f8 == pytest.approx(32.5 / 64.5, abs=1e-3) and f1_8 == pytest.approx(65 / 66, abs=1e-3)


def test_prd_from_features_follows_the_reference_clustering() -> None:
    # The reference protocol: the union of both sets (model first) clustered by MiniBatchKMeans with 20
    # clusters and n_init=10, each set's share of points per cluster as its histogram, the curves of
    # 10 clusterings averaged. avade seeds run i with seed + i (the reference leaves it unseeded).
    from sklearn.cluster import MiniBatchKMeans

    ev, ref = _blobs(300, CENTERS[:4], 5), _blobs(300, CENTERS, 6)
    precisions, recalls = [], []
    for run in range(10):
        km = MiniBatchKMeans(n_clusters=20, n_init=10, random_state=7 + run)
        labels = km.fit(np.vstack([ev, ref])).labels_
        q = np.histogram(labels[:300], bins=20, range=(0, 20), density=True)[0]
        p = np.histogram(labels[300:], bins=20, range=(0, 20), density=True)[0]
        curve = _prd_by_definition(q, p, 1001, 1e-10)
        precisions.append(curve[:, 0])
        recalls.append(curve[:, 1])
    precision, recall = prd_from_features(torch.as_tensor(ev), ref, seed=7)
    np.testing.assert_allclose(precision, np.mean(precisions, axis=0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(recall, np.mean(recalls, axis=0), rtol=0, atol=1e-12)


@pytest.mark.parametrize("epsilon", [0.0, -1e-3, 0.1, 1.0, math.nan])
def test_prd_curve_refuses_an_epsilon_outside_the_reference_range(epsilon: float) -> None:
    # epsilon = 0 gives the slope 0 and recall 0/0 = nan (and a nan F_8); epsilon >= pi/4 reverses the
    # grid. The reference accepts 0 < epsilon < 0.1.
    with pytest.raises(ValueError, match="epsilon"):
        prd_curve(np.array([0.5, 0.5]), np.array([0.5, 0.5]), epsilon=epsilon)


def _exact_area(q: np.ndarray, p: np.ndarray) -> float:
    """Area under the exact PRD curve, ``integral alpha d(beta)`` over lambda from infinity to 0.

    Between consecutive ratios ``Q(i)/P(i)``, ``alpha = lambda A + B`` and ``beta = A + B/lambda`` with
    ``A = sum P(i)`` over ``lambda P(i) < Q(i)`` and ``B = sum Q(i)`` over the rest, so the piece over
    ``[lo, hi]`` is ``A B log(hi/lo) + B^2 (1/lo - 1/hi)``.
    """
    ratios = sorted({qi / pi for qi, pi in zip(q.tolist(), p.tolist(), strict=True) if pi > 0 and qi > 0})
    edges = [0.0, *ratios, math.inf]
    area = 0.0
    for lo, hi in itertools.pairwise(edges):
        mid = hi / 2 if lo == 0 else (2 * lo if hi == math.inf else math.sqrt(lo * hi))
        a = math.fsum(pi for qi, pi in zip(q, p, strict=True) if mid * pi < qi)
        b = math.fsum(qi for qi, pi in zip(q, p, strict=True) if mid * pi >= qi)
        if b > 0:  # b = 0 below the smallest ratio: alpha = 0 there
            area += b * b / lo if hi == math.inf else a * b * math.log(hi / lo) + b * b * (1 / lo - 1 / hi)
    return area


def test_prd_auc_is_the_area_under_the_curve() -> None:
    p = np.array([0.2, 0.3, 0.5])
    assert _exact_area(p, p) == pytest.approx(1.0, abs=1e-12)
    # Identical distributions: the curve is the square's two sides, area 1 (the recall of every slope
    # below 1 is 1 up to round-off; ordering the points by those values used to lose 1e-3 of it).
    assert prd_auc(*prd_curve(p, p)) == pytest.approx(1.0, abs=1e-9)
    rng = np.random.default_rng(4)
    for trial in range(60):
        k = int(rng.integers(2, 25))
        q, p = _random_pair(rng, k, zeros=trial % 2 == 1)
        precision, recall = prd_curve(q, p)
        # 1001 angles: the chords between grid points lose ~1e-6 of the area on these histograms (the
        # points ordered by recall were up to 6e-4 off).
        assert prd_auc(precision, recall) == pytest.approx(_exact_area(q, p), abs=1e-4), f"trial {trial}"
        # Either direction along the curve gives the same area.
        assert prd_auc(precision[::-1], recall[::-1]) == pytest.approx(prd_auc(precision, recall), abs=1e-15)


def test_the_defaults_are_the_reference_settings() -> None:
    """Sajjadi et al.'s prd_score.py: 20 clusters, 1001 angles, 10 clusterings averaged, F_8 and F_1/8."""
    cfg = PRDConfig()
    assert (cfg.num_clusters, cfg.num_angles, cfg.num_runs, cfg.beta) == (20, 1001, 10, 8.0)


def test_prd_with_too_few_samples_for_its_clusters_is_refused_when_built(tmp_path) -> None:
    # eval.prd.samples = 4 with 20 clusters: refused when the metric is built (before a training run starts),
    # not after training, when the final evaluation had computed the real features
    with pytest.raises(ConfigError, match=r"eval.prd.samples: 4 samples .* num_clusters = 20; raise samples "
                                          r"\(or --samples\) to at least 10"):
        PRD(PRDConfig(samples=4))
    PRD(PRDConfig(samples=10))
    # a split smaller than samples: the split is the limit, and the error says so
    ctx = crops_against_noise(tmp_path, 3, "train")
    with (pytest.raises(AvadeError, match="the train split holds only 3 images, too few for num_clusters = 8"),
          warnings.catch_warnings()):
        warnings.simplefilter("ignore")
        PRD(PRDConfig(samples=10, num_clusters=8, plot=False)).compute(ctx)


def test_prd_results_are_named_after_their_beta(tmp_path) -> None:
    # beta = 2 was reported as prd_f8 / prd_f1_8: mistaken for the paper's F_8 in eval.json and sweep tables
    ctx = crops_against_noise(tmp_path, 40, "train")
    cfg = PRDConfig(samples=40, num_clusters=5, num_runs=1, num_angles=101, plot=False)
    with pytest.warns(UserWarning, match="test-only"):
        eight = PRD(cfg).compute(ctx)
        two = PRD(attrs.evolve(cfg, beta=2.0)).compute(ctx)
    assert set(two) == {"prd_f2", "prd_f1_2", "prd_auc"}
    assert two["prd_auc"] == eight["prd_auc"] and two["prd_f2"] != eight["prd_f8"]


def test_prd_refuses_features_it_cannot_cluster_naming_them() -> None:
    # NaN/inf rows stopped k-means with scikit-learn's multi-line "Input X contains NaN" (naming neither side);
    # mismatched widths with torch.cat's "Sizes of tensors must match", num_runs = 0 with an IndexError
    real, fake = _blobs(40, CENTERS, 1), _blobs(40, CENTERS, 2)
    fake[3, 1] = np.nan
    with pytest.raises(ValueError, match="1 of the 40 fake features hold NaN or infinite values"):
        prd_from_features(fake, real, num_clusters=5, num_runs=1)
    real[0, 0] = np.inf
    with pytest.raises(ValueError, match="1 of the 40 real features hold NaN or infinite values"):
        prd_from_features(np.nan_to_num(fake), real, num_clusters=5, num_runs=1)
    with pytest.raises(ValueError, match=r"of samples and of real images, got \[40, 8\] and \[40, 4\]"):
        prd_from_features(_blobs(40, CENTERS, 2), _blobs(40, CENTERS, 1)[:, :4], num_clusters=5)
    with pytest.raises(ValueError, match="num_runs must be an int >= 1, got 0"):
        prd_from_features(_blobs(40, CENTERS, 2), _blobs(40, CENTERS, 1), num_clusters=5, num_runs=0)
