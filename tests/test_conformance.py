"""Every registered component (plugins included) passes the conformance kit, and the kit catches
deliberately broken components."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import attrs
import pytest
import torch
from fake_datasets import FAKE_DATASETS
from torch import nn

from avade.data import OFFLINE_DATASETS
from avade.errors import DataError
from avade.registry import get_registry
from avade.testing import check_component, check_module, component_ids

MODULE_KINDS = ("flow", "posterior", "encoder", "decoder", "discriminator", "norm")


@pytest.mark.parametrize("kind, name", component_ids(), ids=[f"{k}/{n}" for k, n in component_ids()])
def test_registered_component_conforms(kind: str, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       recwarn: pytest.WarningsRecorder) -> None:
    if kind == "dataset":
        # A dataset's default root is ~/data: kept off the user's home (where a real copy would be read, or none
        # found and only the one-line refusal checked), a built-in on-disk dataset reads a tiny copy of its own.
        monkeypatch.setenv("HOME", str(tmp_path))
        info = get_registry().get(kind, name)
        if info.dist == "avade" and name not in OFFLINE_DATASETS:
            assert name in FAKE_DATASETS, f"add a tiny copy of dataset '{name}' to tests/fake_datasets.py"
            FAKE_DATASETS[name](tmp_path / "data")
            for split in ("train", "test"):  # else check_component passes on the refusal alone
                get_registry().create(kind, name, split=split)
    check_component(kind, name)
    if kind in MODULE_KINDS and get_registry().get(kind, name).dist == "avade":
        # every built-in module runs on the meta device (`avade recipe memory` counts activations there); a
        # plugin's may not, and passes with the kit's warning
        assert not [str(w.message) for w in recwarn if "meta device" in str(w.message)]


ON_MODULES = [(k, n) for k, n in component_ids() if k in MODULE_KINDS]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("kind, name", ON_MODULES, ids=[f"{k}/{n}" for k, n in ON_MODULES])
def test_registered_component_conforms_on_cuda(kind: str, name: str) -> None:
    """The module built, and its inputs made, on CUDA (as the kit's users are told to run it on a GPU)."""
    with torch.device("cuda"):
        check_component(kind, name)


def test_component_ids_cover_every_kind() -> None:
    kinds = {k for k, _ in component_ids()}
    assert kinds == {"flow", "posterior", "encoder", "decoder", "discriminator", "norm", "dataset", "metric"}


# -- deliberately broken components ------------------------------------------------------------------


@attrs.define
class AffineConfig:
    """Element-wise affine flow y = x * exp(s) + b, with switchable defects."""

    logdet_offset: float = 0.0
    inverse_offset: float = 0.0
    detach_logdet: bool = False  # right value, no gradient: the likelihood's Jacobian term stops training
    detach_all: bool = False  # the parameters get no gradient at all
    later_samples_offset: float = 0.0  # the log-det of every sample but the first is off by this
    nan_inverse: bool = False
    bare_output: bool = False  # forward returns y alone


class ElementwiseAffine(nn.Module):
    """A correct flow when both offsets are 0."""

    def __init__(self, cfg: AffineConfig, *, in_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.cfg = cfg
        self.log_scale = nn.Parameter(torch.zeros(in_shape))
        self.shift = nn.Parameter(torch.zeros(in_shape))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_scale, shift = (self.log_scale.detach(), self.shift.detach()) if self.cfg.detach_all else (
            self.log_scale, self.shift)
        y = x * log_scale.exp() + shift
        logdet = log_scale.sum().expand(x.shape[0]) + self.cfg.logdet_offset
        logdet = logdet + self.cfg.later_samples_offset * (torch.arange(x.shape[0]) > 0)
        if self.cfg.bare_output:
            return y  # type: ignore[return-value]
        return y, logdet.detach() if self.cfg.detach_logdet else logdet

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        x = (y - self.shift) * (-self.log_scale).exp() + self.cfg.inverse_offset
        return x * math.nan if self.cfg.nan_inverse else x


class ForwardOnly(nn.Module):
    """A flow without an inverse."""

    def __init__(self, cfg: AffineConfig, *, in_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.inner = ElementwiseAffine(cfg, in_shape=in_shape)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inner(x)


@attrs.define
class ScoreConfig:
    """Plain conv discriminator; ``keep_dim`` returns [B, 1] instead of [B]."""

    keep_dim: bool = False
    batch_norm: bool = False  # mixes the batch: the gradient penalty's per-sample assumption breaks
    ignore_labels: bool = False
    dropout: float = 0.0  # random, yet per sample: fine


class TinyDiscriminator(nn.Module):
    def __init__(self, cfg: ScoreConfig, *, in_shape: tuple[int, int, int], num_classes: int | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.conv = nn.Conv2d(in_shape[0], 4, 3, stride=2, padding=1)
        self.norm = nn.BatchNorm2d(4) if cfg.batch_norm else nn.Identity()
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(4, 1)
        self.embed = nn.Embedding(num_classes, 4) if num_classes else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.drop(torch.relu(self.norm(self.conv(x)))).mean(dim=(2, 3))
        score = self.out(h)
        if self.embed is not None and y is not None and not self.cfg.ignore_labels:
            score = score + (self.embed(y) * h).sum(1, keepdim=True)
        return score if self.cfg.keep_dim else score.squeeze(1)


@attrs.define
class StagesConfig:
    """Two-stage conv encoder; ``lie`` makes ``stage_shapes`` disagree with what forward returns."""

    lie: bool = False


class TinyEncoder(nn.Module):
    def __init__(self, cfg: StagesConfig, *, in_shape: tuple[int, int, int], num_classes: int | None = None) -> None:
        super().__init__()
        c, h, w = in_shape
        self.down1 = nn.Conv2d(c, 4, 3, stride=2, padding=1)
        self.down2 = nn.Conv2d(4, 8, 3, stride=2, padding=1)
        self.stage_shapes = [(4, h // 2, w // 2), (8, h // 4, w // 4)]
        if cfg.lie:
            self.stage_shapes[1] = (8, h // 2, w // 2)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> list[torch.Tensor]:
        h1 = torch.relu(self.down1(x))
        return [h1, self.down2(h1)]


@attrs.define
class CodeConfig:
    """One Gaussian latent at the top stage with a learned prior N(mu_p, sigma_p) and latent codes;
    ``unscaled`` leaves sigma_p out of both ``encode_stage`` and ``decode_stage`` (code = z - mu_p): consistent
    with itself and with the prior's mode, but its codes are not standard normal under the prior.
    ``log_sigma``: the prior's log-std at init; ``flip_noise`` draws the prior sample from -eps (standard
    normal too, but not the noise the kit replays: the kit then compares spreads)."""

    unscaled: bool = False
    log_sigma: float = 0.7
    flip_noise: bool = False


class ScaledPosterior(nn.Module):
    def __init__(self, cfg: CodeConfig, *, stage_shapes: list[tuple[int, int, int]]) -> None:
        super().__init__()
        self.cfg = cfg
        top = len(stage_shapes) - 1
        c = stage_shapes[top][0]
        self.stage_ids = [top]
        self.prior = nn.Conv2d(c, 4, 1)
        self.posterior = nn.Conv2d(c, 2, 1)
        self.merge = nn.Conv2d(2, c, 1)
        with torch.no_grad():
            self.prior.weight[2:].zero_()  # log sigma_p about cfg.log_sigma (the kit perturbs the weights)
            self.prior.bias[2:].fill_(cfg.log_sigma)

    def _prior(self, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu_p, log_sigma_p = self.prior(d).chunk(2, dim=1)
        return mu_p, log_sigma_p.exp()

    def forward_stage(self, i: int, d: torch.Tensor, h: torch.Tensor | None, temperature: float = 1.0
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu_p, sigma_p = self._prior(d)
        if h is None:
            eps = torch.randn_like(mu_p)
            z = mu_p + temperature * sigma_p * (-eps if self.cfg.flip_noise else eps)
            log_q = z.new_zeros(z.shape[0])
        else:
            mu_q = self.posterior(h)
            z = mu_q + torch.randn_like(mu_q)
            log_q = (-0.5 * (z - mu_q).square()).flatten(1).sum(1)
        log_p = (-0.5 * ((z - mu_p) / sigma_p).square() - sigma_p.log()).flatten(1).sum(1)
        return d + self.merge(z), log_q, log_p

    def encode_stage(self, i: int, d: torch.Tensor, h: torch.Tensor, y: torch.Tensor | None = None,
                     sample: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        mu_p, sigma_p = self._prior(d)
        mu_q = self.posterior(h)
        z = mu_q + torch.randn_like(mu_q) if sample else mu_q
        return d + self.merge(z), (z - mu_p) if self.cfg.unscaled else (z - mu_p) / sigma_p

    def decode_stage(self, i: int, d: torch.Tensor, code: torch.Tensor, y: torch.Tensor | None = None
                     ) -> torch.Tensor:
        mu_p, sigma_p = self._prior(d)
        return d + self.merge(mu_p + (code if self.cfg.unscaled else sigma_p * code))


def test_kit_accepts_the_correct_versions() -> None:
    check_module("posterior", ScaledPosterior, CodeConfig(), name="good-codes")
    check_module("posterior", ScaledPosterior, CodeConfig(flip_noise=True), name="other-noise-codes")
    check_module("flow", ElementwiseAffine, AffineConfig(), name="good-affine")
    check_module("discriminator", TinyDiscriminator, ScoreConfig(), name="good-disc")
    check_module("discriminator", TinyDiscriminator, ScoreConfig(dropout=0.5), name="dropout-disc")
    check_module("encoder", TinyEncoder, StagesConfig(), name="good-encoder")


@pytest.mark.parametrize(
    "kind, factory, config, name, expected",
    [
        ("flow", ElementwiseAffine, AffineConfig(logdet_offset=math.pi), "off-logdet", r"logdet .* != log\|det J\|"),
        ("flow", ElementwiseAffine, AffineConfig(inverse_offset=1e-3), "bad-inverse", r"inverse\(forward\(x\)\)"),
        ("flow", ElementwiseAffine, AffineConfig(detach_logdet=True), "detached-logdet",
         r"gradient of logdet w.r.t. parameter 'log_scale' differs"),
        ("flow", ElementwiseAffine, AffineConfig(detach_all=True), "frozen", r"no gradient reaches parameters"),
        ("flow", ElementwiseAffine, AffineConfig(later_samples_offset=0.5), "batch-mixing",
         r"sample 1 of a batch gets a log-det other than when alone"),
        ("flow", ElementwiseAffine, AffineConfig(nan_inverse=True), "nan-inverse",
         r"inverse\(forward\(x\)\) differs from x by nan"),
        ("flow", ForwardOnly, AffineConfig(), "forward-only",
         r"does not build: .*built ForwardOnly, which has no inverse \(flow components are torch modules with "),
        ("flow", ElementwiseAffine, AffineConfig(bare_output=True), "bare-output",
         r"forward\(x\) must return a tuple \(y, logdet\), got Tensor"),
        ("discriminator", TinyDiscriminator, ScoreConfig(keep_dim=True), "column-scores", r"\(4, 1\).*\[batch\]"),
        ("discriminator", TinyDiscriminator, ScoreConfig(batch_norm=True), "bn-critic",
         r"in training mode the score of sample 0 depends on the other samples of the batch"),
        ("discriminator", TinyDiscriminator, ScoreConfig(ignore_labels=True), "label-blind",
         r"gives the same scores whatever the labels y: it ignores them"),
        ("encoder", TinyEncoder, StagesConfig(lie=True), "lying-stages", r"stage 1 .*stage_shapes says"),
        ("posterior", ScaledPosterior, CodeConfig(unscaled=True, log_sigma=0.2), "unscaled-codes",
         r"decode_stage\(1, d, eps, y=y\), eps the standard normal noise of the prior sample forward_stage\(1, d, "
         r"None, 1\), must be that sample, but differs by .* a code is scaled by the prior's std"),
        ("posterior", ScaledPosterior, CodeConfig(unscaled=True, log_sigma=1.0), "unscaled-wide-prior",
         r"decodings of standard normal codes spread 0\.\d+ times as far as prior samples"),
        ("posterior", ScaledPosterior, CodeConfig(unscaled=True, flip_noise=True), "unscaled-other-noise",
         r"decodings of standard normal codes spread 0\.\d+ times as far as prior samples"),
    ],
)
def test_kit_catches_broken_components(kind: str, factory: Any, config: Any, name: str, expected: str) -> None:
    with pytest.raises(AssertionError, match=expected) as info:
        check_module(kind, factory, config, name=name)
    assert f"{kind} '{name}'" in str(info.value)


def test_check_component_refuses_unknown_kind() -> None:
    with pytest.raises(AssertionError, match="no conformance checks for kind"):
        check_component("sampler", "x")


# -- datasets ----------------------------------------------------------------------------------------


@attrs.define
class DataConfig:
    """A tiny in-memory or item-by-item dataset with switchable defects."""

    defect: str = "none"
    in_memory: bool = True


class TinyData:
    def __init__(self, cfg: DataConfig, *, split: str) -> None:
        self.cfg, self.split = cfg, split
        self.shape = (8, 8, 3) if cfg.defect == "hwc" else (3, 8, 8)
        self.num_classes = 2
        n = 0 if (cfg.defect == "empty-train" and split == "train") else 6
        self.images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8)
        self.labels = torch.arange(n) % 2 + (5 if cfg.defect == "labels" else 0)
        if cfg.defect == "missing":
            raise FileNotFoundError("/nowhere/data.bin")
        if cfg.defect == "train-absent" and split == "train":
            raise DataError("dataset 'tiny': /nowhere/train.bin not found; download it")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = self.images[i]
        if self.cfg.defect == "float" or (self.cfg.defect == "last-item" and i == len(self) - 1):
            x = x.float() / 255
        return x, int(self.labels[i])

    def as_tensors(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        if not self.cfg.in_memory:
            return None
        images = self.images.float() if self.cfg.defect == "float" else self.images
        return images, self.labels


@pytest.mark.parametrize("in_memory", [True, False])
@pytest.mark.parametrize(
    "defect, expected",
    [
        ("float", r"(images are torch.float32|item 0 is torch.float32)"),
        ("hwc", r"\(8, 8, 3\) has 8 channels"),
        ("labels", r"labels must be in 0..1 .* got values in \[5, [56]\]"),
        ("empty-train", r"train split: the train split is empty"),
        ("missing", r"raises FileNotFoundError: /nowhere/data.bin; report missing or unreadable files as "
                    r"avade.errors.DataError"),
    ],
)
def test_kit_catches_broken_datasets(defect: str, expected: str, in_memory: bool) -> None:
    with pytest.raises(AssertionError, match=expected) as info:
        check_module("dataset", TinyData, DataConfig(defect, in_memory), name=f"bad-{defect}")
    assert f"dataset 'bad-{defect}'" in str(info.value)


def test_kit_looks_beyond_the_first_item() -> None:
    check_module("dataset", TinyData, DataConfig(), name="good-data")
    with pytest.raises(AssertionError, match=r"item 5 is torch.float32 \(3, 8, 8\), expected a uint8 tensor"):
        check_module("dataset", TinyData, DataConfig("last-item", in_memory=False), name="late-float")


def test_a_dataset_whose_files_are_absent_passes_with_a_warning_that_says_so(tmp_path: Path) -> None:
    """Its one-line refusal is all that could be checked: a plugin author must not take it for a full pass."""
    with pytest.warns(UserWarning, match=r"^dataset 'cifar10': only its refusal was checked with \{'root': .*: its "
                                         r"files are absent \(dataset 'cifar10' not found .*\); give it a tiny copy"):
        check_component("dataset", "cifar10", root=str(tmp_path))


def test_the_absent_files_warning_names_the_dataset_and_the_split_checked() -> None:
    # (its hint said check_component('dataset', name, ...) literally; and a dataset whose test split was served and
    # checked, its train split's files absent, was said to have had only its refusal checked)
    with pytest.warns(UserWarning) as caught:
        check_module("dataset", TinyData, DataConfig("train-absent"), name="half-there")
    said = str(caught[0].message)
    assert said.startswith("dataset 'half-there': only its test split was checked with {'defect': 'train-absent'"), said
    assert "its train split's files are absent (dataset 'tiny': /nowhere/train.bin not found; download it)" in said
    assert "check_component('dataset', 'half-there', root=...)" in said
    assert "configs={('dataset', 'half-there'): {'root': ...}}" in said and "\n" not in said


# -- metrics -----------------------------------------------------------------------------------------


@attrs.define
class MetricConfig:
    returns: str = "ok"


class TinyMetric:
    """Mean intensity of the samples, with switchable defects."""

    name = "tiny"

    def __init__(self, cfg: MetricConfig) -> None:
        self.cfg = cfg

    def compute(self, ctx: Any) -> Any:
        mean = float(torch.cat([x.float() for x in ctx.sample_batches(32, 16)]).mean())
        return {
            "ok": {"good_metric": mean, "good_metric_tensor": torch.tensor(mean)},
            "raises": {"x": 1 / (mean - mean)} if self.cfg.returns == "raises" else None,
            "none": None,
            "string": {"bad_string": "high"},
            "nan": {"bad_nan": math.nan},
            "steps": {"steps": 1.0},
        }[self.cfg.returns]


@pytest.mark.parametrize("returns, expected", [
    ("raises", r"compute\(ctx\) raised ZeroDivisionError"),
    ("none", r"returned NoneType; compute\(ctx\) must return a dict of result name -> number"),
    ("string", r"returned 'bad_string': str; compute\(ctx\) must return a dict of result name \(str\) -> number"),
    ("nan", r"result 'bad_nan' is nan"),
    ("steps", r"returned 'steps': its result names must be 'bad_steps' or start with 'bad_steps_'"),
])
def test_kit_computes_metrics(returns: str, expected: str) -> None:
    check_module("metric", TinyMetric, MetricConfig("ok"), name="good-metric")
    with pytest.raises(AssertionError, match=expected) as info:
        check_module("metric", TinyMetric, MetricConfig(returns), name=f"bad-{returns}")
    assert f"metric 'bad-{returns}'" in str(info.value)


def test_the_kit_context_keys_bpd_as_a_run_does() -> None:
    from avade.testing import SyntheticEvalContext

    ctx = SyntheticEvalContext()
    assert set(ctx.bpd()) == {"bpd"} and set(ctx.bpd(importance_samples=4)) == {"bpd_iw4"}
    assert ctx.bpd(importance_samples=4)["bpd_iw4"] < ctx.bpd()["bpd"]


class _NoLabelsNorm(nn.Module):
    def __init__(self, *, layer: nn.Module, num_classes: int | None = None) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # no y
        return self.layer(x)


def test_kit_names_a_norm_without_the_labels_argument() -> None:
    with pytest.raises(AssertionError, match=r"norm 'no-y': forward\(x, y\) failed .*a norm's forward takes "
                                             r"\(x, y=None\)"):
        check_module("norm", _NoLabelsNorm, None, name="no-y")


def test_kit_usage_errors_are_failed_checks() -> None:
    with pytest.raises(AssertionError, match="no conformance checks for kind 'flw'"):
        check_module("flw", ElementwiseAffine, AffineConfig())
    with pytest.raises(AssertionError, match="unknown flow 'no-such-flow'"):
        check_component("flow", "no-such-flow")


class _UnconditionalOnly(TinyDiscriminator):
    def __init__(self, cfg: ScoreConfig, *, in_shape: tuple[int, int, int], num_classes: int | None = None) -> None:
        if num_classes:
            from avade.errors import ConfigError

            raise ConfigError("this critic has no class-conditional form; use it with model.conditional = false")
        super().__init__(cfg, in_shape=in_shape)


def test_kit_accepts_a_critic_without_a_conditional_form() -> None:
    check_module("discriminator", _UnconditionalOnly, ScoreConfig(), name="uncond-only")


class _NoClassesArgument(TinyDiscriminator):
    """A factory without num_classes: documented as a critic with no class-conditional form."""

    def __init__(self, cfg: ScoreConfig, *, in_shape: tuple[int, int, int]) -> None:
        super().__init__(cfg, in_shape=in_shape)


def test_kit_accepts_a_critic_whose_factory_takes_no_num_classes() -> None:
    check_module("discriminator", _NoClassesArgument, ScoreConfig(), name="no-classes")
