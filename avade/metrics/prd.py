"""Precision and recall for distributions (Sajjadi et al. 2018; AV-ADE appendix E.2, Figure 19).

The pool3 features of real images and of an equal number of samples are clustered together (k-means,
20 clusters); the two histograms over clusters are discrete distributions P (real) and Q (model). For
each slope ``lambda = tan(angle)`` on an equiangular grid over (0, pi/2):

    precision(lambda) = sum_i min(lambda P_i, Q_i),     recall(lambda) = precision(lambda) / lambda.

The curve is averaged over independent clusterings. Summaries: max F_8 (weights recall: how much of
the data the model covers) and max F_1/8 (weights precision: sample quality), and the area under the
precision-recall curve (1 for identical distributions, 0 for disjoint supports).

The computation follows the authors' code (``prd_score.py`` of msmsajjadi/precision-recall-distributions):
1001 angles, epsilon 1e-10, the union of both sets clustered by scikit-learn's ``MiniBatchKMeans`` with
``n_init=10`` and its other defaults, the curves of 10 clusterings averaged, F_beta with 1e-10 in the
denominator. Deliberate differences:

- each clustering is seeded (run ``i`` with ``seed + i``), so the metric is reproducible; the reference
  leaves k-means unseeded;
- unequal set sizes are always refused (the reference's ``enforce_balance=False`` is not offered);
- the area under the curve is avade's own summary, not the reference's.

The mini-batch size is scikit-learn's default, as in the reference: 1024 since scikit-learn 1.0, 100 when
the reference was written, so clusterings (not the algorithm) differ slightly from 2018 numbers.
"""

from __future__ import annotations

import json
import math
import pathlib
import warnings
from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

from avade.errors import AvadeError, ConfigError
from avade.metrics.configs import PRDConfig
from avade.metrics.context import EvalContext
from avade.metrics.features import get_extractor, warn_if_not_reference
from avade.metrics.reference import real_features, sample_features
from avade.metrics.stats import check_finite_rows

__all__ = [
    "CURVE_FILE",
    "PRD",
    "PRDConfig",
    "max_f_beta",
    "plot_prd",
    "prd_auc",
    "prd_curve",
    "prd_from_features",
]

Curve = tuple[np.ndarray, np.ndarray]


def prd_curve(eval_dist: np.ndarray, ref_dist: np.ndarray, num_angles: int = 1001,
              epsilon: float = 1e-10) -> Curve:
    """PRD curve ``(precision, recall)`` of the discrete distribution ``eval_dist`` w.r.t. ``ref_dist``.

    Angles run from ``epsilon`` to ``pi/2 - epsilon`` (the end points themselves give 0/0), so precision
    is non-decreasing and recall non-increasing along the returned arrays. ``epsilon`` must be in
    (0, 0.1), as in the reference code.
    """
    if num_angles < 3:
        raise ValueError(f"num_angles must be >= 3, got {num_angles}")
    if not 0.0 < epsilon < 0.1:  # 0 gives the slope 0 (recall 0/0 = nan); >= pi/4 reverses the grid
        raise ValueError(f"epsilon must be in (0, 0.1), got {epsilon}")
    q = np.asarray(eval_dist, dtype=np.float64)[None, :]
    p = np.asarray(ref_dist, dtype=np.float64)[None, :]
    slopes = np.tan(np.linspace(epsilon, math.pi / 2 - epsilon, num_angles))[:, None]
    precision = np.minimum(p * slopes, q).sum(axis=1)
    recall = precision / slopes[:, 0]
    # Round-off can push a value a hair above 1 (e.g. identical distributions); both are probabilities.
    return np.clip(precision, 0.0, 1.0), np.clip(recall, 0.0, 1.0)


def _histograms(data: np.ndarray, evaluated: int, num_clusters: int, seed: int) -> Curve:
    """The cluster histograms of ``data``'s first ``evaluated`` rows (the model's) and of the rest (the real ones)."""
    from sklearn.cluster import MiniBatchKMeans

    labels = MiniBatchKMeans(n_clusters=num_clusters, n_init=10, random_state=seed).fit(data).labels_
    eval_hist = np.bincount(labels[:evaluated], minlength=num_clusters) / evaluated
    ref_hist = np.bincount(labels[evaluated:], minlength=num_clusters) / (len(data) - evaluated)
    return eval_hist, ref_hist


