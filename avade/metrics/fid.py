"""Fréchet Inception Distance (Heusel et al. 2017; AV-ADE appendix D, eq. 15).

``d² = ||m_r - m_g||² + Tr(C_r + C_g - 2 (C_r C_g)^{1/2})`` between Gaussians fitted to pool3 features
of real images and of model samples.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from pathlib import Path

import torch
from torch import Tensor

from avade.errors import ConfigError
from avade.metrics.configs import FIDConfig
from avade.metrics.context import EvalContext
from avade.metrics.features import FeatureExtractor, extract, get_extractor, warn_if_not_reference
from avade.metrics.reference import real_stats_count, sample_features
from avade.metrics.stats import gaussian_stats

__all__ = ["FID", "FIDConfig", "fid_from_features", "frechet_distance", "gaussian_stats", "load_reference_stats"]


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), computed in float64.

    ``Tr (C1 C2)^{1/2}`` is taken as ``Tr (C1^{1/2} C2 C1^{1/2})^{1/2}`` (same eigenvalues): that matrix
    is symmetric positive semi-definite, so ``eigh`` is stable and no complex round-off (as with
    ``sqrtm`` or ``eigvals(C1 C2)``) appears; tiny negative eigenvalues from round-off are clipped.
    """
    m1, m2 = (torch.as_tensor(t).to(torch.float64) for t in (mu1, mu2))
    s1, s2 = (torch.as_tensor(t).to(torch.float64) for t in (sigma1, sigma2))
    if m1.shape != m2.shape or s1.shape != s2.shape or s1.shape != (m1.numel(), m1.numel()):
        raise ValueError(f"mismatched statistics: mu {tuple(m1.shape)} vs {tuple(m2.shape)}, "
                         f"sigma {tuple(s1.shape)} vs {tuple(s2.shape)}")
    if not all(bool(torch.isfinite(t).all()) for t in (m1, m2, s1, s2)):
        raise ValueError("mu or sigma holds NaN or infinite values (from non-finite features?); FID is undefined")
    s2 = s2.to(s1.device)
    evals, evecs = torch.linalg.eigh((s1 + s1.T) / 2)
    root1 = (evecs * evals.clamp(min=0).sqrt()) @ evecs.T
    middle = root1 @ s2 @ root1
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    # Traces from the same clipped spectra as the square roots: with few samples the covariances are
    # rank-deficient and their round-off negatives would otherwise leave FID(x, x) visibly off zero.
    trace1 = evals.clamp(min=0).sum()
    trace2 = torch.linalg.eigvalsh((s2 + s2.T) / 2).clamp(min=0).sum()
    diff = m1 - m2.to(m1.device)
    return max(float(diff @ diff + trace1 + trace2 - 2 * trace_sqrt), 0.0)


def fid_from_features(real: Tensor, fake: Tensor) -> float:
    """FID between two feature sets ``[N, D]`` and ``[M, D]``."""
    return frechet_distance(*gaussian_stats(real), *gaussian_stats(fake))


def load_reference_stats(path: str) -> tuple[Tensor, Tensor]:
    """``(mu, sigma)`` from a statistics ``.npz`` (no pickle); a ConfigError naming what is wrong."""
    import numpy as np

    where = "eval.fid.reference"
    file = Path(os.path.expandvars(os.path.expanduser(path)))
    try:
        loaded = np.load(file, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # a bare .npy array
            raise ValueError("a single array, not an .npz archive")
        with loaded as data:
            missing = {"mu", "sigma"} - set(data.files)
            if missing:
                raise ConfigError(f"{file} holds {', '.join(sorted(data.files)) or 'no arrays'}, not "
                                  f"{' and '.join(sorted(missing))}; give FID statistics saved as mu and sigma",
                                  path=where)
            arrays = data["mu"], data["sigma"]
            if not all(np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer) for a in arrays):
                raise ValueError(f"mu and sigma are {arrays[0].dtype} and {arrays[1].dtype} arrays, not numbers")
            mu, sigma = (torch.from_numpy(a).double() for a in arrays)
    # missing, unreadable, not an npz (or a truncated one: BadZipFile), pickled arrays
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"cannot read FID statistics {file}: {exc}; give a .npz with mu and sigma",
                          path=where) from None
    if mu.dim() != 1 or sigma.shape != (mu.numel(), mu.numel()):
        raise ConfigError(f"{file}: mu {tuple(mu.shape)} and sigma {tuple(sigma.shape)} are not a mean [D] and "
                          "covariance [D, D]", path=where)
    if not (torch.isfinite(mu).all() and torch.isfinite(sigma).all()):
        raise ConfigError(f"{file}: mu or sigma holds NaN or infinite values", path=where)
    return mu, sigma


