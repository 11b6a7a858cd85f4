"""Gaussian summary statistics of feature sets (FID's mean and covariance)."""

from __future__ import annotations

import torch
from torch import Tensor


def check_finite_rows(features: Tensor, what: str) -> None:
    """A ValueError counting the rows of ``features`` ``[N, D]`` that hold NaN or infinite values (``what``:
    how the message names the rows, e.g. "fake features"). A NaN feature does not fail a metric by itself: a
    NaN distance compares false (PRDC's coverage 0), a KID subset may never draw it, eigh names nothing."""
    finite = torch.isfinite(features)
    if not finite.all():
        bad = int((~finite).any(1).sum())
        raise ValueError(f"{bad} of the {features.shape[0]} {what} hold NaN or infinite values; drop or fix those "
                         "rows before scoring")


def gaussian_stats(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean ``[D]`` and unbiased covariance ``[D, D]`` (divided by N - 1, as ``np.cov``), in float64."""
    x = torch.as_tensor(features).to(torch.float64)
    if x.dim() != 2 or x.shape[0] < 2:
        raise ValueError(f"need features of shape [N >= 2, D], got {tuple(x.shape)}")
    check_finite_rows(x, "feature rows")
    mu = x.mean(dim=0)
    centered = x - mu
    sigma = centered.T @ centered / (x.shape[0] - 1)
    return mu, sigma
