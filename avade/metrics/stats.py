"""Gaussian summary statistics of feature sets (FID's mean and covariance)."""

from __future__ import annotations

import torch
from torch import Tensor


def gaussian_stats(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean ``[D]`` and unbiased covariance ``[D, D]`` (divided by N - 1, as ``np.cov``), in float64."""
    x = torch.as_tensor(features).to(torch.float64)
    if x.dim() != 2 or x.shape[0] < 2:
        raise ValueError(f"need features of shape [N >= 2, D], got {tuple(x.shape)}")
    if not torch.isfinite(x).all():  # NaN statistics: eigh fails on them with a LinAlgError that names nothing
        bad = int((~torch.isfinite(x)).any(1).sum())
        raise ValueError(f"{bad} of the {x.shape[0]} feature rows hold NaN or infinite values; drop or fix them")
    mu = x.mean(dim=0)
    centered = x - mu
    sigma = centered.T @ centered / (x.shape[0] - 1)
    return mu, sigma
