"""Precision-recall for distributions: limits, monotonicity, F-scores, AUC, plot."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from metric_helpers import FakeContext, natural_crops, noise_images

from avade.metrics.prd import PRD, PRDConfig, max_f_beta, plot_prd, prd_auc, prd_curve, prd_from_features
from avade.metrics.random_features import RandomConvFeatures


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
    real = natural_crops(60, seed=0)
    ctx = FakeContext(tmp_path, {"train": (real, torch.zeros(60, dtype=torch.long))},
                      sampler=lambda n, labels: noise_images(n, seed=1),
                      options={"feature_extractor": RandomConvFeatures(dim=16, seed=0)})
    metric = PRD(PRDConfig(samples=60, num_clusters=5, num_runs=2, num_angles=101))
    with pytest.warns(UserWarning, match="test-only"):
        out = metric.compute(ctx)
    assert set(out) == {"prd_f8", "prd_f1_8", "prd_auc"}
    assert all(0.0 <= v <= 1.0 for v in out.values())
    assert out["prd_auc"] < 0.2  # noise against photographs
    assert (ctx.out_dir / "prd.png").is_file()
    curve = json.loads((ctx.out_dir / "prd_curve.json").read_text())
    assert len(curve["precision"]) == len(curve["recall"]) == 101
