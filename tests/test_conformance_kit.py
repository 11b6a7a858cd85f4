"""The conformance kit catches each gap a review found: a flow's log-det wrong only in training mode, a
flow's output of the wrong shape, a posterior's broken sampling (prior) path, a norm whose state escapes
the safetensors round trip, conditional components broken only with labels, and it reports an exception
inside a component's call as one failed check naming the component and the call."""

from __future__ import annotations

import math
from typing import Any

import attrs
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from avade.errors import ConfigError
from avade.testing import check_component, check_module


def _fails(kind: str, factory: Any, config: Any, name: str, expected: str) -> str:
    with pytest.raises(AssertionError, match=expected) as info:
        check_module(kind, factory, config, name=name)
    assert str(info.value).startswith(f"{kind} '{name}'")
    return str(info.value)


# -- flows -------------------------------------------------------------------------------------------


@attrs.define
class FlowConfig:
    """Element-wise affine flow ``y = x * exp(s) + b`` with switchable defects."""

    train_logdet_offset: float = 0.0  # the log-det is off only while self.training (as the trainer runs it)
    flatten: bool = False  # y of shape [B, C*H*W]: the element count is right, the shape is not
    out_shape_lie: bool = False  # advertises a squeezed out_shape but keeps x's shape
    float64_mix: bool = False  # a channel mixing made with numpy (float64), kept as a plain attribute
    upcast: bool = False  # returns y in float64 whatever x's dtype
    downcast: bool = False  # returns y in float32 whatever x's dtype (a fixed .float())
    clamp: float = 0.0  # clamps x to [-clamp, clamp] first: not invertible beyond (0: off)
    in_place: str = ""  # "forward": y computed in x's storage; "inverse": x computed in y's
    reads_values: bool = False  # checks its input's range with .item(): right, but cannot run on the meta device