def check_sizes(samples: int, real: int, num_clusters: int) -> None:
    """A ValueError unless :func:`prd_from_features` can take ``samples`` and ``real`` features."""
    if samples != real:
        raise ValueError(f"PRD needs as many samples as real images, got {samples} and {real}")
    if samples + real < num_clusters:
        raise ValueError(f"PRD needs at least num_clusters={num_clusters} points, got {samples + real}")


def prd_from_features(eval_feats: Tensor | np.ndarray, ref_feats: Tensor | np.ndarray, num_clusters: int = 20,
                      num_angles: int = 1001, num_runs: int = 10, seed: int = 0) -> Curve:
    """PRD curve of model features ``eval_feats`` against real ``ref_feats``, averaged over ``num_runs``
    k-means clusterings of their union (run ``i`` is seeded with ``seed + i``).

    Both sets must have the same size: otherwise the clustering is biased towards the larger one.
    """
    fake, real_feats = torch.as_tensor(eval_feats).cpu(), torch.as_tensor(ref_feats).cpu()
    if fake.dim() != 2 or real_feats.dim() != 2 or fake.shape[1] != real_feats.shape[1]:
        raise ValueError(f"PRD needs features [N, D] of samples and of real images, got {list(fake.shape)} and "
                         f"{list(real_feats.shape)}")
    if isinstance(num_runs, bool) or not isinstance(num_runs, int) or num_runs < 1:
        raise ValueError(f"PRD: num_runs must be an int >= 1, got {num_runs!r}")
    evaluated, real = len(fake), len(real_feats)
    check_sizes(evaluated, real, num_clusters)
    # (k-means would stop on them with scikit-learn's message, naming neither side)
    check_finite_rows(fake, "fake features")
    check_finite_rows(real_feats, "real features")
    # their union in float64 once, for every run (at 50,000 x 2048 each, a 1.6 GB array)
    data = torch.cat([fake, real_feats]).double().numpy()
    precisions, recalls = [], []
    for run in range(num_runs):
        eval_hist, ref_hist = _histograms(data, evaluated, num_clusters, seed + run)
        precision, recall = prd_curve(eval_hist, ref_hist, num_angles)
        precisions.append(precision)
        recalls.append(recall)
    return np.mean(precisions, axis=0), np.mean(recalls, axis=0)


def max_f_beta(precision: np.ndarray, recall: np.ndarray, beta: float = 8.0,
               epsilon: float = 1e-10) -> tuple[float, float]:
    """``(max F_beta, max F_1/beta)`` over the curve; ``F_b = (1 + b²) p r / (b² p + r)``."""
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    p, r = np.asarray(precision, dtype=np.float64), np.asarray(recall, dtype=np.float64)

    def f(b: float) -> float:
        return float(np.max((1 + b**2) * p * r / (b**2 * p + r + epsilon)))

    return f(beta), f(1.0 / beta)


def prd_auc(precision: np.ndarray, recall: np.ndarray) -> float:
    """Area under the precision-recall curve (precision integrated over recall), in [0, 1].

    The points are taken in curve order, as :func:`prd_curve` returns them (either direction), and
    joined by chords; the curve is closed with its end points on the axes: ``(0, p_max)`` and
    ``(r_max, 0)`` are where it tends as the angle reaches pi/2 and 0. (Sorting the points by recall
    instead would scramble the many slopes whose recall is ``r_max`` up to round-off.)
    """
    p, r = np.asarray(precision, dtype=np.float64), np.asarray(recall, dtype=np.float64)
    if r[0] > r[-1]:  # walk from the steep end (recall ~ 0) to the flat end (precision ~ 0)
        p, r = p[::-1], r[::-1]
    r_path = np.concatenate([[0.0], r, [r[-1]]])
    p_path = np.concatenate([[p[0]], p, [0.0]])
    area = float(np.sum((r_path[1:] - r_path[:-1]) * (p_path[1:] + p_path[:-1]) / 2))
    return min(max(area, 0.0), 1.0)


