"""Precision, recall, density and coverage from k-nearest-neighbour balls (Naeem et al. 2020).

Each real feature ``x_i`` gets a ball of radius ``r_k(x_i)``, its distance to its ``k``-th nearest other real
feature; each sample ``y_j`` likewise among the samples. Then, as in the authors' ``prdc`` package (strict
``<`` throughout; ``k = 5`` by default, as in the paper):

- precision: the fraction of samples inside some real ball (Kynkäänniemi et al. 2019's improved precision);
- recall: the fraction of real features inside some sample ball (their improved recall);
- density: the mean number of real balls a sample is in, divided by ``k`` (about 1 when the samples follow
  the data, above 1 where they crowd dense regions; unlike precision it is not fooled by outliers);
- coverage: the fraction of real features whose own ball holds a sample (no sample ball, so outlying
  samples cannot inflate it).

The distance matrices are never held whole: rows of at most ``2**26`` entries at a time (256 MB in float32, and
about twice that again in temporaries and masks), so 50,000 images per side fit on a GPU or in CPU memory alike.
Pairs within float32 rounding of a ball's edge (a sample copying a real point lies exactly on other real balls'
edges) are decided again in float64, so that copies get the definition's density of 1.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from avade.errors import AvadeError, ConfigError
from avade.metrics.configs import PRDCConfig
from avade.metrics.context import EvalContext
from avade.metrics.features import get_extractor, warn_if_not_reference
from avade.metrics.reference import real_features, sample_features
from avade.metrics.stats import check_finite_rows

__all__ = ["PRDC", "PRDCConfig", "check_counts", "prdc_from_features"]

_CHUNK_ENTRIES = 2**26  # distance-matrix entries computed at once
_TIE = 1e-5  # squared distances this close to a radius (relative to the norms; rounding: ~3e-7) redone in float64
_FLOAT64_ROUNDING = 1e-12  # relative: float64 sums of 2048 squares in any order agree to ~1e-13


def _squared_distances(a: Tensor, b: Tensor, b_norms: Tensor) -> Tensor:
    """``||a_i - b_j||²`` ``[len(a), len(b)]`` through one matrix product into one buffer (clamped at 0 against
    rounding)."""
    return torch.addmm(b_norms, a, b.T, alpha=-2.0).add_(a.square().sum(1, keepdim=True)).clamp_min_(0.0)


def _rows(columns: int) -> int:
    """Rows of a distance-matrix chunk ``columns`` wide."""
    return max(1, _CHUNK_ENTRIES // max(columns, 1))


def _exact(a: Tensor, b: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """``||a_rows - b_cols||²`` of the index pairs, as direct float64 differences (``d(x, y)`` bit for bit
    ``d(y, x)``), a few thousand pairs at a time."""
    step = max(1, _CHUNK_ENTRIES // (8 * max(a.shape[1], 1)))
    return torch.cat([(a[rows[i:i + step]].double() - b[cols[i:i + step]].double()).square().sum(1)
                      for i in range(0, len(rows), step)]) if len(rows) else a.new_zeros(0, dtype=torch.float64)


def _ball_radii(x: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Squared distance of each row of ``x`` to its ``k``-th nearest other row ``[N]`` (itself excluded): in
    float32 (its matrix product), and in float64 (:func:`_exact`, to its float32-nearest row)."""
    norms = x.square().sum(1)
    step = _rows(len(x))
    radii, nearest = [], []
    for i in range(0, len(x), step):
        # the (k + 1)-th smallest: the row itself is its own nearest, at distance 0
        top = _squared_distances(x[i:i + step], x, norms).topk(k + 1, dim=1, largest=False)
        radii.append(top.values[:, -1])
        nearest.append(top.indices[:, -1])
    rows = torch.arange(len(x), device=x.device)
    return torch.cat(radii), _exact(x, x, rows, torch.cat(nearest))


def _inside(d: Tensor, radii: Tensor, exact_radii: Tensor, a_norms: Tensor, b_norms: Tensor, a: Tensor, b: Tensor,
            offset: int) -> Tensor:
    """``d < radii`` (broadcast), ``d`` the float32 squared distances of ``a[offset:]``'s rows (their squared
    norms ``a_norms``) to ``b`` (``b_norms``); the pairs within float32 rounding of a radius are decided by
    :func:`_exact` against ``exact_radii``."""
    inside = d < radii
    # The matrix product rounds d(x_i, x_j) and d(x_j, x_i) apart, and differently for other shapes or thread
    # counts: a sample copying a real point (a memorizing model) sits exactly on other balls' edges, at their k-th
    # neighbours' distance, and was let in by rounding (density 1.001-1.02 for copies, not 1 as defined).
    # (in place, one temporary at a time: chunks are 256 MB each)
    tolerance = torch.add(a_norms[:, None], b_norms[None, :]).add_(radii).mul_(_TIE)
    near = torch.sub(d, radii).abs_().le_(tolerance).nonzero()
    del tolerance
    if len(near):
        rows, cols = near[:, 0], near[:, 1]
        # strictly inside by more than float64's rounding: a GPU may sum one pair's squares in another order for
        # another batch of pairs, and the copy of a ball's k-th neighbour is on its edge, not inside
        bound = exact_radii.expand_as(d)[rows, cols]
        inside[rows, cols] = _exact(a, b, rows + offset, cols) < bound * (1.0 - _FLOAT64_ROUNDING)
    return inside


