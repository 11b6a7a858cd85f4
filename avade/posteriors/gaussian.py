"""Diagonal Gaussian helpers: log-densities and KL summed per sample, and a soft clamp on log-scales."""

from __future__ import annotations

import math

import torch

LOG_2PI = math.log(2 * math.pi)
#: |log sigma| is softly kept below this (std in [e^-7, e^7]) so that exp() can never overflow or
#: underflow to a degenerate Gaussian, whatever a badly conditioned step does to the conv outputs.
LOG_SIGMA_BOUND = 7.0


def soft_clamp(s: torch.Tensor, bound: float = LOG_SIGMA_BOUND) -> torch.Tensor:
    """``bound * tanh(s / bound)``: the identity near 0, smooth, and bounded by ``bound``."""
    return bound * torch.tanh(s / bound)


def _sum(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).sum(1)


def normal_log_prob(z: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor,
                    elementwise: bool = False) -> torch.Tensor:
    """``log N(z; mu, exp(log_sigma)^2)`` summed over all but the batch dimension: ``[B]`` (``elementwise``:
    not summed, shaped like ``z``)."""
    return standard_log_prob((z - mu) * torch.exp(-log_sigma), log_sigma, elementwise)


def standard_log_prob(eps: torch.Tensor, log_sigma: torch.Tensor, elementwise: bool = False) -> torch.Tensor:
    """``log N(mu + sigma eps; mu, sigma^2)`` from the noise ``eps`` itself (no cancellation): ``[B]``
    (``elementwise``: not summed)."""
    lp = -0.5 * eps.square() - log_sigma - 0.5 * LOG_2PI
    return lp if elementwise else _sum(lp)


def gaussian_kl(mu_q: torch.Tensor, log_sigma_q: torch.Tensor, mu_p: torch.Tensor,
                log_sigma_p: torch.Tensor, elementwise: bool = False) -> torch.Tensor:
    """``KL(N(mu_q, sigma_q^2) || N(mu_p, sigma_p^2))`` summed per sample: ``[B]`` (``elementwise``: not
    summed)."""
    var_ratio = torch.exp(2 * (log_sigma_q - log_sigma_p))
    mean_term = ((mu_q - mu_p) * torch.exp(-log_sigma_p)).square()
    kl = 0.5 * (var_ratio + mean_term - 1) - (log_sigma_q - log_sigma_p)
    return kl if elementwise else _sum(kl)
