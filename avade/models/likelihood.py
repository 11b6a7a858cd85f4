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


def discretized_logistic_log_prob(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(x) of 8-bit images x (uint8) under a logistic discretized into 256 bins on [-1, 1].

    Bin i covers [c_i - 1/255, c_i + 1/255] with c_i = 2 i / 255 - 1; the edge bins extend to +-inf
    (PixelCNN++), so the probabilities of the 256 values sum to one. In float32 for 16-bit parameters.
    """
    mean, log_scale = full_precision(mean), full_precision(log_scale)
    c = x.to(mean.dtype) / 127.5 - 1.0
    log_scale = log_scale.expand_as(mean).clamp(min=-7.0)
    inv_s = torch.exp(-log_scale)
    plus = inv_s * (c - mean + 1.0 / 255.0)
    minus = inv_s * (c - mean - 1.0 / 255.0)
    cdf_delta = torch.sigmoid(plus) - torch.sigmoid(minus)
    log_cdf_plus = plus - F.softplus(plus)  # log sigmoid(plus), for x = 0
    log_one_minus_cdf_min = -F.softplus(minus)  # log(1 - sigmoid(minus)), for x = 255
    mid = inv_s * (c - mean)
    log_pdf_mid = mid - log_scale - 2.0 * F.softplus(mid) + math.log(2.0 / 255.0)
    inner = torch.where(cdf_delta > 1e-5, torch.log(cdf_delta.clamp(min=1e-12)), log_pdf_mid)
    lp = torch.where(x == 0, log_cdf_plus, torch.where(x == 255, log_one_minus_cdf_min, inner))
    return lp.flatten(1).sum(1)


def sample_discretized_logistic(mean: torch.Tensor, log_scale: torch.Tensor,
                                generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample 8-bit values (as u in [0, 256)) from the discretized logistic.

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
    v = (c.clamp(-1, 1) + 1.0) * 127.5
    within_bin = torch.rand(mean.shape, generator=generator, device=mean.device) * (1.0 - 2.0 ** -10)
    return v + (v.round() - v).detach() + within_bin.to(v.dtype)
