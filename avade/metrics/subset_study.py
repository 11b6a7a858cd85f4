"""AV-ADE appendix D, Table 7: how IS and FID of the real data change as random subsets shrink.

Quality is unchanged while coverage drops, so this shows how (in)sensitive the two scores are to
coverage: FID of a random subset against the full set, and IS of the subset.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch

from avade.errors import AvadeError
from avade.metrics.context import EvalContext
from avade.metrics.features import FeatureExtractor, get_extractor, warn_if_not_reference
from avade.metrics.fid import frechet_distance
from avade.metrics.inception_score import inception_score
from avade.metrics.reference import real_features
from avade.metrics.stats import gaussian_stats

__all__ = ["PAPER_SIZES", "SMALL_FRACTIONS", "subset_study"]

PAPER_SIZES: tuple[int, ...] = (50000, 40000, 30000, 20000, 10000, 5000, 2500)
SMALL_FRACTIONS: tuple[float, ...] = (1.0, 0.8, 0.6, 0.4, 0.2, 0.1, 0.05)


def _counts(sizes: Sequence[int | float] | None, total: int) -> list[int]:
    if sizes is None:
        # The paper's sizes on CIFAR-10's 50k training images; fractions of smaller sets.
        if total >= PAPER_SIZES[0]:
            sizes = [total, *(s for s in PAPER_SIZES[1:] if s < total)]
        else:
            sizes = SMALL_FRACTIONS
    _check_fractions(sizes)
    counts = []
    for s in sizes:
        if isinstance(s, float):
            n = round(s * total)
        else:
            n = int(s)
        if not 2 <= n <= total:
            raise AvadeError(f"subset study: subset size {n} is not in [2, {total}] (images in the split)")
        counts.append(n)
    return counts


def _check_fractions(sizes: Sequence[int | float] | None) -> None:
    """A fraction outside (0, 1] (NaN too), refused in one line: it needs no count of the split's images."""
    for s in sizes or ():
        if isinstance(s, float) and not 0.0 < s <= 1.0:
            raise AvadeError(f"subset study: fraction {s} is not in (0, 1]; give fractions such as 0.5 (1.0 = the "
                             "whole split)")


def subset_study(
    ctx: EvalContext,
    sizes: Sequence[int | float] | None = None,
    extractor: FeatureExtractor | None = None,
    *,
    split: str = "train",
    seed: int = 0,
    is_splits: int = 10,
    batch_size: int = 100,
) -> list[dict[str, float]]:
    """FID (and IS when the extractor has a classifier head) of random subsets of the real ``split``.

    ``sizes``: image counts (int) or fractions of the split (float in (0, 1]); None = the paper's
    (full, 40k, 30k, 20k, 10k, 5k, 2.5k) when the split has >= 50k images, else fractions
    (1, .8, .6, .4, .2, .1, .05). Each subset is drawn without replacement, seeded by ``seed`` and its
    position in ``sizes``. Rows: ``{"size", "fraction", "fid"[, "is_mean", "is_std"]}``; the full set
    has FID 0 against itself.
    """
    # Bad sizes fail before the split's Inception features are extracted (many minutes on a CPU), not after:
    # all of them where the context counts its images without reading them (split_size, optional), else fractions.
    split_size = getattr(ctx, "split_size", None)
    if callable(split_size):
        _counts(sizes, split_size(split))
    else:
        _check_fractions(sizes)
    extractor = extractor or get_extractor(ctx.options, ctx.device)
    warn_if_not_reference(extractor, "subset study")
    data = real_features(ctx, extractor, split, None, batch_size)
    if data.probs is None:  # Table 7 has an IS column: say why this one has none
        warnings.warn(f"subset study: no IS column, the feature extractor {extractor.name} gives pool3 features "
                      "only; for IS point AVADE_INCEPTION_WEIGHTS at weights with the classifier head "
                      "(pt_inception-2015-12-05-6726825d.pth)", UserWarning, stacklevel=2)
    total = len(data.features)
    mu_full, sigma_full = gaussian_stats(data.features)
    rows = []
    for i, n in enumerate(_counts(sizes, total)):
        idx = torch.randperm(total, generator=torch.Generator().manual_seed(seed + i))[:n]
        mu, sigma = gaussian_stats(data.features[idx])
        fid = frechet_distance(mu, sigma, mu_full, sigma_full)
        row: dict[str, float] = {"size": int(n), "fraction": n / total, "fid": fid}
        if data.probs is not None and n >= is_splits:
            row["is_mean"], row["is_std"] = inception_score(data.probs[idx], is_splits)
        rows.append(row)
    return rows
