"""Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD² with a polynomial kernel.

``k(x, y) = (gamma <x, y> + coef)^degree`` (default degree 3, gamma = 1/D, coef 1), averaged over random
subsets of real and generated features, as in torchmetrics' ``KernelInceptionDistance``: the same subset
draws (one ``randperm`` of the real set, then one of the fake set, per subset) and the same estimator,
so with the same seed both give the same numbers. With ``real_samples`` unset, :class:`KID` extracts at most the
``subsets * subset_size`` real images its subsets can touch (:func:`kid_real_pool`).
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from avade.metrics.configs import KIDConfig
from avade.metrics.context import EvalContext
from avade.metrics.features import get_extractor, warn_if_not_reference
from avade.metrics.reference import real_features, sample_features
from avade.metrics.stats import check_finite_rows

__all__ = ["KID", "KIDConfig", "check_kid_options", "kernel_inception_distance", "kid_real_pool", "polynomial_mmd2",
           "warn_if_every_subset_is_the_same"]


def check_kid_options(subsets: int, subset_size: int, degree: int = 3) -> None:
    """A ValueError naming the argument unless :func:`kernel_inception_distance` can take these options."""
    for name, value, least in (("subsets", subsets, 1), ("subset_size", subset_size, 2), ("degree", degree, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"KID: {name} must be an int >= {least}, got {value!r}")


def polynomial_mmd2(x: Tensor, y: Tensor, degree: int = 3, gamma: float | None = None,
                    coef: float = 1.0) -> Tensor:
    """Unbiased MMD² between equally sized sets ``x``, ``y`` ``[m, D]`` with the polynomial kernel."""
    m = x.shape[0]
    gamma = 1.0 / x.shape[1] if gamma is None else gamma

    def kernel(a: Tensor, b: Tensor) -> Tensor:
        return (a @ b.T * gamma + coef) ** degree

    k_xx, k_yy, k_xy = kernel(x, x), kernel(y, y), kernel(x, y)
    within = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return within - 2 * k_xy.sum() / m**2


def warn_if_every_subset_is_the_same(size: int, real: int, fake: int, stacklevel: int = 2) -> None:
    """Warn when KID's subsets of ``size`` are both whole sets (``real`` and ``fake`` images): its std is then 0."""
    if size == real == fake:  # every "subset" is both whole sets: no spread to measure
        warnings.warn(f"KID subsets of {size} images from sets of {size}: every subset is the same, so kid_std "
                      "is 0 by construction; use more samples than subset_size", UserWarning, stacklevel=stacklevel + 1)


def kernel_inception_distance(
    real: Tensor,
    fake: Tensor,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """KID mean and (population) standard deviation over ``subsets`` random subsets, in float64.

    ``subset_size`` is capped at the smaller set's size so that small datasets still work.
    """
    check_kid_options(subsets, subset_size, degree)
    real, fake = torch.as_tensor(real), torch.as_tensor(fake)  # (each subset in float64: not both whole sets)
    if real.dim() != 2 or fake.dim() != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"expected features [N, D] and [M, D], got {list(real.shape)} and {list(fake.shape)}")
    check_finite_rows(real, "real features")
    check_finite_rows(fake, "fake features")
    size = min(subset_size, real.shape[0], fake.shape[0])
    if size < 2:
        raise ValueError(f"KID needs >= 2 real and fake features, got {real.shape[0]} and {fake.shape[0]}")
    scores = []
    for _ in range(subsets):
        r = real[torch.randperm(real.shape[0], generator=generator)[:size].to(real.device)].to(torch.float64)
        f = fake[torch.randperm(fake.shape[0], generator=generator)[:size].to(fake.device)].to(torch.float64)
        scores.append(polynomial_mmd2(r, f, degree, gamma, coef))
    values = torch.stack(scores)
    return float(values.mean()), float(values.std(unbiased=False))


def kid_real_pool(ctx: EvalContext, split: str, subsets: int, subset_size: int) -> int | None:
    """How many real images of ``split`` KID extracts when ``real_samples`` is unset: ``subsets * subset_size``
    (a fixed random subset, as ``real_samples`` of that many takes) when the split has more, else None (all of it).

    Its subsets can only ever touch ``subsets * subset_size`` real rows, so holding the features of a larger split
    (LSUN bedroom's 3M training images: 24 GB of Inception features) buys nothing; each subset is still a uniform
    random subset of the split. A context without the optional ``split_size`` is taken whole, as before."""
    pool = subsets * subset_size
    size = getattr(ctx, "split_size", None)
    return pool if callable(size) and size(split) > pool else None


class KID:
    """Metric ``kid``: returns ``{"kid_mean", "kid_std"}``."""

    name = "kid"
    uses_inception = True  # the Inception weights are checked before training starts

    def __init__(self, cfg: KIDConfig) -> None:
        self.cfg = cfg
        self.used: dict[str, int] = {}  # set by compute: the real images and the subset size it used

    def compute(self, ctx: EvalContext) -> dict[str, float]:
        """``{"kid_mean", "kid_std"}`` between model samples and the real split, over random subsets."""
        cfg = self.cfg
        extractor = get_extractor(ctx.options, ctx.device)
        warn_if_not_reference(extractor, "KID")
        wanted = cfg.real_samples  # (unset: no more than the subsets can touch, see kid_real_pool)
        if wanted is None:
            wanted = kid_real_pool(ctx, cfg.split, cfg.subsets, cfg.subset_size)
        real = real_features(ctx, extractor, cfg.split, wanted, cfg.batch_size).features
        fake = sample_features(ctx, extractor, cfg.samples, cfg.batch_size).features
        size = min(cfg.subset_size, real.shape[0], fake.shape[0])
        self.used = {"real_images": int(real.shape[0]), "subset_size": size}
        if size < cfg.subset_size:  # recorded settings say subset_size: say what was used
            warnings.warn(f"KID used subsets of {size} images, the smaller set's size, not subset_size = "
                          f"{cfg.subset_size}; KID values of different subset sizes differ in variance only, but say "
                          "which you report", UserWarning, stacklevel=2)
        warn_if_every_subset_is_the_same(size, real.shape[0], fake.shape[0])
        mean, std = kernel_inception_distance(real, fake, cfg.subsets, cfg.subset_size, cfg.degree, cfg.gamma,
                                              cfg.coef, torch.Generator().manual_seed(cfg.seed))
        return {"kid_mean": mean, "kid_std": std}
