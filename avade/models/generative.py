"""The generative model of every variant: [preprocess -> flow f] -> VAE (encoder, latents, decoder).

One class serves AV-ADE, V-ADE (with f), AV-GDE, VAE (pixel space), GAN (decoder used as a
generator from the prior) and the flow alone (variant ``flow``: a standard normal on f(x), no VAE: Real-NVP
and Glow as the paper's baselines). Which losses are applied is the trainer's business (Algorithm 1).
"""

from __future__ import annotations

import contextlib
import inspect
import math
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any, cast

import torch
from torch import nn
from torch._subclasses.fake_tensor import is_fake

from avade.contracts import (
    CodedPosterior,
    DecoderModule,
    DiscriminatorModule,
    EncoderModule,
    FlowModule,
    PosteriorModule,
)
from avade.errors import ConfigError, DataError, argument, int_argument, real_argument
from avade.models import codes as latent_codes
from avade.models.likelihood import (
    discretized_logistic_log_prob,
    discretized_logistic_mode,
    gaussian_log_prob,
    sample_discretized_logistic,
)
from avade.models.preprocess import Preprocess
from avade.nn import frozen


class GenerativeModel(nn.Module):
    """Feature map f (optional) + hierarchical VAE over features + learned decoder scale.

    ``discriminator`` is held here only so that one state dict checkpoints the whole model; it is
    never called by this class.
    """

    def __init__(
        self,
        *,
        variant: str,
        data_shape: tuple[int, int, int],
        preprocess: Preprocess,
        flow: FlowModule | None,
        encoder: EncoderModule | None,
        posterior: PosteriorModule | None,
        decoder: DecoderModule | None,
        discriminator: DiscriminatorModule | None = None,
        num_classes: int = 0,
        likelihood: str = "gaussian",
        sigma: str = "channel",
        sigma_init: float = 1.0,
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        self.variant = variant
        self.data_shape = tuple(data_shape)
        self.preprocess = preprocess
        # (nn.Module registers them as submodules; the annotations tell type checkers their contracts)
        self.flow: FlowModule | None = flow
        self.encoder: EncoderModule | None = encoder
        self.posterior: PosteriorModule | None = posterior
        self.decoder: DecoderModule | None = decoder
        self.discriminator: DiscriminatorModule | None = discriminator
        self.num_classes = int(num_classes)
        self.likelihood = likelihood
        self.temperature = float(temperature)
        #: The flow alone, its latent f(x) standard normal (variant "flow"): no encoder, posterior or decoder.
        self.flow_only = encoder is None
        parts = (encoder, posterior, decoder)
        if any(p is None for p in parts) != all(p is None for p in parts) or (self.flow_only and flow is None):
            raise ConfigError("a model has an encoder, a posterior and a decoder, or none of them and a flow "
                              "(variant \"flow\")", path="model")
        channels = self.data_shape[0] if sigma == "channel" else 1
        if self.flow_only:  # (no decoder noise to learn: a fixed 0, still the model's device and dtype)
            self.register_buffer("log_sigma", torch.zeros(channels, 1, 1))
        else:
            self.log_sigma = nn.Parameter(torch.full((channels, 1, 1), math.log(sigma_init)))
        self.num_stages = len(encoder.stage_shapes) if encoder is not None else 0
        self._latent_stages = frozenset(posterior.stage_ids) if posterior is not None else frozenset()
        # (a plugin posterior written before labels reached posteriors has no `y`: it stays label-free)
        self._posterior_takes_labels = posterior is not None and takes_labels(posterior.forward_stage)

    @property
    def dims(self) -> int:
        """D, the number of dimensions of one image."""
        return math.prod(self.data_shape)

    def generator_parameters(self) -> list[nn.Parameter]:
        """Everything but the discriminator (the flow included)."""
        skip = {id(p) for p in self.discriminator.parameters()} if self.discriminator is not None else set()
        return [p for p in self.parameters() if id(p) not in skip]

    def _in_dtype(self, u: torch.Tensor) -> torch.Tensor:
        """Dequantized images (float32) in float64 for a model cast with ``.double()`` (the same noise as the
        float32 model's: drawn in float32 either way)."""
        return u.double() if self.log_sigma.dtype == torch.float64 else u

    def _labels(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        return labels if self.num_classes and labels is not None else None

    def _checked(self, what: str, x: torch.Tensor | None, labels: torch.Tensor | None, n: int | None = None) -> None:
        """A public entry's inputs, refused with a DataError naming what is wrong (float images would give a
        bpd of another scale, silently; a class-conditional model without labels would run its untrained
        label-free path)."""
        if x is not None:
            if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or tuple(x.shape[1:]) != self.data_shape \
                    or x.dim() != 4:
                raise DataError(f"{what}: images must be uint8 [B, {', '.join(map(str, self.data_shape))}] (values "
                                f"0..255, as the data loaders give them), got {_described(x)}")
            n = x.shape[0]
            if n == 0:  # (else an IndexError deep in the preprocessing)
                raise DataError(f"{what}: the batch holds no images (x is {list(x.shape)}); pass at least one")
        if not self.num_classes:
            if labels is not None and x is None:
                # samples of the classes asked for, silently unconditional otherwise (log_likelihood and
                # reconstruct take a data loader's labels, which an unconditional model has no use for)
                raise DataError(f"{what}: the model is not class-conditional (model.conditional = false), so it "
                                "cannot sample given classes; drop labels, or train with model.conditional = true")
            return
        if labels is None:
            raise DataError(f"{what}: the model is class-conditional ({self.num_classes} classes): pass labels, "
                            f"int64 [{n}] in [0, {self.num_classes})")
        if not _are_class_ids(labels, n):
            raise DataError(f"{what}: labels must be integer class ids [{n}], got {_described(labels)}")
        # (on any device: every caller is a public entry, not the training loop, so one host sync is nothing, and a
        # GPU's out-of-range class id is a device-side assert that leaves the process's CUDA context unusable; not
        # while compiled: a graph break; not on the meta device or fake tensors, which have no values)
        if n and not torch.compiler.is_compiling() and not labels.is_meta and not is_fake(labels) \
                and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise DataError(f"{what}: labels must lie in [0, {self.num_classes}), got {int(labels.min())}.."
                            f"{int(labels.max())}")

    def _prepared(self, what: str, x: torch.Tensor | None, labels: torch.Tensor | None,
                  generator: torch.Generator | None, n: int | None = None) -> tuple[Any, Any, torch.Generator | None]:
        """A public entry's inputs, checked (:meth:`_checked`) and on the model's device (a notebook's CPU
        images for a model on a GPU); a generator of another device is replaced by one there, seeded from it
        (still reproducible)."""
        self._checked(what, x, labels, n)
        if self.log_sigma.dtype not in (torch.float32, torch.float64):  # (else a dtype mismatch deep in a conv)
            raise DataError(f"{what}: the model's weights are {self.log_sigma.dtype}; it runs in float32 (.float()) "
                            "or float64 (.double()): for bf16, run it under torch.autocast (train.precision = "
                            "\"bf16\" in a recipe)")
        device = self.log_sigma.device
        if x is not None:
            x = x.to(device, non_blocking=True)
        if labels is not None:  # (int64: a uint8 or int16 tensor of class ids fails in the embeddings)
            labels = labels.to(device, torch.int64, non_blocking=True)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"{what}: generator must be a torch.Generator (or None), got {type(generator).__name__} "
                            f"{generator!r:.40}; e.g. torch.Generator().manual_seed(0)")
        if generator is not None and generator.device.type != device.type:
            seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
            generator = torch.Generator(device=device).manual_seed(seed)
        return x, labels, generator

    # -- the VAE over features ----------------------------------------------------------------------
    def _top_down(self, batch: int, hs: list[torch.Tensor] | None, labels: torch.Tensor | None,
                  temperature: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run the decoder's top-down pass; returns (mean, log_q, log_p) summed over latent groups."""
        assert self.decoder is not None and self.posterior is not None  # (not for the flow alone)
        d = self.decoder.initial_state(batch)
        log_q = d.new_zeros(batch)
        log_p = d.new_zeros(batch)
        for i in reversed(range(self.num_stages)):
            if i in self._latent_stages:
                h = hs[i] if hs is not None else None
                if labels is not None and self._posterior_takes_labels:
                    d, lq, lp = self.posterior.forward_stage(i, d, h, temperature, y=labels)
                else:
                    d, lq, lp = self.posterior.forward_stage(i, d, h, temperature)
                if lq.shape != (batch,) or lp.shape != (batch,):  # (broadcasting would train on a wrong bound)
                    raise ConfigError(f"the posterior ({_who(self.posterior)}) returned log q of shape "
                                      f"{list(lq.shape)} and log p of shape {list(lp.shape)} at stage {i}; each must "
                                      f"be [{batch}], one value per image", path="model.posterior")
                log_q = log_q + lq
                log_p = log_p + lp
            d = self.decoder.forward_stage(i, d, labels)
        with _full_precision(d):  # the mean sets the likelihood floor: no bf16 rounding there
            mean = self.decoder.head(_lifted(d), labels)
        if mean.shape != (batch, *self.data_shape):
            raise ConfigError(f"the decoder ({_who(self.decoder)}) gave means of shape {list(mean.shape)}; "
                              f"expected [{batch}, {', '.join(map(str, self.data_shape))}] (one per image, its "
                              "shape)", path="model.decoder")
        return mean, log_q, log_p

    def features(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Dequantized image u -> (f(preprocess(u)), total log|det|)."""
        y, logdet = self.preprocess(u)
        if self.flow is not None:
            with _full_precision(y):
                out = self.flow(_lifted(y))
            if not (isinstance(out, tuple) and len(out) == 2):  # a plugin flow breaking the contract
                raise ConfigError(f"the flow ({type(self.flow).__name__}) returned {type(out).__name__} from "
                                  "forward; a flow returns (y, logdet), logdet of shape [batch]", path="model.flow")
            y, logdet_f = out
            if y.shape != u.shape:  # e.g. a flow that squeezes or factors out without putting it back
                raise ConfigError(f"the flow ({type(self.flow).__name__}) maps {tuple(u.shape[1:])} to "
                                  f"{tuple(y.shape[1:])}; the feature map f must keep the image's shape (use a "
                                  "full flow, which undoes its squeezes, such as realnvp or glow)", path="model.flow")
            logdet = logdet + logdet_f
        return y, logdet

    def log_likelihood(self, x: torch.Tensor, labels: torch.Tensor | None = None,
                       generator: torch.Generator | None = None, importance_samples: int = 1
                       ) -> dict[str, torch.Tensor]:
        """Per-sample bound on log p(x) for uint8 images ``x``; ``bpd`` is in bits per dimension.

        With ``importance_samples = k > 1`` the bound is the k-sample importance-weighted one (tighter). With
        ``generator`` the result depends on it alone, as :meth:`sample`'s: the dequantization noise comes
        from it, and the latents' from the global RNG forked and re-seeded from it (then restored).
        """
        self._refuse_gan("log_likelihood")
        if int_argument(importance_samples) < 1:
            raise DataError(f"log_likelihood: importance_samples must be an int >= 1, got {importance_samples!r}")
        x, labels, generator = self._prepared("log_likelihood", x, labels, generator)
        with _seeded_from(generator):
            return self.bound(x, labels, generator, importance_samples)

    def bound(self, x: torch.Tensor, labels: torch.Tensor | None, generator: torch.Generator | None,
              importance_samples: int = 1) -> dict[str, torch.Tensor]:
        """:meth:`log_likelihood` on checked inputs on the model's device, ``generator`` drawing the
        dequantization noise only (the latents draw from the global RNG): the training step's form, one
        compiled graph, no RNG fork per call."""
        return self.bound_dequantized(self.preprocess.dequantize(x, generator), x, labels, importance_samples)

    def bound_dequantized(self, u: torch.Tensor, x: torch.Tensor, labels: torch.Tensor | None,
                          importance_samples: int = 1) -> dict[str, torch.Tensor]:
        """:meth:`bound` of ``u``, ``x`` dequantized (``preprocess.dequantize(x, generator)``): what
        ``train.compile`` compiles, the noise drawn outside (torch.compile breaks its graph at a
        ``torch.Generator`` argument)."""
        labels = self._labels(labels)
        batch = x.shape[0]
        u = self._in_dtype(u)
        feat, logdet = self.features(u)
        if self.flow_only:  # exact: ln N(f(x); 0, I) + ln|det df/dx| (no latent, so every k-sample bound is this)
            log_pz = gaussian_log_prob(feat, torch.zeros_like(feat), self.log_sigma)
            log_px = log_pz + logdet
            return {"bpd": -log_px / (self.dims * math.log(2.0)), "log_px": log_px, "recon": log_pz,
                    "kl": torch.zeros_like(log_pz), "logdet": logdet, "mean": torch.zeros_like(feat)}
        assert self.encoder is not None and self.posterior is not None
        k = int(importance_samples)
        if k > 1 and self.training and torch.is_grad_enabled() and any(
                getattr(m, "analytic", False) is True for m in cast(nn.Module, self.posterior).modules()):
            # its training pass reports log q as log p + KL(q || p), no density of the sample: a k-sample bound of
            # that is no bound
            raise ConfigError(f"importance_samples = {k} in a training pass needs the posterior's kl = \"sample\" "
                              "(kl = \"analytic\" gives no per-sample log q); evaluate under model.eval() or "
                              "torch.no_grad(), or set kl = \"sample\"")
        feat_k = feat.repeat(k, *([1] * (feat.dim() - 1))) if k > 1 else feat
        labels_k = labels.repeat(k) if (labels is not None and k > 1) else labels
        # The bottom-up pass is deterministic: run it once and repeat its features for the k samples.
        hs = [h.repeat(k, *([1] * (h.dim() - 1))) for h in self.encoder(feat, labels)] if k > 1 \
            else self.encoder(feat, labels)
        mean, log_q, log_p = self._top_down(feat_k.shape[0], hs, labels_k, 1.0)
        if self.likelihood == "discretized-logistic":
            x_k = x.repeat(k, *([1] * (x.dim() - 1))) if k > 1 else x
            pre = self.preprocess
            log_px_z = discretized_logistic_log_prob(pre.levels(x_k), mean, self.log_sigma, bins=pre.bins)
            logdet = torch.zeros_like(logdet)  # exact discrete likelihood: no dequantization bound
        else:
            log_px_z = gaussian_log_prob(feat_k, mean, self.log_sigma)
        log_w = (log_px_z + log_p - log_q).view(k, batch)
        elbo = torch.logsumexp(log_w, 0) - math.log(k) if k > 1 else log_w[0]
        log_px = elbo + logdet
        bpd = -log_px / (self.dims * math.log(2.0))
        return {
            "bpd": bpd,
            "log_px": log_px,
            "recon": log_px_z.view(k, batch).mean(0),
            "kl": (log_q - log_p).view(k, batch).mean(0),
            "logdet": logdet,
            "mean": mean[:batch],
        }

    @torch.inference_mode()
    def bpd_sum(self, batches: Iterable[tuple[int, torch.Tensor, torch.Tensor]], importance_samples: int = 1,
                seed: int = 12345) -> tuple[float, int]:
        """(sum of bits/dim, number of images) over indexed batches ``(i, uint8 images, labels)``.

        Batch ``i``'s noise (dequantization and latents) comes from ``(seed, i)`` alone, so the same
        weights give the same value, the training RNG stream is left untouched, and batches split over
        processes sum to the single-process value. With ``importance_samples`` k > 1 each image runs k
        times, so a batch goes through in parts of ``batch // k`` images (at least one): about one batch
        of images at a time, as for k = 1, not k batches at once.

        The images are checked as :meth:`log_likelihood` checks them (uint8 of the model's shape; a
        class-conditional model's labels), and the model runs in eval mode, then gets its mode back."""
        self._refuse_gan("bpd")
        k = int_argument(importance_samples)
        if k < 1:
            raise DataError(f"bpd: importance_samples must be an int >= 1, got {importance_samples!r}")
        training = self.training
        self.eval()
        try:
            return self._bpd_sum(batches, k, seed)
        finally:
            self.train(training)

    def _bpd_sum(self, batches: Iterable[tuple[int, torch.Tensor, torch.Tensor]], k: int,
                 seed: int) -> tuple[float, int]:
        device = self.log_sigma.device
        total = torch.zeros((), dtype=torch.float64, device=device)
        count = 0
        for i, x, y in batches:
            # (float images would give a bpd of another scale, silently; bad labels a traceback from the embeddings)
            self._checked("bpd", x, y if self.num_classes else None)
            gen = torch.Generator(device=device).manual_seed(seed * 1_000_003 + i)
            part = max(1, x.shape[0] // k)
            with _seeded_from(gen):
                for start in range(0, x.shape[0], part):
                    xs = x[start:start + part].to(device)
                    labels = y[start:start + part].to(device, torch.int64) if self.num_classes else None
                    total += self.bound(xs, labels, gen, k)["bpd"].double().sum()
            count += x.shape[0]
        return float(total), count

    def mean_bpd(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], importance_samples: int = 1,
                 seed: int = 12345) -> float:
        """Mean bits/dim over ``batches`` of (uint8 images, labels), deterministic as :meth:`bpd_sum` (an
        unconditional model also takes batches of images alone, e.g. ``torch.split(images, 256)``)."""
        total, count = self.bpd_sum(((i, *_images_and_labels(b, i)) for i, b in enumerate(batches)),
                                    importance_samples, seed)
        return total / max(count, 1)

    # -- generation ---------------------------------------------------------------------------------
    def decode_prior(self, n: int, labels: torch.Tensor | None = None,
                     temperature: float | None = None) -> torch.Tensor:
        """Decoder means for n latent samples from the prior (the flow alone: its latents, N(0, t^2 I), from the
        global RNG as a VAE's latents)."""
        t = self.temperature if temperature is None else temperature
        if self.flow_only:
            dtype = self.log_sigma.dtype
            return torch.randn((n, *self.data_shape), device=self.log_sigma.device, dtype=dtype) * t
        mean, _, _ = self._top_down(n, None, self._labels(labels), t)
        return mean

    def _noise(self, mean: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if self.variant == "gan" or self.flow_only:
            return mean  # the GAN uses the decoder mean as its sample; the flow's latent is its sample
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + self.log_sigma.exp() * eps

    def to_image(self, feat: torch.Tensor, flow_grad: bool = True) -> torch.Tensor:
        """Feature space -> u in [0, 256) through f^-1; ``flow_grad=False`` keeps f's parameters out
        of the graph (gradients still flow to ``feat``)."""
        y = _lifted(feat)
        if self.flow is not None:
            with _full_precision(y):
                y = self._flow_inverse(y, flow_grad)
        return self.preprocess.inverse(y)

    def _flow_inverse(self, feat: torch.Tensor, flow_grad: bool) -> torch.Tensor:
        assert self.flow is not None
        if flow_grad:
            return self.flow.inverse(feat)
        with frozen(self.flow):
            return self.flow.inverse(feat)

    def _sample_from_mean(self, mean: torch.Tensor, generator: torch.Generator | None,
                          flow_grad: bool = True) -> torch.Tensor:
        """Decoder mean -> u in [0, 256): discretized logistic, or Gaussian noise then f^-1."""
        if self.likelihood == "discretized-logistic":
            return sample_discretized_logistic(mean, self.log_sigma, generator, bins=self.preprocess.bins)
        return self.to_image(self._noise(mean, generator), flow_grad=flow_grad)

    def generate(self, n: int, labels: torch.Tensor | None = None, generator: torch.Generator | None = None,
                 flow_grad: bool = True, temperature: float | None = None) -> torch.Tensor:
        """Differentiable samples u in [0, 256) (Algorithm 1: prior -> mean -> Gaussian -> f^-1). Its inputs are
        checked without a host sync (the training step calls it): ``n`` an int >= 0, ``temperature`` a finite
        number >= 0, and a class-conditional model's ``labels`` integer class ids [n]."""
        if not torch.compiler.is_compiling():  # (the trainer's compiled step passes its batch's own: no graph break)
            self._generate_arguments(n, labels, temperature)
        return self._sample_from_mean(self.decode_prior(n, labels, temperature), generator, flow_grad)

    def _generate_arguments(self, n: Any, labels: Any, temperature: Any) -> None:
        """:meth:`generate`'s arguments refused in one line naming the argument (a negative or float ``n`` failed
        deep in a layer, a NaN temperature gave NaN images, and a class-conditional model without labels ran
        its untrained label-free path, silently)."""
        if int_argument(n) < 0:
            raise DataError(f"generate: {argument('n', n)}: expected an int >= 0")
        if temperature is not None and not 0 <= real_argument(temperature) < math.inf:  # (NaN fails too)
            raise DataError(f"generate: {argument('temperature', temperature)}: expected a finite number >= 0 (1 = "
                            "the prior itself) or None (the recipe's model.temperature)")
        if not self.num_classes:  # (labels are ignored: an unconditional model has no use for a loader's)
            return
        if labels is None:
            raise DataError(f"generate: the model is class-conditional ({self.num_classes} classes): pass "
                            f"{argument('labels')}, int64 [{n}] in [0, {self.num_classes})")
        if not _are_class_ids(labels, n):
            raise DataError(f"generate: {argument('labels')} must be integer class ids [{n}], got "
                            f"{_described(labels)}")

    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None, temperature: float | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """n uint8 images from the model; with ``generator`` the result depends on it alone (the
        global RNG, which the latent layers draw from, is forked and re-seeded from it, then restored).
        ``temperature`` scales the prior's standard deviations only (None: the recipe's ``model.temperature``;
        1: the prior itself); the decoder's pixel noise is drawn at its own scale, so 0 still varies. In eval mode
        (each module's own mode given back), as :meth:`encode`: a training-mode batch norm would make each image
        depend on the batch drawn with it, and update its running statistics."""
        if int_argument(n) < 1:
            raise DataError(f"sample: n must be an int >= 1, got {n!r}")
        n = int(n)
        if temperature is not None:
            t = real_argument(temperature)
            if not 0 <= t < math.inf:  # (NaN fails too)
                raise DataError(f"sample: temperature must be a finite number >= 0 (1 = the prior itself), got "
                                f"{temperature!r}")
            temperature = t
        _, labels, generator = self._prepared("sample", None, labels, generator, n)
        with _evaluating(self), _seeded_from(generator):
            return self._images(self.generate(n, labels, generator, temperature=temperature), "sample")

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, labels: torch.Tensor | None = None,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 reconstructions of uint8 images: x -> f -> q(z|x) -> mean (+ noise) -> f^-1. In eval mode, as
        :meth:`sample`."""
        self._refuse_gan("reconstruct")
        x, labels, generator = self._prepared("reconstruct", x, labels, generator)
        with _evaluating(self), _seeded_from(generator):
            return self._reconstruct(x, labels)

    def _reconstruct(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Its noise from the global RNG (which :meth:`reconstruct` seeds from a generator)."""
        labels = self._labels(labels)
        u = self._in_dtype(self.preprocess.dequantize(x, None))
        feat, _ = self.features(u)
        if self.flow_only:  # f^-1(f(u)): the dequantized image itself, up to rounding
            return self._images(self.to_image(feat), "reconstruction")
        assert self.encoder is not None
        hs = self.encoder(feat, labels)
        mean, _, _ = self._top_down(x.shape[0], hs, labels, 1.0)
        return self._images(self._sample_from_mean(mean, None), "reconstruction")

    # -- latent codes -------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None, *, sample: bool = False,
               generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """The latent codes of uint8 images: one tensor per latent stage (``posterior.stage_ids`` order), each z of
        q(z|x) in the standard coordinates of the prior it is drawn under (N(0, I) there, at every stage; see
        :mod:`avade.models.codes`). Deterministic by default: each pixel at its bin's centre and each z at q's
        base mean (through any IAF steps); ``sample`` draws the dequantization and z instead (from ``generator``
        alone when given). :meth:`decode` maps codes back to images. It runs in eval mode (each module's own mode
        given back after), as :meth:`decode` and :meth:`interpolate` do: a training-mode batch norm would make an
        image's code depend on its batch, and update its running statistics."""
        with _evaluating(self):
            return self._encode(x, labels, sample, generator)

    def _encode(self, x: torch.Tensor, labels: torch.Tensor | None, sample: bool,
                generator: torch.Generator | None, what: str = "encode") -> list[torch.Tensor]:
        x, labels, generator = self._prepared(what, x, labels, generator)
        if self.flow_only:  # one code: f(x), standard normal under the prior
            with _seeded_from(generator):
                u = self.preprocess.dequantize(x, generator) if sample else self.preprocess.centres(x)
                return [self.features(self._in_dtype(u))[0]]
        assert self.encoder is not None and self.decoder is not None
        posterior = self._coded(what)
        labels = self._labels(labels)
        with _seeded_from(generator):
            u = self.preprocess.dequantize(x, generator) if sample else self.preprocess.centres(x)
            feat, _ = self.features(self._in_dtype(u))
            hs = self.encoder(feat, labels)
            d = self.decoder.initial_state(x.shape[0])
            found: dict[int, torch.Tensor] = {}
            for i in reversed(range(self.num_stages)):
                if i in self._latent_stages:
                    d, found[i] = posterior.encode_stage(i, d, hs[i], y=labels, sample=sample)
                if i > min(self._latent_stages):  # (below the last latent stage d is needed no more)
                    d = self.decoder.forward_stage(i, d, labels)
        return [found[i] for i in posterior.stage_ids]

    @torch.no_grad()
    def decode(self, codes: list[torch.Tensor], labels: torch.Tensor | None = None, *, pixel_noise: bool = True,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 images of latent codes (as :meth:`encode` gives them; standard normal ones are prior samples,
        zeros the prior's mode). The decoder's pixel noise is added, as :meth:`sample` adds it, unless
        ``pixel_noise`` is False: then the image is the decoder's mean (the most likely bin, for a
        discretized-logistic likelihood) mapped through f^-1. In eval mode, as :meth:`encode`."""
        with _evaluating(self):
            return self._decode(codes, labels, pixel_noise, generator)

    def _decode(self, codes: list[torch.Tensor], labels: torch.Tensor | None, pixel_noise: bool,
                generator: torch.Generator | None) -> torch.Tensor:
        if self.flow_only:  # f^-1 of the one code (a flow has no pixel noise)
            (code,) = latent_codes.checked_codes("decode", codes, [self.data_shape])
            _, labels, generator = self._prepared("decode", None, labels, generator, code.shape[0])
            return self._images(self.to_image(code.to(self.log_sigma.device, self.log_sigma.dtype)), "decoding")
        assert self.decoder is not None
        posterior = self._coded("decode", encoding=False)
        shape_of = getattr(self.posterior, "latent_shape", None)
        shapes = [tuple(shape_of(i)) if callable(shape_of) else None for i in posterior.stage_ids]
        given = latent_codes.checked_codes("decode", codes, shapes)
        n = given[0].shape[0]
        _, labels, generator = self._prepared("decode", None, labels, generator, n)
        labels = self._labels(labels)
        device, dtype = self.log_sigma.device, self.log_sigma.dtype
        by_stage = {i: c.to(device, dtype) for i, c in zip(posterior.stage_ids, given, strict=True)}
        with _seeded_from(generator):
            d = self.decoder.initial_state(n)
            for i in reversed(range(self.num_stages)):
                if i in self._latent_stages:
                    d = posterior.decode_stage(i, d, by_stage[i], y=labels)
                d = self.decoder.forward_stage(i, d, labels)
            with _full_precision(d):
                mean = self.decoder.head(_lifted(d), labels)
            if pixel_noise:
                return self._images(self._sample_from_mean(mean, generator), "decoding")
            if self.likelihood == "discretized-logistic":  # the logistic's location is its mode: that bin
                return self._images(discretized_logistic_mode(mean, self.preprocess.bins), "decoding")
            return self._images(self.to_image(mean), "decoding")

    @torch.no_grad()
    def interpolate(self, x_a: torch.Tensor, x_b: torch.Tensor, steps: int = 8, labels: torch.Tensor | None = None,
                    *, spherical: bool = True, pixel_noise: bool = True,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 ``[B, steps, C, H, W]``: for each pair of images, ``steps`` decodings along the path between
        their codes (:meth:`encode`, deterministic), its ends included: the whole code of each image at once,
        spherically (the norm interpolated along the great circle between them) or linearly. With
        ``pixel_noise`` the same pixel noise is drawn for every step of a pair, so that the frames differ by
        their latents alone (drawn from ``generator``, else from the global RNG, as :meth:`sample`'s). A
        class-conditional model takes one label per pair, used at both ends. In eval mode, as :meth:`encode`."""
        if int_argument(steps) < 2:
            raise DataError(f"interpolate: steps must be an int >= 2 (both ends included), got {steps!r}")
        # (anything but a tensor is refused by the encoding, which names what images it takes)
        if isinstance(x_a, torch.Tensor) and isinstance(x_b, torch.Tensor) and x_a.shape != x_b.shape:
            raise DataError(f"interpolate: x_a and x_b must be image batches of one shape, got {list(x_a.shape)} "
                            f"and {list(x_b.shape)}")
        with _evaluating(self):  # (errors named as interpolate's)
            a = self._encode(x_a, labels, False, None, "interpolate")
            b = self._encode(x_b, labels, False, None, "interpolate")
        # (noise shared along each path; without a generator from the global RNG, as sample's: torch.manual_seed
        # makes it reproducible)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator,
                                 device=generator.device if generator is not None else "cpu").item())
        device = generator.device if generator is not None else self.log_sigma.device
        frames = []
        for step in latent_codes.path(a, b, int(steps), spherical):
            # one seed for every step: the same pixel noise for each frame of a pair
            frame_gen = torch.Generator(device=device).manual_seed(seed)
            frames.append(self.decode(step, labels, pixel_noise=pixel_noise, generator=frame_gen))
        return torch.stack(frames, 1)

    def _refuse_gan(self, what: str) -> None:
        """A GAN's encoder and likelihood are never trained: its bound and reconstructions would be numbers of
        untrained weights, silently."""
        if self.variant == "gan":
            raise ConfigError(f"{what}: a GAN trains no encoder or likelihood, so it has no bound on log p(x) and "
                              "no reconstructions; score it by sample metrics (fid_of_images, ...) of model.sample")

    def _coded(self, what: str, encoding: bool = True) -> CodedPosterior:
        """The posterior, refused in one line if it has no latent codes (a plugin's without
        ``encode_stage``/``decode_stage``) or, for an encoding, if the model's encoder is never trained (a
        GAN: its prior and decoder are, so it decodes codes of the prior, e.g. standard normal ones)."""
        if encoding and self.variant == "gan":
            raise ConfigError(f"{what}: a GAN trains no encoder, so its images have no codes; sample it from the "
                              "prior (model.sample), or decode codes of the prior (model.decode)")
        if not isinstance(self.posterior, CodedPosterior):
            raise ConfigError(f"{what}: the posterior ({_who(self.posterior)}) has no latent codes: it needs "
                              "encode_stage(i, d, h, y=None, sample=False) and decode_stage(i, d, code, y=None) "
                              "(see CONTRIBUTING.md, posterior)", path="model.posterior")
        return self.posterior

    def _images(self, u: torch.Tensor, what: str) -> torch.Tensor:
        """u in [0, 256) -> uint8 images, with a warning where u holds NaN or inf: uint8 has neither, so they would
        pass unannounced as black (NaN, -inf) or white (+inf) pixels (a sample metric of such images, FID say, looks
        like a real result). Without the logit (``model.logit_alpha = 0``) an overflowing f^-1 gives inf, not NaN."""
        if not bool(torch.isfinite(u).all()):
            nan, inf = bool(torch.isnan(u).any()), bool(torch.isinf(u).any())
            kinds = " and ".join(k for k, on in (("NaN", nan), ("inf", inf)) if on)
            warnings.warn(f"{what}: the model's {what}s hold {kinds} (the model diverged, e.g. f^-1 overflows); such "
                          f"pixels come out black or white, so these images and any metric of them (FID, ...) say "
                          "nothing about the model", RuntimeWarning, stacklevel=3)
        return self.preprocess.to_uint8(u)

    def extra_repr(self) -> str:
        """The variant, data shape and likelihood, shown by ``repr(model)``."""
        return f"variant={self.variant!r}, data_shape={self.data_shape}, likelihood={self.likelihood!r}"


@contextlib.contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """Run ``model`` in eval mode, then give each of its modules its own mode back (a caller's mix of modes
    included: a frozen part kept in eval mode while the rest trains)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


@contextlib.contextmanager
def _seeded_from(generator: torch.Generator | None) -> Iterator[None]:
    """Run with the global RNG seeded from ``generator`` and restore it afterwards, so that sampling
    is reproducible and does not disturb the training RNG stream (exact resume); without a generator, on the
    global RNG as it is."""
    if generator is None:
        yield
        return
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
    # torch.manual_seed reseeds every CUDA device, so every initialised one is restored afterwards.
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _images_and_labels(batch: Any, i: int) -> tuple[Any, Any]:
    """A batch of :meth:`GenerativeModel.mean_bpd`: (images, labels), or images alone (labels None)."""
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    got = f"a {type(batch).__name__} of {len(batch)}" if isinstance(batch, (tuple, list)) else type(batch).__name__
    raise DataError(f"mean_bpd: batch {i} is {got}; give batches of (uint8 images, labels), as a DataLoader of an "
                    "avade dataset yields them, or of images alone")


def _are_class_ids(labels: Any, n: int | None) -> bool:
    """Whether ``labels`` is a tensor of integer class ids ``[n]`` (bool, floating-point and complex ones are not:
    a complex tensor would fail later, in ``min``, with torch's own error)."""
    return (isinstance(labels, torch.Tensor) and not labels.dtype.is_floating_point and not labels.dtype.is_complex
            and labels.dtype != torch.bool and tuple(labels.shape) == (n,))


def _described(value: Any) -> str:
    """A tensor as ``dtype [shape]``, anything else by its type's name, for error messages."""
    return f"{value.dtype} {list(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__


def takes_labels(forward_stage: Callable[..., Any]) -> bool:
    """Whether a posterior's ``forward_stage`` takes the labels: a parameter named ``y`` that can be passed
    by keyword (the contract since posteriors became class-conditional; an older plugin's has none, and a
    fifth parameter of another name is not taken for it)."""
    try:
        param = inspect.signature(forward_stage).parameters.get("y")
    except (TypeError, ValueError):  # a builtin or C callable: no signature to read
        return False
    return param is not None and param.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                inspect.Parameter.KEYWORD_ONLY)


def _who(module: object) -> str:
    """A component's class by its full name, which shows the plugin package it comes from."""
    cls = type(module)
    return f"{cls.__module__}.{cls.__qualname__}"


def _lifted(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32, or float64 where it is (a model cast with ``.double()``, for exactness checks)."""
    return t if t.dtype == torch.float64 else t.float()


def _full_precision(t: torch.Tensor) -> Any:
    """Flows stay in float32 under bf16 autocast: their log-determinants and inverses need it."""
    if t.device.type == "meta":  # (a model run on the meta device, to count its activations: no autocast there)
        return contextlib.nullcontext()
    return torch.autocast(t.device.type, enabled=False)
