"""Inception Score (Salimans et al. 2016; AV-ADE appendix D, eq. 14): ``exp E_x KL(p(y|x) || p(y))``.

Computed on ``splits`` consecutive chunks of the samples; the mean and the population standard deviation
over chunks are reported, as in the original code.
"""

from __future__ import annotations

import torch
from torch import Tensor

from avade.errors import ConfigError
from avade.metrics.configs import InceptionScoreConfig
from avade.metrics.context import EvalContext
from avade.metrics.features import get_extractor, require_probs, warn_if_not_reference
from avade.metrics.reference import sample_features

__all__ = ["InceptionScore", "InceptionScoreConfig", "inception_score"]


def check_splits(n: int, splits: int, shape: tuple[int | str, ...] | None = None) -> None:
    """A ValueError unless ``n`` images' class probabilities (of ``shape``) can be cut into ``splits`` chunks."""
    if isinstance(splits, bool) or not isinstance(splits, int) or splits < 1:
        raise ValueError(f"splits must be an int >= 1, got {splits!r}")
    if n < splits:
        raise ValueError(f"need probabilities [N >= splits={splits}, K], got {shape if shape is not None else n}")


def inception_score(probs: Tensor, splits: int = 10) -> tuple[float, float]:
    """IS mean and std from class probabilities ``[N, K]`` (rows sum to 1), over ``splits`` chunks."""
    p = torch.as_tensor(probs).to(torch.float64)
    check_splits(p.shape[0] if p.dim() == 2 else 0, splits, tuple(p.shape))
    # Logits or unnormalized scores give NaN or a wrong score silently: refuse anything but probabilities
    # (the tolerance admits float16/float32 softmax round-off).
    if not (torch.isfinite(p).all() and (p >= 0).all() and torch.allclose(p.sum(1), torch.ones(()).double(),
                                                                          atol=1e-3, rtol=0)):
        worst = float((p.sum(1) - 1).abs().nan_to_num(nan=float("inf")).max())
        raise ValueError(f"need class probabilities (finite, >= 0, each row summing to 1; worst row sum off by "
                         f"{worst:.3g}): apply softmax to logits first")
    scores = []
    # Split bounds i*N//splits as in the reference code (OpenAI's, torch-fidelity): the same chunks, so
    # the same score, when N is not a multiple of splits.
    bounds = [i * len(p) // splits for i in range(splits + 1)]
    for chunk in (p[bounds[i]:bounds[i + 1]] for i in range(splits)):
        marginal = chunk.mean(dim=0, keepdim=True)
        # xlogy: 0 * log 0 = 0 for classes a network gives exactly zero probability.
        kl = (torch.xlogy(chunk, chunk) - chunk * torch.log(marginal.clamp_min(1e-300))).sum(dim=1)
        scores.append(torch.exp(kl.mean()))
    values = torch.stack(scores)
    return float(values.mean()), float(values.std(unbiased=False))


class InceptionScore:
    """Metric ``is``: returns ``{"is_mean", "is_std"}``; needs weights with the classifier head."""

    name = "is"
    uses_inception = True  # the Inception weights are checked before training starts
    needs_probs = True  # ... with its classifier head

    def __init__(self, cfg: InceptionScoreConfig) -> None:
        # Checked when the metric is built (before training starts, or before `avade eval` samples):
        # inception_score() would only refuse the combination after every sample was drawn.
        if cfg.samples < cfg.splits:
            raise ConfigError(f"{cfg.samples} samples cannot be cut into splits = {cfg.splits} chunks; raise "
                              "samples (or --samples) or lower splits", path="eval.is.samples")
        self.cfg = cfg

    def compute(self, ctx: EvalContext) -> dict[str, float]:
        """``{"is_mean", "is_std"}`` of model samples over ``splits`` splits."""
        cfg = self.cfg
        extractor = get_extractor(ctx.options, ctx.device)
        require_probs(extractor)
        warn_if_not_reference(extractor, "IS")
        probs = sample_features(ctx, extractor, cfg.samples, cfg.batch_size, probs=True).probs
        assert probs is not None
        mean, std = inception_score(probs, cfg.splits)
        return {"is_mean": mean, "is_std": std}
