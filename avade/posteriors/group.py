"""One latent group at one decoder stage: prior p(z|d), posterior q(z|h,d) (+ optional IAF), merge into d."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from avade.nets.blocks import ZeroScaled, conv
from avade.nn import elu
from avade.nn.precision import full_precision
from avade.nn.replicas import replica_mean
from avade.posteriors.flow import IAFFlow
from avade.posteriors.gaussian import gaussian_kl, normal_log_prob, soft_clamp, standard_log_prob


class LatentSample(NamedTuple):
    """A sampled latent ``z`` ([B, Z, H, W]) and its log-densities under q and p ([B] each)."""

    z: torch.Tensor
    log_q: torch.Tensor
    log_p: torch.Tensor


class LatentGroup(nn.Module):
    """The latent variables of one stage with ``channels`` state channels and ``latent`` latent channels.

    - prior ``p(z|d) = N(mu_p, sigma_p)`` from ``conv3x3(elu(d))``, scaled by a gain that starts at 0 so
      that the prior starts at N(0, I) (at the top stage ``d`` is the decoder's learned constant, so this
      is a learned prior there);
    - posterior ``q(z|h,d) = N(mu_q, sigma_q)`` from ``conv3x3(elu([h, d]))`` (eq. 7-8), relative to the
      prior when ``residual`` (``mu_q = mu_p + dmu``, ``log sigma_q = log sigma_p + dlog sigma``); its
      sample optionally goes through ``iaf_steps`` IAF steps whose context also comes from that conv;
    - merge: ``d + conv3x3(z)``;
    - every conv gets the class labels ``y`` of a class-conditional model (None otherwise), so with a
      conditional norm (``cwn``) the prior, the posterior and the merge are class-conditional, the top
      group's prior ``p(z|y)`` included;
    - ``free_bits`` > 0 (the "free bits" of Kingma et al. 2016, openai/iaf's ``kl_min``): in a training pass
      with gradients, a latent channel whose KL (summed over positions, averaged over the batch: the whole
      job's under data parallelism) is below ``free_bits`` nats gets no KL gradient, the gradient of
      ``sum_c max(KL_c, free_bits)``. Only the gradient changes: ``log_q`` keeps its value, so the
      reported bound stays the true ELBO;
    - ``kl = "analytic"`` (without IAF): in a training pass with gradients the KL is the closed form
      ``KL(q || p)`` instead of the single-sample ``log q(z) - log p(z)`` (the same expectation, less
      variance, as NVAE); ``log_q`` is then ``log_p + KL``. Evaluation keeps the sampled terms, which the
      importance-weighted bound needs.
    """

    def __init__(self, channels: int, latent: int, *, norm: str = "weight-norm",
                 num_classes: int | None = None, iaf_steps: int = 0, iaf_hidden: int = 64,
                 iaf_kernel: int = 3, residual: bool = False, free_bits: float = 0.0,
                 kl: str = "sample") -> None:
        super().__init__()
        if kl not in ("sample", "analytic"):
            raise ValueError(f"kl must be 'sample' or 'analytic', got {kl!r}")
        if kl == "analytic" and iaf_steps:
            raise ValueError("the KL of an IAF posterior has no closed form; use kl = 'sample'")
        self.latent = latent
        self.residual = residual
        self.free_bits = float(free_bits)
        self.analytic = kl == "analytic"
        self.context = iaf_hidden if iaf_steps else 0
        opts: dict[str, Any] = {"norm": norm, "num_classes": num_classes}
        self.prior = ZeroScaled(conv(channels, 2 * latent, 3, **opts), 2 * latent)
        self.posterior = conv(2 * channels, 2 * latent + self.context, 3, **opts)
        self.flow = IAFFlow(latent, iaf_hidden, self.context, iaf_steps, iaf_kernel) if iaf_steps else None
        self.merge = conv(latent, channels, 3, **opts)

    def prior_params(self, d: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu_p, log sigma_p)`` of p(z|d, y), float32 under mixed precision (:mod:`avade.nn.precision`)."""
        mu, s = full_precision(self.prior(elu(d), y)).chunk(2, dim=1)
        return mu, soft_clamp(s)

    def posterior_params(self, d: torch.Tensor, h: torch.Tensor,
                         prior: tuple[torch.Tensor, torch.Tensor] | None = None, y: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(mu_q, log sigma_q, context)`` of the Gaussian base of q(z|h,d,y) (context: None without IAF)."""
        out = self.posterior(elu(torch.cat([h, d], dim=1)), y)
        mu, s, ctx = out.split([self.latent, self.latent, self.context], dim=1)
        mu, s = full_precision(mu), full_precision(s)  # the density's parameters: float32 under autocast
        if self.residual:
            mu_p, log_sigma_p = prior if prior is not None else self.prior_params(d, y)
            mu, s = mu_p + mu, log_sigma_p + s
        return mu, soft_clamp(s), (ctx if self.context else None)

    def sample(self, d: torch.Tensor, h: torch.Tensor | None, temperature: float = 1.0,
               noise: torch.Tensor | None = None, y: torch.Tensor | None = None) -> LatentSample:
        """Sample z from q(z|h,d), or from p(z|d) with its std times ``temperature`` when ``h`` is None.

        ``noise`` (standard normal, shape of z) replaces the random draw, e.g. for fixed-noise grids. The
        returned log_p is under the untempered prior; log_q is 0 for prior samples. ``y``: the labels of a
        class-conditional model.
        """
        return self._draw(d, h, temperature, noise, elementwise=False, y=y)

    def _draw(self, d: torch.Tensor, h: torch.Tensor | None, temperature: float,
              noise: torch.Tensor | None, elementwise: bool, analytic: bool = False,
              y: torch.Tensor | None = None) -> LatentSample:
        """:meth:`sample`, with log_q and log_p per element (shaped like z) when ``elementwise``; with
        ``analytic`` (no IAF) a posterior sample's log_q is ``log_p + KL(q || p)`` in closed form."""
        mu_p, log_sigma_p = self.prior_params(d, y)
        eps = torch.randn_like(mu_p) if noise is None else noise
        if h is None:
            z = mu_p + temperature * torch.exp(log_sigma_p) * eps
            log_q = torch.zeros_like(z) if elementwise else z.new_zeros(z.shape[0])
            return LatentSample(z, log_q, normal_log_prob(z, mu_p, log_sigma_p, elementwise))
        mu_q, log_sigma_q, ctx = self.posterior_params(d, h, (mu_p, log_sigma_p), y)
        z = mu_q + torch.exp(log_sigma_q) * eps
        if analytic:
            log_p = normal_log_prob(z, mu_p, log_sigma_p, elementwise)
            return LatentSample(z, log_p + gaussian_kl(mu_q, log_sigma_q, mu_p, log_sigma_p, elementwise), log_p)
        log_q = standard_log_prob(eps, log_sigma_q, elementwise)
        if self.flow is not None:
            z, logdet = self.flow(z, ctx, elementwise)
            log_q = log_q - logdet
        return LatentSample(z, log_q, normal_log_prob(z, mu_p, log_sigma_p, elementwise))

    def encode(self, d: torch.Tensor, h: torch.Tensor, y: torch.Tensor | None = None,
               sample: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(d + merge(z), code)`` for z from q(z|h,d,y): its base mean through the IAF steps (a deterministic
        code), or a sample with ``sample``. ``code = (z - mu_p) / sigma_p`` is z in the standard coordinates of
        the prior p(z|d,y), which :meth:`decode` maps back: N(0, I) under the prior, whatever the stage."""
        mu_p, log_sigma_p = self.prior_params(d, y)
        mu_q, log_sigma_q, ctx = self.posterior_params(d, h, (mu_p, log_sigma_p), y)
        z = mu_q + torch.exp(log_sigma_q) * torch.randn_like(mu_q) if sample else mu_q
        if self.flow is not None:
            z, _ = self.flow(z, ctx, False)
        return d + self.merge(z, y), (z - mu_p) * torch.exp(-log_sigma_p)

    def decode(self, d: torch.Tensor, code: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``d + merge(z)`` for ``z = mu_p + sigma_p * code`` under the prior p(z|d,y) (see :meth:`encode`)."""
        mu_p, log_sigma_p = self.prior_params(d, y)
        return d + self.merge(mu_p + torch.exp(log_sigma_p) * code.to(mu_p.dtype), y)

    def analytic_kl(self, d: torch.Tensor, h: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Closed-form ``KL(q(z|h,d,y) || p(z|d,y))`` per sample ([B]); only without IAF."""
        if self.flow is not None:
            raise ValueError("the KL of an IAF posterior has no closed form; use log_q - log_p of a sample")
        mu_p, log_sigma_p = self.prior_params(d, y)
        mu_q, log_sigma_q, _ = self.posterior_params(d, h, (mu_p, log_sigma_p), y)
        return gaussian_kl(mu_q, log_sigma_q, mu_p, log_sigma_p)

    def forward(self, d: torch.Tensor, h: torch.Tensor | None, temperature: float = 1.0,
                y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(d + merge(z), log_q, log_p)``."""
        training = h is not None and self.training and torch.is_grad_enabled()
        if not training or (self.free_bits <= 0 and not self.analytic):
            s = self.sample(d, h, temperature, y=y)
            return d + self.merge(s.z, y), s.log_q, s.log_p
        s = self._draw(d, h, temperature, None, elementwise=self.free_bits > 0, analytic=self.analytic, y=y)
        if self.free_bits <= 0:
            return d + self.merge(s.z, y), s.log_q, s.log_p
        log_q = s.log_q.flatten(1).sum(1) - free_bits_gradient(s.log_q - s.log_p, self.free_bits)
        return d + self.merge(s.z, y), log_q, s.log_p.flatten(1).sum(1)


def free_bits_gradient(kl: torch.Tensor, free_bits: float) -> torch.Tensor:
    """Per sample ([B]), a term of value 0 whose gradient is that of the KL of the channels of ``kl``
    ([B, Z, H, W], per element) whose KL (summed over positions, averaged over the batch) is below
    ``free_bits``: subtracted from log q, it removes their KL gradient (free bits). Under data parallelism
    the batch is the job's (:func:`~avade.nn.replicas.replica_mean`)."""
    per_channel = kl.flatten(2).sum(2)  # [B, Z]
    # The batch mean of the whole data-parallel job (inside the trainer's step): one decision for all.
    below = (replica_mean(per_channel.detach().mean(0)) < free_bits).to(per_channel.dtype)
    return ((per_channel - per_channel.detach()) * below).sum(1)