class FID:
    """Metric ``fid``: returns ``{"fid": value}``; real statistics are cached in ``ctx.cache_dir``."""

    name = "fid"
    uses_inception = True  # the Inception weights are checked before training starts

    def __init__(self, cfg: FIDConfig) -> None:
        self.cfg = cfg
        self.used: dict[str, int] = {}  # set by compute: how many real images the statistics come from

    def check_reference(self, extractor: FeatureExtractor, device: torch.device | str = "cpu"
                        ) -> tuple[Tensor, Tensor] | None:
        """``reference``'s ``(mu, sigma)``, checked against ``extractor``'s feature size on one blank image
        (before any sample is drawn; a training run calls it before step 0). None without a reference."""
        if self.cfg.reference is None:
            return None
        mu_r, sigma_r = load_reference_stats(self.cfg.reference)
        blank = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
        dims = extract(extractor, [blank], device=device, description="probe")[0].shape[1]
        if dims != mu_r.numel():
            raise ConfigError(f"{self.cfg.reference} has statistics of {mu_r.numel()}-dimensional features, but "
                              f"the feature extractor ({extractor.name}) gives {dims}; use statistics of the "
                              "same network (Inception pool3: 2048)", path="eval.fid.reference")
        return mu_r, sigma_r

    def compute(self, ctx: EvalContext) -> dict[str, float]:
        """``{"fid": ...}`` between model samples and the real split (or the reference statistics file)."""
        cfg = self.cfg
        extractor = get_extractor(ctx.options, ctx.device)
        warn_if_not_reference(extractor, "FID")
        reference = self.check_reference(extractor, ctx.device)
        if reference is not None:
            mu_r, sigma_r = reference
            self.used = {}
        else:
            mu_r, sigma_r, count = real_stats_count(ctx, extractor, cfg.split, cfg.real_samples, cfg.batch_size)
            self.used = {"real_images": count} if count is not None else {}
            if count is not None and count <= mu_r.numel():  # as for the samples below
                if cfg.real_samples is not None and cfg.real_samples <= count:  # it, not the split, is the limit
                    fix = "raise eval.fid.real_samples (or drop it for the whole split)"
                elif cfg.split != "train":
                    fix = 'use the larger training split (eval.fid.split = "train")'
                else:
                    fix = "the split itself is this small: compare only with FIDs from as many images"
                warnings.warn(f"FID's reference statistics come from {count} real images ({cfg.split} split) of "
                              f"{mu_r.numel()}-dimensional features: a rank-deficient covariance biases FID "
                              f"upward; {fix}", UserWarning, stacklevel=2)
        fake = sample_features(ctx, extractor, cfg.samples, cfg.batch_size).features
        if fake.shape[0] <= fake.shape[1]:  # the sample covariance cannot have full rank
            warnings.warn(f"FID from {fake.shape[0]} samples of {fake.shape[1]}-dimensional features is biased "
                          "upward (a rank-deficient covariance); published FIDs use 10,000-50,000 samples: raise "
                          "eval.fid.samples (or --samples) to compare", UserWarning, stacklevel=2)
        return {"fid": frechet_distance(mu_r, sigma_r, *gaussian_stats(fake))}
