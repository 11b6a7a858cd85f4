"""Decoder densities: Gaussian N(mu, sigma^2 I) in feature space, discretized logistic in pixel space."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from avade.nn.precision import full_precision


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """Sum over all but the batch dim of log N(x; mean, exp(log_sigma)^2); log_sigma broadcasts. In float32
    for 16-bit inputs (:mod:`avade.nn.precision`)."""
    x, mean, log_sigma = full_precision(x), full_precision(mean), full_precision(log_sigma)
    log_sigma = log_sigma.expand_as(mean)
    z = (x - mean) * torch.exp(-log_sigma)
    lp = -0.5 * z.pow(2) - log_sigma - 0.5 * math.log(2 * math.pi)
    return lp.flatten(1).sum(1)


def discretized_logistic_log_prob(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor,
                                  bins: int = 256) -> torch.Tensor:
    """log P(x) of images x of levels ``0 .. bins - 1`` (8-bit: uint8 as they are) under a logistic
    discretized into ``bins`` bins on [-1, 1].

    Bin i covers [c_i - h, c_i + h] with c_i = 2 i / (bins - 1) - 1 and h = 1 / (bins - 1); the edge bins
    extend to +-inf (PixelCNN++), so the probabilities of the ``bins`` values sum to one. In float32 for
    16-bit parameters.
    """
    mean, log_scale = full_precision(mean), full_precision(log_scale)
    top = bins - 1
    c = x.to(mean.dtype) / (top / 2.0) - 1.0
    log_scale = log_scale.expand_as(mean).clamp(min=-7.0)
    inv_s = torch.exp(-log_scale)
    plus = inv_s * (c - mean + 1.0 / top)
    minus = inv_s * (c - mean - 1.0 / top)
    cdf_delta = torch.sigmoid(plus) - torch.sigmoid(minus)
    log_cdf_plus = plus - F.softplus(plus)  # log sigmoid(plus), for the lowest level
    log_one_minus_cdf_min = -F.softplus(minus)  # log(1 - sigmoid(minus)), for the highest
    mid = inv_s * (c - mean)
    log_pdf_mid = mid - log_scale - 2.0 * F.softplus(mid) + math.log(2.0 / top)
    inner = torch.where(cdf_delta > 1e-5, torch.log(cdf_delta.clamp(min=1e-12)), log_pdf_mid)
    lp = torch.where(x == 0, log_cdf_plus, torch.where(x == top, log_one_minus_cdf_min, inner))
    return lp.flatten(1).sum(1)


def sample_discretized_logistic(mean: torch.Tensor, log_scale: torch.Tensor,
                                generator: torch.Generator | None = None, bins: int = 256) -> torch.Tensor:
    """Sample levels of ``bins`` bins (as u in [0, 256), each bin 256 / ``bins`` wide) from the
    discretized logistic.

    The rounding to a bin is straight-through: the values are the rounded ones, the gradient is the
    continuous logistic sample's, so an adversarial loss on these samples (AV-GDE, GAN) reaches the
    decoder (rounding's own gradient is zero almost everywhere). Each value is then dequantized with
    uniform noise in its bin, as real images are before the critic sees them (``Preprocess.dequantize``):
    otherwise every generated pixel would sit at its bin's centre, a cue for the critic that has nothing
    to do with the image. The noise stays below 1 - 2^-10 so that ``to_uint8``'s floor gives back the
    sampled bin exactly in float32."""
    mean, log_scale = full_precision(mean), full_precision(log_scale)
    noise = torch.rand(mean.shape, generator=generator, device=mean.device).clamp(1e-5, 1 - 1e-5)
    c = mean + log_scale.expand_as(mean).exp() * (torch.log(noise) - torch.log1p(-noise))
    v = _levels(c, bins)
    within_bin = torch.rand(mean.shape, generator=generator, device=mean.device) * (1.0 - 2.0 ** -10)
    u = v + (v.round() - v).detach() + within_bin.to(v.dtype)
    return u if bins == 256 else u * (256 // bins)


def discretized_logistic_mode(mean: torch.Tensor, bins: int = 256) -> torch.Tensor:
    """The most likely bin of the discretized logistic of location ``mean`` (its mode: the bin holding the
    location), as u at that bin's centre in [0, 256) (each bin 256 / ``bins`` wide)."""
    return (_levels(full_precision(mean), bins).round() + 0.5) * (256 // bins)


def _levels(c: torch.Tensor, bins: int) -> torch.Tensor:
    """Locations in [-1, 1] (clamped) -> continuous levels in [0, bins - 1]."""
    return (c.clamp(-1, 1) + 1.0) * ((bins - 1) / 2.0)