def check_counts(real: int, fake: int, nearest_k: int) -> None:
    """A ValueError unless :func:`prdc_from_features` can take ``real`` and ``fake`` features with ``nearest_k``."""
    if isinstance(nearest_k, bool) or not isinstance(nearest_k, int) or nearest_k < 1:
        raise ValueError(f"nearest_k must be an int >= 1, got {nearest_k!r}")
    if min(real, fake) <= nearest_k:
        raise ValueError(f"{nearest_k}-nearest-neighbour balls need more than {nearest_k} features per side, got "
                         f"{real} real and {fake} fake")


def prdc_from_features(real: Tensor, fake: Tensor, nearest_k: int = 5) -> dict[str, float]:
    """``{"precision", "recall", "density", "coverage"}`` of features ``fake`` ``[M, D]`` against ``real``
    ``[N, D]`` with ``nearest_k``-nearest-neighbour balls (see the module docstring); both sets need more than
    ``nearest_k`` rows. Computed in float32 on the features' device."""
    real = torch.as_tensor(real).float()
    fake = torch.as_tensor(fake).float().to(real.device)
    if real.dim() != 2 or fake.dim() != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"expected features [N, D] and [M, D], got {list(real.shape)} and {list(fake.shape)}")
    check_counts(len(real), len(fake), nearest_k)
    check_finite_rows(real, "real features")
    check_finite_rows(fake, "fake features")
    # Distances through ||a||² + ||b||² - 2ab lose float32 digits on features far from the origin: centred first
    # (distances do not change), they match float64 ones.
    center = real.mean(0)
    real, fake = real - center, fake - center
    (real_radii, real_exact), (fake_radii, fake_exact) = _ball_radii(real, nearest_k), _ball_radii(fake, nearest_k)
    real_norms, fake_norms = real.square().sum(1), fake.square().sum(1)
    in_real_balls = torch.zeros(len(fake), dtype=torch.long, device=real.device)  # per sample: how many
    recalled = torch.zeros(len(real), dtype=torch.bool, device=real.device)  # per real: in a sample's ball
    covered = torch.zeros(len(real), dtype=torch.bool, device=real.device)  # per real: its ball holds a sample
    step = _rows(len(fake))
    for i in range(0, len(real), step):
        rows = slice(i, i + step)
        d = _squared_distances(real[rows], fake, fake_norms)  # [reals of the chunk, samples]
        in_real = _inside(d, real_radii[rows, None], real_exact[rows, None], real_norms[rows], fake_norms, real,
                          fake, i)
        in_real_balls += in_real.sum(0)
        covered[rows] = in_real.any(1)
        del in_real
        recalled[rows] = _inside(d, fake_radii[None, :], fake_exact[None, :], real_norms[rows], fake_norms, real,
                                 fake, i).any(1)
    return {
        "precision": float((in_real_balls > 0).double().mean()),
        "recall": float(recalled.double().mean()),
        "density": float(in_real_balls.double().mean() / nearest_k),
        "coverage": float(covered.double().mean()),
    }


class PRDC:
    """Metric ``prdc``: returns ``{"prdc_precision", "prdc_recall", "prdc_density", "prdc_coverage"}``."""

    name = "prdc"
    uses_inception = True  # the Inception weights are checked before training starts

    def __init__(self, cfg: PRDCConfig) -> None:
        # checked when the metric is built, before training starts, not after the features at its end
        for key in ("samples", "real_samples"):
            value = getattr(cfg, key)
            if value is not None and value <= cfg.nearest_k:
                raise_it = "raise it (avade eval: --samples)" if key == "samples" else "raise it"
                raise ConfigError(f"{value} is too few for nearest_k = {cfg.nearest_k} (each side needs more "
                                  f"than k images); {raise_it} or lower eval.prdc.nearest_k", path=f"eval.prdc.{key}")
        self.cfg = cfg
        self.used: dict[str, int] = {}  # set by compute: the images of each side it compared

    def compute(self, ctx: EvalContext) -> dict[str, float]:
        """The four scores of model samples against the real split's Inception features."""
        cfg = self.cfg
        wanted = cfg.real_samples if cfg.real_samples is not None else cfg.samples
        extractor = get_extractor(ctx.options, ctx.device)
        warn_if_not_reference(extractor, "PRDC")
        real = real_features(ctx, extractor, cfg.split, wanted, cfg.batch_size).features
        if len(real) <= cfg.nearest_k:
            raise AvadeError(f"prdc: the {cfg.split} split holds only {len(real)} images, too few for nearest_k = "
                             f"{cfg.nearest_k}; lower eval.prdc.nearest_k, or use a larger split (eval.prdc.split)")
        if len(real) < wanted:  # recorded settings say otherwise: say what was used
            warnings.warn(f"PRDC used the {len(real)} images of the whole {cfg.split} split, not {wanted}; say which "
                          "you report (density and coverage depend on the number of real images)", UserWarning,
                          stacklevel=2)
        fake = sample_features(ctx, extractor, cfg.samples, cfg.batch_size).features
        self.used = {"real_images": len(real), "samples": len(fake)}
        from avade.train.device import ieee_fp32

        # the distances on the evaluation's GPU when it has one (50,000 a side: ~30 TFLOP, minutes on a CPU), in
        # IEEE fp32 there, so the scores are the CPU's up to rounding
        device = torch.device(ctx.device) if torch.device(ctx.device).type == "cuda" else real.device
        with ieee_fp32(device):
            scores = prdc_from_features(real.to(device), fake.to(device), cfg.nearest_k)
        return {f"prdc_{key}": value for key, value in scores.items()}