def plot_prd(curves: Mapping[str, Curve], path: str | pathlib.Path, title: str | None = None,
             dpi: int = 150) -> pathlib.Path:
    """Save several PRD curves ``{label: (precision, recall)}`` on one plot as a PNG; returns the path."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise AvadeError("the PRD plot needs matplotlib: `pip install 'avade[metrics]'` "
                         "(or set plot = false in the prd metric)") from None

    # A bare Figure (no pyplot) renders PNG with the Agg canvas whatever the global backend is, and
    # leaves no global state or open windows behind.
    fig = Figure(figsize=(4.0, 4.0), dpi=dpi)
    ax = fig.add_subplot(111)
    for label, (precision, recall) in curves.items():
        auc = prd_auc(precision, recall)
        ax.plot(recall, precision, label=f"{label} (AUC {auc:.3f})", alpha=0.7, linewidth=2.5)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("Recall")
    ax.set_ylabel("Precision")
    if title:
        ax.set_title(title)
    if curves:
        ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


#: The curve a run's evaluation leaves in it (read back by ``avade study prd``, :mod:`avade.evaluate.prd_study`).
CURVE_FILE = "prd_curve.json"


class PRD:
    """Metric ``prd``: returns ``{"prd_f8", "prd_f1_8", "prd_auc"}`` (``beta`` = 2: ``prd_f2``, ``prd_f1_2``);
    writes ``prd.png`` and ``prd_curve.json`` (precision, recall lists, for combining runs with :func:`plot_prd`)."""

    name = "prd"
    uses_inception = True  # the Inception weights are checked before training starts

    def __init__(self, cfg: PRDConfig) -> None:
        # Checked when the metric is built (before training starts, or before `avade eval` samples): the
        # clustering of 2 x samples points would only refuse it after the real features were computed,
        # at the end of a training run.
        if cfg.samples * 2 < cfg.num_clusters:
            raise ConfigError(f"{cfg.samples} samples and as many real images are too few for num_clusters = "
                              f"{cfg.num_clusters}; raise samples (or --samples) to at least "
                              f"{math.ceil(cfg.num_clusters / 2)}, or lower num_clusters", path="eval.prd.samples")
        self.cfg = cfg
        self.used: dict[str, int] = {}  # set by compute: the images of each side it compared

    def compute(self, ctx: EvalContext) -> dict[str, float]:
        """``prd_f8``, ``prd_f1_8`` (max F-beta both ways; named after ``beta``) and ``prd_auc`` of samples against
        the real split."""
        cfg = self.cfg
        extractor = get_extractor(ctx.options, ctx.device)
        warn_if_not_reference(extractor, "PRD")
        real = real_features(ctx, extractor, cfg.split, cfg.samples, cfg.batch_size).features
        if len(real) * 2 < cfg.num_clusters:
            raise AvadeError(f"prd: the {cfg.split} split holds only {len(real)} images, too few for num_clusters = "
                             f"{cfg.num_clusters} (real images and as many samples are clustered); lower "
                             "eval.prd.num_clusters, or use a larger split (eval.prd.split)")
        self.used = {"real_images": len(real), "samples": len(real)}
        if len(real) < cfg.samples:  # recorded settings say samples: say what was used
            warnings.warn(f"PRD used {len(real)} samples against the {len(real)} images of the whole {cfg.split} "
                          f"split, not samples = {cfg.samples} (PRD compares as many of each); say which you report, "
                          f"or set eval.prd.samples (or --samples) to {len(real)}", UserWarning, stacklevel=2)
        fake = sample_features(ctx, extractor, len(real), cfg.batch_size).features
        precision, recall = prd_from_features(fake, real, cfg.num_clusters, cfg.num_angles, cfg.num_runs,
                                              cfg.seed)
        f_beta, f_inv = max_f_beta(precision, recall, cfg.beta)
        if cfg.plot:
            out = pathlib.Path(ctx.out_dir)
            plot_prd({cfg.label: (precision, recall)}, out / "prd.png")
            (out / CURVE_FILE).write_text(json.dumps(
                {"label": cfg.label, "precision": precision.tolist(), "recall": recall.tolist()}))
        # named after the beta used: another beta reported as prd_f8 would be mistaken for the paper's F_8
        b = f"{cfg.beta:g}".replace(".", "p")
        return {f"prd_f{b}": f_beta, f"prd_f1_{b}": f_inv, "prd_auc": prd_auc(precision, recall)}