class Affine(nn.Module):
    """A correct flow with every defect off."""

    def __init__(self, cfg: FlowConfig, *, in_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.cfg = cfg
        c, h, w = in_shape
        self.in_shape = in_shape
        self.out_shape = (4 * c, h // 2, w // 2) if cfg.out_shape_lie else in_shape
        self.log_scale = nn.Parameter(torch.zeros(in_shape))
        self.shift = nn.Parameter(torch.zeros(in_shape))
        self.mix = torch.from_numpy(np.eye(c)) if cfg.float64_mix else None  # (fine in float64, as the kit ran it)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cfg.reads_values and x.abs().max().item() > 1e6:
            raise ValueError("input out of range")
        if self.mix is not None:
            x = torch.einsum("ij,bjhw->bihw", self.mix, x)
        x = x.clamp(-self.cfg.clamp, self.cfg.clamp) if self.cfg.clamp else x
        if self.cfg.in_place == "forward" and not torch.is_grad_enabled():  # (a leaf can't be changed under autograd)
            return x.mul_(self.log_scale.exp()).add_(self.shift), self.log_scale.sum().expand(x.shape[0])
        y = x * self.log_scale.exp() + self.shift
        y = y.double() if self.cfg.upcast else y
        y = y.float() if self.cfg.downcast else y
        logdet = self.log_scale.sum().expand(x.shape[0])
        if self.training:
            logdet = logdet + self.cfg.train_logdet_offset
        return (y.flatten(1) if self.cfg.flatten else y), logdet

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        y = y.view(-1, *self.in_shape)
        if self.cfg.in_place == "inverse":
            y = y.sub_(self.shift)
        x = (y - (0 if self.cfg.in_place == "inverse" else self.shift)) * (-self.log_scale).exp()
        return x if self.mix is None else torch.einsum("ij,bjhw->bihw", self.mix.T, x)


@attrs.define
class BatchNormConfig:
    """Batch normalization as a flow; ``running_logdet``: in training the output uses the batch's variance
    but the log-det the running one (right in eval mode only)."""

    running_logdet: bool = False


class TinyBatchNorm(nn.Module):
    """Per-channel ``(x - mean) / std`` with batch statistics in training, running ones in eval; log-det
    that of the map with the statistics held fixed (as Real-NVP's batch norm)."""

    def __init__(self, cfg: BatchNormConfig, *, in_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.cfg = cfg
        self.pixels = in_shape[1] * in_shape[2]
        self.register_buffer("running_mean", torch.zeros(1, in_shape[0], 1, 1))
        self.register_buffer("running_var", torch.ones(1, in_shape[0], 1, 1))
        self.scale = nn.Parameter(torch.ones(1, in_shape[0], 1, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.training:
            mean, var = x.mean((0, 2, 3), keepdim=True), x.var((0, 2, 3), keepdim=True, correction=0)
            with torch.no_grad():
                self.running_mean.lerp_(mean, 0.1)
                self.running_var.lerp_(var, 0.1)
        else:
            mean, var = self.running_mean, self.running_var
        logdet_var = self.running_var if self.cfg.running_logdet else var
        y = (x - mean) * torch.rsqrt(var + 1e-4) * self.scale
        logdet = self.pixels * (self.scale.abs().log() - 0.5 * torch.log(logdet_var + 1e-4)).sum()
        return y, logdet.expand(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y / self.scale * torch.sqrt(self.running_var + 1e-4) + self.running_mean


def test_the_kit_accepts_correct_flows_with_and_without_batch_statistics() -> None:
    check_module("flow", Affine, FlowConfig(), name="good-affine")
    check_module("flow", TinyBatchNorm, BatchNormConfig(), name="good-batch-norm")


def test_a_logdet_wrong_only_in_training_mode_is_caught() -> None:
    _fails("flow", Affine, FlowConfig(train_logdet_offset=0.25), "train-offset",
           r"in training mode \(as the trainer runs it\) logdet .* != log\|det J\|")


def test_a_batch_norm_flow_whose_training_logdet_uses_the_wrong_statistics_is_caught() -> None:
    # right in eval mode (running statistics both ways), wrong in training
    _fails("flow", TinyBatchNorm, BatchNormConfig(running_logdet=True), "running-logdet",
           r"in training mode .* batch statistics held fixed")


def test_a_plugin_flow_that_works_in_float64_only_is_caught() -> None:
    """The kit's exactness checks run in float64; the trainer runs flows in float32, where these break."""
    import warnings

    from test_registry import plugin  # (the fake-plugin helper)

    import avade.builtin
    from avade.registry import Registry
    from avade.testing import check_distribution

    registry = Registry()
    registry.add_plugin(avade.builtin, dist="avade", version="0.1.0", entry_point="avade")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        registry.add_plugin(plugin("p", lambda reg: reg.register("flow", "np-mix", factory=Affine, config=FlowConfig)),
                            dist="avade-npmix", version="0.1")
    with pytest.raises(AssertionError, match=r"^flow 'np-mix' \(float32\): forward\(x\) on x of shape \(4, 3, 4, 4\) "
                                             r"in training mode raised RuntimeError: .*test_conformance_kit.py:\d+\)$"):
        check_distribution("avade-npmix", registry=registry, configs={("flow", "np-mix"): {"float64_mix": True}})
    _fails("flow", Affine, FlowConfig(upcast=True), "upcast",
           r"in float32 \(as the trainer runs flows\) forward\(x\) gives y of torch.float64 and logdet of "
           r"torch.float32; both must keep x's dtype torch.float32")
    check_module("flow", Affine, FlowConfig(), name="good-affine")


def test_a_flow_that_drops_to_float32_is_named_so() -> None:
    """Caught before only as "inverse(forward(x)) differs from x by 9e-08 (float64)", which blamed the inverse."""
    _fails("flow", Affine, FlowConfig(downcast=True), "downcast",
           r"^flow 'downcast': forward\(x\) on x of torch.float64 gives y of torch.float32 and logdet of "
           r"torch.float64; both must keep x's dtype")


def test_a_flow_invertible_only_near_zero_is_caught() -> None:
    """Exact on the kit's standard normal inputs (all within 3.5 here), not beyond: features reach further."""
    _fails("flow", Affine, FlowConfig(clamp=3.5), "clamped",
           r"^flow 'clamped': inverse\(forward\(x\)\) differs from x by .* \(float64\) for inputs of scale 4 .*is it "
           r"invertible only near 0\?$")


@pytest.mark.parametrize("where, expected", [
    ("forward", r"^flow 'in-place-forward': forward\(x\) in eval mode changed its input x in place"),
    ("inverse", r"^flow 'in-place-inverse': inverse\(y\) changed its input y in place"),
])
def test_a_flow_that_overwrites_its_input_is_named_so(where: str, expected: str) -> None:
    """Caught before only as "inverse(forward(x)) differs from x" or "sample 0 of a batch gets an output other
    than when alone", which pointed elsewhere."""
    _fails("flow", Affine, FlowConfig(in_place=where), f"in-place-{where}", expected)


def test_the_training_mode_check_holds_batch_norm_flows_exactly() -> None:
    """The built-in batch-norm flows (alone, and after every Real-NVP coupling) pass; their log-det is
    not that of the whole batch map, so a naive training-mode Jacobian would reject them."""
    check_component("flow", "batch-norm")
    check_component("flow", "realnvp", hidden=8, blocks=1, out_batch_norm=True)


def test_the_output_must_have_the_advertised_shape() -> None:
    _fails("flow", Affine, FlowConfig(flatten=True), "flat-output",
           r"forward maps \(4, 3, 4, 4\) -> \(4, 48\); expected \[batch, \*out_shape\] = \(4, 3, 4, 4\)")
    _fails("flow", Affine, FlowConfig(out_shape_lie=True), "lying-out-shape",
           r"forward maps \(4, 3, 4, 4\) -> \(4, 3, 4, 4\); expected \[batch, \*out_shape\] = \(4, 12, 2, 2\)")
    check_component("flow", "squeeze")  # a building block whose out_shape differs, honestly


def test_a_flow_that_cannot_run_on_the_meta_device_passes_with_a_warning_naming_it() -> None:
    """A flow that reads its tensors' values (here .item()) is right, and passes; but `avade recipe memory` cannot
    count the activations of a model using it on the meta device: a warning says so, names it and says how to fix."""
    with pytest.warns(UserWarning, match=r"^flow 'reads-values': does not run on the meta device: forward\(x\) on x of "
                                         r"shape \(4, 3, 4, 4\) in training mode raised RuntimeError: .*item.* \(at "
                                         r".*test_conformance_kit.py:\d+\); `avade recipe memory` cannot estimate the "
                                         r"activations of a model using it: .*no \.item\(\), bool\(tensor\).*"
                                         r"skip a data-dependent initialisation when x\.is_meta") as caught:
        check_module("flow", Affine, FlowConfig(reads_values=True), name="reads-values")
    assert len([w for w in caught if "meta device" in str(w.message)]) == 1
    assert "\n" not in str(caught[0].message)


def test_a_flow_that_runs_on_the_meta_device_gets_no_meta_warning(recwarn: pytest.WarningsRecorder) -> None:
    check_module("flow", Affine, FlowConfig(), name="good-affine")
    assert not [str(w.message) for w in recwarn if "meta device" in str(w.message)]


# -- posteriors --------------------------------------------------------------------------------------


@attrs.define
class PosteriorConfig:
    """One Gaussian latent at the top stage; ``defect`` breaks the sampling path (``h = None``) or the
    class-conditional build."""

    defect: str = "none"


class TinyPosterior(nn.Module):
    def __init__(self, cfg: PosteriorConfig, *, stage_shapes: list[tuple[int, int, int]],
                 num_classes: int | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_classes = num_classes
        top = len(stage_shapes) - 1
        c = stage_shapes[top][0]
        self.stage_ids = [top]
        self.prior = nn.Conv2d(c, 2, 1)
        self.posterior = nn.Conv2d(c, 2, 1)
        self.merge = nn.Conv2d(2, c, 1)

    def forward_stage(self, i: int, d: torch.Tensor, h: torch.Tensor | None, temperature: float = 1.0
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        defect = self.cfg.defect
        mu_p = self.prior(d)
        if h is None:
            t = float(temperature > 0) if defect == "temperature-on-off" else temperature
            z = mu_p + t * torch.randn_like(mu_p)
            if defect == "random-at-zero":  # noise the temperature does not scale
                z = z + 0.1 * torch.randn_like(mu_p)
            log_q = z.new_zeros(z.shape[0])
            log_p = -0.5 * (z - mu_p).square()
            log_p = log_p if defect == "unsummed-prior-log-p" else log_p.flatten(1).sum(1)
            d_new = d + self.merge(z)
            return (d_new[:, :, ::2] if defect == "prior-shape" else d_new), log_q, log_p
        mu_q = self.posterior(d if defect == "ignores-h" else h)
        z = mu_q + torch.randn_like(mu_q)
        log_q = (-0.5 * (z - mu_q).square()).flatten(1).sum(1)
        if defect == "detached-sample":  # log_q still trains q's layer, the reconstruction no longer does
            z = z.detach()
        log_p = (-0.5 * (z - mu_p).square()).flatten(1).sum(1)
        if defect == "conditional-log-p" and self.num_classes:
            log_p = log_p.unsqueeze(1)
        return d + self.merge(z), log_q, log_p


def test_the_kit_accepts_a_correct_posterior() -> None:
    check_module("posterior", TinyPosterior, PosteriorConfig(), name="good-posterior")


@pytest.mark.parametrize("defect, expected", [
    ("prior-shape", r"forward_stage\(1, d, None, 1.0\): d_new has shape \(3, 16, 4, 8\), expected d's "
                    r"\(3, 16, 8, 8\)"),
    ("unsummed-prior-log-p", r"forward_stage\(1, d, None, 1.0\): log_p must be finite with shape \[batch\] = "
                             r"\(3,\), got \(3, 2, 8, 8\)"),
    ("random-at-zero", r"stage 1: a prior sample at temperature 0 must be deterministic"),
    ("temperature-on-off", r"stage 1: prior samples ignore the temperature T"),
])
def test_the_sampling_path_of_a_posterior_is_checked(defect: str, expected: str) -> None:
    _fails("posterior", TinyPosterior, PosteriorConfig(defect), f"bad-{defect}", expected)


@pytest.mark.parametrize("defect", ["detached-sample", "ignores-h"])
def test_a_posterior_must_draw_z_from_q_by_reparameterisation(defect: str) -> None:
    _fails("posterior", TinyPosterior, PosteriorConfig(defect), f"bad-{defect}",
           r"stage 1: d_new has no gradient with respect to the encoder's features h; z ~ q\(z\|h\) must be drawn "
           r"by reparameterisation")


def test_a_posterior_broken_only_when_built_conditional_is_caught() -> None:
    _fails("posterior", TinyPosterior, PosteriorConfig("conditional-log-p"), "cond-log-p",
           r"posterior 'cond-log-p' \(conditional\): forward_stage\(1, d, h, 1.0\): log_p must be finite with "
           r"shape \[batch\]")


class LabelledPosterior(TinyPosterior):
    """Takes the labels (``forward_stage(i, d, h, T, y=None)``): a class embedding shifts the prior's mean.
    ``defect = "labels-ignored-in-q"`` is fine; ``"label-crash"`` fails only when labels arrive."""

    def __init__(self, cfg: PosteriorConfig, *, stage_shapes: list[tuple[int, int, int]],
                 num_classes: int | None = None) -> None:
        super().__init__(cfg, stage_shapes=stage_shapes, num_classes=num_classes)
        self.embed = nn.Embedding(num_classes, 2) if num_classes else None

    def forward_stage(self, i: int, d: torch.Tensor, h: torch.Tensor | None, temperature: float = 1.0,
                      y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if y is not None and self.cfg.defect == "label-crash":
            raise IndexError("index out of range in self")
        if y is not None and self.embed is not None:
            d = d + self.merge(self.embed(y)[:, :, None, None].expand(-1, -1, *d.shape[2:]))
        return super().forward_stage(i, d, h, temperature)


def test_a_conditional_posterior_is_run_with_labels() -> None:
    # Without labels its class embedding would get no gradient, which the kit reports.
    check_module("posterior", LabelledPosterior, PosteriorConfig(), name="labelled-posterior")
    _fails("posterior", LabelledPosterior, PosteriorConfig("label-crash"), "label-crash",
           r"posterior 'label-crash' \(conditional\): forward_stage\(1, d, h, 1.0, y=y\) raised IndexError")


@attrs.define
class DensityConfig:
    """One Gaussian latent at the top stage, q = N(mu_q, sigma_q) and p = N(mu_p, sigma_p) (``latent``
    channels), with normalised log densities; ``defect`` breaks their values only: ``log-q-plus-one``,
    ``log-q-no-2pi`` / ``log-p-no-2pi`` (the ``-0.5 log(2 pi)`` per dimension forgotten in one of them),
    ``mean-log-q`` / ``mean-log-p`` (a mean over the latent dimensions instead of a sum), ``both-no-2pi``
    (forgotten in both: it cancels in log_p - log_q, fine). ``log_sigma_q``: q's log-std at init (far below
    p's 0: q far from p)."""

    defect: str = "none"
    latent: int = 4
    log_sigma_q: float = 0.0


class DensityPosterior(nn.Module):
    def __init__(self, cfg: DensityConfig, *, stage_shapes: list[tuple[int, int, int]]) -> None:
        super().__init__()
        self.cfg = cfg
        top = len(stage_shapes) - 1
        c = stage_shapes[top][0]
        self.stage_ids = [top]
        self.prior = nn.Conv2d(c, 2 * cfg.latent, 1)
        self.posterior = nn.Conv2d(2 * c, 2 * cfg.latent, 1)
        self.merge = nn.Conv2d(cfg.latent, c, 1)
        with torch.no_grad():
            self.posterior.bias[cfg.latent:].add_(cfg.log_sigma_q)

    def _log_density(self, z: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor, which: str) -> torch.Tensor:
        defect = self.cfg.defect
        lp = -0.5 * ((z - mu) * torch.exp(-log_sigma)).square() - log_sigma
        if defect not in (f"{which}-no-2pi", "both-no-2pi"):
            lp = lp - 0.5 * math.log(2 * math.pi)
        return lp.flatten(1).mean(1) if defect == f"mean-{which}" else lp.flatten(1).sum(1)

    def forward_stage(self, i: int, d: torch.Tensor, h: torch.Tensor | None, temperature: float = 1.0
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu_p, log_sigma_p = self.prior(d).chunk(2, dim=1)
        if h is None:
            z = mu_p + temperature * log_sigma_p.exp() * torch.randn_like(mu_p)
            log_q = z.new_zeros(z.shape[0])
        else:
            mu_q, log_sigma_q = self.posterior(torch.cat([h, d], dim=1)).chunk(2, dim=1)
            z = mu_q + log_sigma_q.exp() * torch.randn_like(mu_q)
            log_q = self._log_density(z, mu_q, log_sigma_q, "log-q") + (self.cfg.defect == "log-q-plus-one")
        return d + self.merge(z), log_q, self._log_density(z, mu_p, log_sigma_p, "log-p")


def test_the_kit_accepts_right_densities_and_a_constant_dropped_from_both() -> None:
    check_module("posterior", DensityPosterior, DensityConfig(), name="good-densities")
    check_module("posterior", DensityPosterior, DensityConfig("both-no-2pi"), name="shared-constant")


@pytest.mark.parametrize("defect, latent", [("log-q-plus-one", 4), ("log-q-no-2pi", 4), ("log-p-no-2pi", 4),
                                            ("mean-log-q", 4), ("mean-log-p", 2), ("mean-log-p", 8)])
def test_log_densities_off_by_a_constant_or_averaged_are_caught(defect: str, latent: int) -> None:
    """Shapes, gradients and sampling are all right: only E_q[p/q] = 1 (importance sampling) sees these. (A
    mean in log_p makes p/q heavy-tailed: judged by the effective sample size with 2 latent dimensions, by the
    e^9 bound with 8; with 3 to 6 the check is inconclusive.)"""
    message = _fails("posterior", DensityPosterior, DensityConfig(defect, latent), defect,
                     r"^posterior '[a-z0-9-]+': stage 1: E_q\[p/q\] = [0-9.e+-]+ \(should be 1; .*\): log_q or log_p "
                     r"is off by a constant or not a sum over the latent dimensions$")
    assert "\n" not in message


def test_the_density_check_says_so_when_it_cannot_judge() -> None:
    """A right posterior whose q starts far narrower than p (the weights p/q then have no variance to speak
    of): no verdict either way, a warning."""
    with pytest.warns(UserWarning, match=r"stage 1: the check E_q\[p/q\] = 1 of log_q and log_p was inconclusive"):
        check_module("posterior", DensityPosterior, DensityConfig(latent=8, log_sigma_q=-4.0), name="narrow-q")


class CodedPosterior(TinyPosterior):
    """With latent codes (``encode_stage``/``decode_stage``, unit prior scale: code = z - mu_p); ``defect``
    breaks one property the kit checks: ``code-is-z`` (the raw z, not its prior coordinates), ``random-code``
    (sampling without ``sample``), ``lossy-decode`` (decode_stage drops part of the code), ``code-shape``."""

    def encode_stage(self, i: int, d: torch.Tensor, h: torch.Tensor, y: torch.Tensor | None = None,
                     sample: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        defect = self.cfg.defect
        mu_p, mu_q = self.prior(d), self.posterior(h)
        z = mu_q + torch.randn_like(mu_q) if sample or defect == "random-code" else mu_q
        code = z if defect == "code-is-z" else z - mu_p
        return d + self.merge(z), (code[:0] if defect == "code-shape" else code)

    def decode_stage(self, i: int, d: torch.Tensor, code: torch.Tensor, y: torch.Tensor | None = None
                     ) -> torch.Tensor:
        z = self.prior(d) + (0.5 * code if self.cfg.defect == "lossy-decode" else code)
        return d + self.merge(z)


def test_the_kit_accepts_a_correct_coded_posterior() -> None:
    check_module("posterior", CodedPosterior, PosteriorConfig(), name="coded-posterior")


@pytest.mark.parametrize("defect, expected", [
    ("code-is-z", r"decode_stage\(1, d, code\) must give back encode_stage's d_new"),
    ("random-code", r"encode_stage\(1, d, h, y=y\): two encodings differ"),
    ("lossy-decode", r"decode_stage\(1, d, code\) must give back encode_stage's d_new"),
    ("code-shape", r"encode_stage\(1, d, h, y=y\): the code must be finite with one entry per image"),
])
def test_the_codes_of_a_posterior_are_checked(defect: str, expected: str) -> None:
    _fails("posterior", CodedPosterior, PosteriorConfig(defect), f"bad-{defect}", expected)


def test_a_code_of_zero_must_be_the_prior_mode() -> None:
    class Shifted(CodedPosterior):  # decodes consistently with its encoding, but not in the prior's coordinates
        def encode_stage(self, i: int, d: torch.Tensor, h: torch.Tensor, y: torch.Tensor | None = None,
                         sample: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
            d_new, code = super().encode_stage(i, d, h, y, sample)
            return d_new, code - 1.0

        def decode_stage(self, i: int, d: torch.Tensor, code: torch.Tensor, y: torch.Tensor | None = None
                         ) -> torch.Tensor:
            return super().decode_stage(i, d, code + 1.0, y)

    _fails("posterior", Shifted, PosteriorConfig(), "shifted", r"decode_stage\(1, d, zeros\) must be the prior's mode")


# -- norms -------------------------------------------------------------------------------------------


@attrs.define
class NormConfig:
    """A learned per-channel gain; ``unsaved``: also a random scale kept as a plain attribute, which no
    state dict (hence no checkpoint) holds."""

    unsaved: bool = False


class TinyNorm(nn.Module):
    def __init__(self, cfg: NormConfig, *, layer: nn.Conv2d, num_classes: int | None = None) -> None:
        super().__init__()
        self.layer = layer
        self.gain = nn.Parameter(torch.ones(1, layer.out_channels, 1, 1))
        self.scale = torch.rand(1, layer.out_channels, 1, 1) + 0.5 if cfg.unsaved else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        out = self.layer(x) * self.gain
        return out * self.scale if self.scale is not None else out


def test_a_norm_must_survive_the_safetensors_round_trip() -> None:
    check_module("norm", TinyNorm, NormConfig(), name="good-norm")
    _fails("norm", TinyNorm, NormConfig(unsaved=True), "unsaved-norm",
           r"outputs differ after a safetensors save/load round trip")


# -- encoders and decoders, conditional --------------------------------------------------------------


@attrs.define
class EncoderConfig:
    """Two-stage conv encoder; ``label_channel``: built conditional, it appends a label channel to the top
    feature, which ``stage_shapes`` does not count; ``refuse``: no conditional form (a ConfigError)."""

    label_channel: bool = False
    refuse: bool = False
    eval_dropout: bool = False  # F.dropout without training=self.training: random in eval mode too


class TinyEncoder(nn.Module):
    def __init__(self, cfg: EncoderConfig, *, in_shape: tuple[int, int, int], num_classes: int | None = None) -> None:
        super().__init__()
        if cfg.refuse and num_classes:
            raise ConfigError("this encoder has no class-conditional form; use model.conditional = false")
        c, h, w = in_shape
        self.cfg = cfg
        self.down1 = nn.Conv2d(c, 4, 3, stride=2, padding=1)
        self.down2 = nn.Conv2d(4, 8, 3, stride=2, padding=1)
        self.embed = nn.Embedding(num_classes, 1) if num_classes else None
        self.stage_shapes = [(4, h // 2, w // 2), (8, h // 4, w // 4)]

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> list[torch.Tensor]:
        h1 = torch.relu(self.down1(x))
        if self.cfg.eval_dropout:
            h1 = F.dropout(h1, 0.2)
        h2 = self.down2(h1)
        if self.embed is not None and y is not None:
            e = self.embed(y).view(-1, 1, 1, 1).expand(-1, 1, *h2.shape[2:])
            h2 = torch.cat([h2, e], 1) if self.cfg.label_channel else h2 + e
        return [h1, h2]


def test_a_component_random_in_eval_mode_is_named_so() -> None:
    """Not "outputs differ after a safetensors round trip (state not in state_dict?)", which sent the author
    looking for unsaved state."""
    _fails("encoder", TinyEncoder, EncoderConfig(eval_dropout=True), "eval-dropout",
           r"^encoder 'eval-dropout': is not deterministic in eval mode: two calls on the same input give different "
           r"outputs \(dropout with training=True")


class UnconditionalEncoder(nn.Module):
    """A factory that takes no ``num_classes`` at all: nothing conditional to check."""

    def __init__(self, cfg: EncoderConfig, *, in_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.inner = TinyEncoder(cfg, in_shape=in_shape)
        self.stage_shapes = self.inner.stage_shapes

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> list[torch.Tensor]:
        return self.inner(x)


def test_encoders_are_checked_built_conditional_with_labels() -> None:
    check_module("encoder", TinyEncoder, EncoderConfig(), name="good-encoder")
    check_module("encoder", TinyEncoder, EncoderConfig(refuse=True), name="refusing-encoder")
    check_module("encoder", UnconditionalEncoder, EncoderConfig(label_channel=True), name="plain-encoder")
    _fails("encoder", TinyEncoder, EncoderConfig(label_channel=True), "label-channel",
           r"encoder 'label-channel' \(conditional\): stage 1 feature has shape \(9, 4, 4\), stage_shapes says "
           r"\(8, 4, 4\)")


class StagelessEncoder(nn.Module):
    """Advertises no stages and returns no feature maps: the decoder would have no top stage to start from."""

    def __init__(self, cfg: EncoderConfig, *, in_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_shape[0], 4, 1)
        self.stage_shapes: list[tuple[int, int, int]] = []

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> list[torch.Tensor]:
        return []


def test_an_encoder_without_stages_fails_its_check() -> None:
    # (the kit summed the empty list of features into the int 0 and raised AttributeError on it)
    _fails("encoder", StagelessEncoder, EncoderConfig(), "stageless", r"stage_shapes is empty")


@attrs.define
class DecoderConfig:
    """Upsample + conv per stage, a conv at stage 0 and a conv head; the defects:

    - ``old-contract``: written to "forward_stage(i) maps stage i to i-1 (i > 0)": stage 0 uses block
      ``i - 1``, the top block, whose channels do not fit;
    - ``stage0-grows``: stage 0 doubles the channels, and the head takes them;
    - ``detached-labels``: built conditional, the class embedding is detached and never trains."""

    defect: str = "none"


class TinyDecoder(nn.Module):
    def __init__(self, cfg: DecoderConfig, *, stage_shapes: list[tuple[int, int, int]],
                 out_shape: tuple[int, int, int], num_classes: int | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        c0 = stage_shapes[0][0]
        self.top = nn.Parameter(torch.randn(1, *stage_shapes[-1]))
        self.ups = nn.ModuleList(nn.Conv2d(stage_shapes[i][0], stage_shapes[i - 1][0], 3, padding=1)
                                 for i in range(1, len(stage_shapes)))
        self.stage0 = nn.Conv2d(c0, 2 * c0 if cfg.defect == "stage0-grows" else c0, 3, padding=1)
        self.out = nn.Conv2d(2 * c0 if cfg.defect == "stage0-grows" else c0, out_shape[0], 3, padding=1)
        self.embed = nn.Embedding(num_classes, out_shape[0]) if num_classes else None

    def initial_state(self, batch: int) -> torch.Tensor:
        return self.top.expand(batch, -1, -1, -1)

    def forward_stage(self, i: int, d: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if i > 0 or self.cfg.defect == "old-contract":
            return self.ups[i - 1](F.interpolate(d, scale_factor=2))
        return self.stage0(torch.relu(d))

    def head(self, d: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        mean = self.out(torch.relu(d))
        if self.embed is not None and y is not None:
            e = self.embed(y)
            e = e.detach() if self.cfg.defect == "detached-labels" else e
            mean = mean + e.view(*e.shape, 1, 1)
        return mean


def test_the_kit_accepts_a_correct_decoder() -> None:
    check_module("decoder", TinyDecoder, DecoderConfig(), name="good-decoder")


def test_a_decoder_broken_only_with_labels_is_caught() -> None:
    _fails("decoder", TinyDecoder, DecoderConfig("detached-labels"), "detached-labels",
           r"decoder 'detached-labels' \(conditional\): no gradient reaches parameters \['embed.weight'\]")


def test_stage_0_of_a_decoder_keeps_its_shape() -> None:
    _fails("decoder", TinyDecoder, DecoderConfig("stage0-grows"), "stage0-grows",
           r"forward_stage\(0, d, None\) returned \(2, 16, 16, 16\); stage 0 keeps its shape \(2, 8, 16, 16\)")


def test_an_exception_inside_a_component_is_one_failed_check_naming_it() -> None:
    """A decoder written to the old "i > 0" contract raised torch's RuntimeError, naming nothing."""
    message = _fails("decoder", TinyDecoder, DecoderConfig("old-contract"), "old-contract",
                     r"^decoder 'old-contract': forward_stage\(0, d, None\) on a state of shape \(2, 8, 16, 16\) "
                     r"raised RuntimeError: .* \(at .*test_conformance_kit.py:\d+\)$")
    assert "\n" not in message


class ExplodingFlow(Affine):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x @ torch.ones(3, 3), x.new_zeros(x.shape[0])  # mismatched matmul


def test_a_flow_raising_inside_forward_is_named() -> None:
    _fails("flow", ExplodingFlow, FlowConfig(), "exploding",
           r"^flow 'exploding': forward\(x\) on x of shape \(4, 3, 4, 4\) in training mode raised RuntimeError: "
           r".*test_conformance_kit.py:\d+\)$")



def test_a_distribution_that_is_not_installed_is_said_to_be_so() -> None:
    """check_distribution of a package not installed (no `avade` entry point) says that, and how to check it
    anyway, instead of "registers no checkable component" (which sent authors to their hook)."""
    from avade.testing import check_distribution

    with pytest.raises(AssertionError, match=r"no installed distribution 'avade-not-there' has an `avade` entry "
                                             r"point \(plugins loaded: avade.*\); install it .*check_module"):
        check_distribution("avade-not-there")
    with pytest.raises(AssertionError, match=r"^distribution 'avade' registers no checkable component$"):
        check_distribution("avade", registry=_metricless_builtins())


def _metricless_builtins() -> Any:
    """A registry where the loaded distribution 'avade' registers nothing the kit checks."""
    from avade.registry import PluginRecord, Registry

    registry = Registry()
    registry.plugins.append(PluginRecord("avade", "0.1.0", "avade", 0))
    return registry


@attrs.define
class ClampConfig:
    clamp: float | None = 1.0


class NoClampFlow(Affine):
    """A correct flow built with ``clamp = None`` only; its default (1.0) is a defect to catch."""

    def __init__(self, cfg: ClampConfig, *, in_shape: tuple[int, int, int]) -> None:
        super().__init__(FlowConfig(train_logdet_offset=0.0 if cfg.clamp is None else 1.0), in_shape=in_shape)


def test_check_module_checks_a_none_value_as_given_not_the_default() -> None:
    check_module("flow", NoClampFlow, ClampConfig(clamp=None))  # was checked with clamp = 1.0 (None dropped)
    with pytest.raises(AssertionError, match="in training mode"):
        check_module("flow", NoClampFlow, ClampConfig())


class RefusingCritic(nn.Module):
    def __init__(self, cfg: NormConfig, *, in_shape: tuple[int, int, int], num_classes: int | None = None) -> None:
        super().__init__()
        raise ValueError("needs a GPU")


def test_a_component_that_does_not_build_is_a_failed_check_not_a_registry_error() -> None:
    # the kit's verdicts are AssertionErrors (a factory raising, a bad config value alike)
    with pytest.raises(AssertionError, match=r"^discriminator 'candidate' failed to build: ValueError: needs a GPU$"):
        check_module("discriminator", RefusingCritic, NormConfig())
    with pytest.raises(AssertionError, match=r"^flow 'realnvp': does not build: .*hidden.*expected a number >= 1"):
        check_component("flow", "realnvp", hidden=0)


def test_check_distribution_fails_on_a_component_that_cannot_be_used() -> None:
    """A plugin's component named like a built-in (skipped at load) or like another plugin's (ambiguous) is
    unusable: check_distribution says so, instead of passing without it or "registers no checkable component"."""
    import warnings

    from test_registry import plugin  # (the fake-plugin helper)

    import avade.builtin
    from avade.registry import Registry
    from avade.testing import check_distribution

    registry = Registry()
    registry.add_plugin(avade.builtin, dist="avade", version="0.1.0", entry_point="avade")

    def register_glow_and_own(reg: Any) -> None:
        reg.register("flow", "glow", factory=Affine, config=FlowConfig)
        reg.register("flow", "my-own", factory=Affine, config=FlowConfig)

    def register_shared(reg: Any) -> None:
        reg.register("flow", "shared", factory=Affine, config=FlowConfig)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        registry.add_plugin(plugin("p", register_glow_and_own), dist="avade-myglow", version="0.1")
        registry.add_plugin(plugin("a", register_shared), dist="avade-a", version="0.1")
        registry.add_plugin(plugin("b", register_shared), dist="avade-b", version="0.1")
    with pytest.raises(AssertionError, match=r"^flow 'glow' is not registered: the name belongs to avade's built-in "
                                             r"flow; register it under another name$"):
        check_distribution("avade-myglow", registry=registry)
    with pytest.raises(AssertionError, match=r"flow 'shared' is provided by both avade-a 0.1 and avade-b 0.1"):
        check_distribution("avade-b", registry=registry)


def test_a_factory_refused_by_the_registry_is_named_once() -> None:
    """The registry's refusal already names the component: the kit does not name it a second time."""

    def no_in_shape(cfg: FlowConfig, shape: Any = None) -> nn.Module:
        raise AssertionError("never called")

    with pytest.raises(AssertionError) as info:
        check_module("flow", no_in_shape, FlowConfig(), name="bad-sig")
    assert str(info.value).startswith("flow 'bad-sig': its factory takes no keyword argument 'in_shape'")
    assert str(info.value).count("flow 'bad-sig'") == 1, info.value
