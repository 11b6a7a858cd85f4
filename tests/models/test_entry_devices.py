"""The model's public entries (log_likelihood, sample, reconstruct) take a notebook's CPU tensors and
generators for a model on another device (CUDA tests skip without a GPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_recipes import tiny_recipe

from avade.models.build import build_model


def _model() -> torch.nn.Module:
    recipe = tiny_recipe()
    cfg = recipe.data.dataset.config
    return build_model(recipe, (getattr(cfg, "channels", 3), cfg.resolution, cfg.resolution), 0).eval()


def test_on_the_cpu_the_entries_are_unchanged_and_seeded() -> None:
    model = _model()
    x = torch.randint(0, 256, (2, *model.data_shape), dtype=torch.uint8)
    torch.manual_seed(0)  # the latents' noise: the global RNG (the generator: the dequantization's)
    a = model.log_likelihood(x, generator=torch.Generator().manual_seed(3))["bpd"]
    torch.manual_seed(0)
    b = model.log_likelihood(x, generator=torch.Generator().manual_seed(3))["bpd"]
    assert torch.equal(a, b)
    assert torch.equal(model.sample(2, generator=torch.Generator().manual_seed(1)),
                       model.sample(2, generator=torch.Generator().manual_seed(1)))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cpu_images_and_generators_for_a_model_on_the_gpu() -> None:
    model = _model().cuda()
    x = torch.randint(0, 256, (2, *model.data_shape), dtype=torch.uint8)  # on the CPU, as in a notebook
    bpd = model.log_likelihood(x, generator=torch.Generator().manual_seed(3))["bpd"]  # a CPU generator too
    assert bpd.device.type == "cuda" and torch.isfinite(bpd).all()
    first = model.sample(2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(first, model.sample(2, generator=torch.Generator().manual_seed(1)))
    assert model.reconstruct(x, generator=torch.Generator().manual_seed(2)).shape == x.shape


def test_a_posterior_or_decoder_breaking_its_shapes_is_named_not_broadcast(monkeypatch) -> None:
    # A plugin posterior whose log p is [1] would be broadcast over the batch: a wrong bound, trained silently.
    from avade.errors import ConfigError

    model = _model()
    x = torch.randint(0, 256, (2, *model.data_shape), dtype=torch.uint8)
    stage = model.posterior.forward_stage

    def one_log_p(*args, **kwargs):
        d, lq, lp = stage(*args, **kwargs)
        return d, lq, lp[:1]

    monkeypatch.setattr(model.posterior, "forward_stage", one_log_p)
    with pytest.raises(ConfigError, match=r"log p of shape \[1\] .* must be \[2\]") as info:
        model.log_likelihood(x)
    assert info.value.path == "model.posterior"
    with pytest.raises(ConfigError, match=r"must be \[2\]"):
        model.sample(2)  # the prior's path too
    monkeypatch.setattr(model.posterior, "forward_stage", stage)
    head = model.decoder.head
    monkeypatch.setattr(model.decoder, "head", lambda d, labels: head(d, labels)[..., :1])
    with pytest.raises(ConfigError, match=r"gave means of shape \[2, 3, \d+, 1\]") as info:
        model.sample(2)
    assert info.value.path == "model.decoder"


def test_the_public_entries_refuse_what_would_give_wrong_numbers_silently() -> None:
    from avade.errors import DataError

    model = _model()
    x = torch.randint(0, 256, (2, *model.data_shape), dtype=torch.uint8)
    with pytest.raises(DataError, match=r"images must be uint8 \[B, 3, \d+, \d+\] .* got torch.float32"):
        model.log_likelihood(x.float() / 255)  # a bpd of another scale, before
    with pytest.raises(DataError, match="images must be uint8"):
        model.reconstruct(x[0])  # one image without its batch axis
    with pytest.raises(DataError, match="importance_samples must be an int >= 1"):
        model.log_likelihood(x, importance_samples=0)
    for n in (-1, 0, 2.5, True):
        with pytest.raises(DataError, match="n must be an int >= 1"):
            model.sample(n)
    for bad in (-1.0, float("nan"), True, "0.9"):
        with pytest.raises(DataError, match="temperature must be a finite number >= 0"):
            model.sample(2, temperature=bad)
    for good in (0, 0.9, np.float32(0.9), torch.tensor(0.9)):  # numpy and 0-d torch numbers too
        assert model.sample(2, temperature=good).shape == (2, *model.data_shape)


def test_mean_bpd_checks_its_batches_as_log_likelihood_does() -> None:
    from avade.errors import DataError

    model = _model()
    x = torch.randint(0, 256, (2, *model.data_shape), dtype=torch.uint8)
    y = torch.zeros(2, dtype=torch.int64)
    with pytest.raises(DataError, match=r"bpd: images must be uint8 .* got torch.float32"):
        model.mean_bpd([(x.float() / 255, y)])  # a bpd of another scale (11 bits instead of 8), silently, before
    with pytest.raises(DataError, match="bpd: importance_samples must be an int >= 1"):
        model.mean_bpd([(x, y)], importance_samples=0)  # a ZeroDivisionError before
    recipe = tiny_recipe("model.conditional=true")
    conditional = build_model(recipe, model.data_shape, 10).eval()
    with pytest.raises(DataError, match=r"bpd: labels must lie in \[0, 10\), got 0..10"):
        conditional.mean_bpd([(x, torch.tensor([0, 10]))])  # an IndexError from the embeddings before
    with pytest.raises(DataError, match=r"bpd: the model is class-conditional"):
        conditional.mean_bpd([(x, None)])  # a TypeError before
    bytes_ = conditional.mean_bpd([(x, torch.tensor([3, 4], dtype=torch.uint8))])  # any integer dtype, as sample's
    assert bytes_ == conditional.mean_bpd([(x, torch.tensor([3, 4]))])


def test_mean_bpd_gives_the_model_its_mode_back() -> None:
    # A loop of one's own that reports the bpd must not train on in eval mode (running statistics in
    # batch norm, no data-dependent init, no free bits) without a word
    model = _model().train()
    x = torch.randint(0, 256, (2, *model.data_shape), dtype=torch.uint8)
    model.mean_bpd([(x, torch.zeros(2, dtype=torch.int64))])
    assert model.training and all(m.training for m in model.modules())
    model.eval()
    model.mean_bpd([(x, torch.zeros(2, dtype=torch.int64))])
    assert not any(m.training for m in model.modules())


def test_a_class_conditional_model_needs_valid_labels() -> None:
    from avade.errors import DataError

    recipe = tiny_recipe("model.conditional=true")
    cfg = recipe.data.dataset.config
    model = build_model(recipe, (getattr(cfg, "channels", 3), cfg.resolution, cfg.resolution), 10).eval()
    x = torch.randint(0, 256, (2, *model.data_shape), dtype=torch.uint8)
    with pytest.raises(DataError, match=r"class-conditional \(10 classes\): pass labels, int64 \[2\]"):
        model.sample(2)  # its label-free path was never trained
    with pytest.raises(DataError, match=r"labels must lie in \[0, 10\), got 0..10"):
        model.log_likelihood(x, torch.tensor([0, 10]))
    with pytest.raises(DataError, match=r"labels must be integer class ids \[2\]"):
        model.reconstruct(x, torch.tensor([0.0, 1.0]))
    assert torch.isfinite(model.log_likelihood(x, torch.tensor([3, 4]))["bpd"]).all()


def test_an_unconditional_model_refuses_to_sample_given_classes() -> None:
    from avade.errors import DataError

    model = _model()
    labels = torch.tensor([3, 4])
    # (its samples ignored the labels before: not the classes asked for, and nothing said so)
    with pytest.raises(DataError, match=r"sample: the model is not class-conditional \(model.conditional = false"):
        model.sample(2, labels=labels)
    # a data loader's labels, given along with its images, are no request: a generic loop keeps working
    x = torch.randint(0, 256, (2, *model.data_shape), dtype=torch.uint8)
    assert torch.isfinite(model.log_likelihood(x, labels)["bpd"]).all()
    assert model.reconstruct(x, labels).shape == x.shape


def test_compiled_the_label_range_is_not_read_back(monkeypatch) -> None:
    # int(labels.min()) would break the compiled graph of every conditional training step
    recipe = tiny_recipe("model.conditional=true")
    cfg = recipe.data.dataset.config
    model = build_model(recipe, (getattr(cfg, "channels", 3), cfg.resolution, cfg.resolution), 10).eval()
    labels = torch.tensor([0, 3])
    reads = []
    monkeypatch.setattr(torch.Tensor, "min", lambda self, *a, **k: reads.append("min") or torch.amin(self))
    model._checked("log_likelihood", None, labels, 2)
    assert reads, "checked when not compiling"
    reads.clear()
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    model._checked("log_likelihood", None, labels, 2)
    assert reads == []


def test_labels_on_a_gpu_are_range_checked_too() -> None:
    # Labels already on the model's GPU skipped the range check: an out-of-range class id reached the class
    # embeddings, a device-side assert that leaves the process's CUDA context unusable (a notebook's kernel restart)
    from avade.errors import DataError

    recipe = tiny_recipe("model.conditional=true", "model.decoder.norm=cwn", "model.posterior.norm=cwn")
    cfg = recipe.data.dataset.config
    model = build_model(recipe, (getattr(cfg, "channels", 3), cfg.resolution, cfg.resolution), 10).eval()

    class FakeCuda(torch.Tensor):  # a CPU tensor that claims a GPU, to take the GPU branch on any machine
        @property
        def device(self):  # type: ignore[override]
            return torch.device("cuda")

    x = torch.randint(0, 256, (2, *model.data_shape), dtype=torch.uint8)
    for bad in ([0, 10], [-1, 3]):
        labels = torch.tensor(bad).as_subclass(FakeCuda)
        with pytest.raises(DataError, match=r"sample: labels must lie in \[0, 10\)"):
            model.sample(2, labels)
        with pytest.raises(DataError, match=r"log_likelihood: labels must lie in \[0, 10\)"):
            model.log_likelihood(x, labels)
        with pytest.raises(DataError, match=r"bpd: labels must lie in \[0, 10\)"):
            model.mean_bpd([(x, labels)])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_out_of_range_gpu_labels_are_refused_before_the_gpu_sees_them() -> None:
    from avade.errors import DataError

    recipe = tiny_recipe("model.conditional=true", "model.decoder.norm=cwn", "model.posterior.norm=cwn")
    cfg = recipe.data.dataset.config
    model = build_model(recipe, (getattr(cfg, "channels", 3), cfg.resolution, cfg.resolution), 10).eval().cuda()
    with pytest.raises(DataError, match=r"labels must lie in \[0, 10\), got 0..10"):
        model.sample(2, torch.tensor([0, 10], device="cuda"))
    assert model.sample(2, torch.tensor([0, 9], device="cuda")).shape == (2, *model.data_shape)  # the context lives


def test_class_ids_of_any_integer_dtype_are_taken() -> None:
    # a uint8 or int16 tensor of class ids passed the check, then failed inside the class embeddings of cwn
    recipe = tiny_recipe("model.conditional=true", "model.decoder.norm=cwn", "model.posterior.norm=cwn")
    cfg = recipe.data.dataset.config
    model = build_model(recipe, (getattr(cfg, "channels", 3), cfg.resolution, cfg.resolution), 10).eval()
    x = torch.randint(0, 256, (3, *model.data_shape), dtype=torch.uint8)
    want = model.sample(3, torch.tensor([0, 4, 9]), generator=torch.Generator().manual_seed(1))
    bpd = model.log_likelihood(x, torch.tensor([0, 4, 9]), generator=torch.Generator().manual_seed(1))["bpd"]
    for dtype in (torch.uint8, torch.int8, torch.int16, torch.int32):
        labels = torch.tensor([0, 4, 9], dtype=dtype)
        assert torch.equal(model.sample(3, labels, generator=torch.Generator().manual_seed(1)), want)
        assert torch.equal(model.log_likelihood(x, labels, generator=torch.Generator().manual_seed(1))["bpd"], bpd)
        model.reconstruct(x, labels)


def test_samples_and_reconstructions_holding_nan_are_warned_of_not_passed_as_black_pixels(monkeypatch) -> None:
    # A V-ADE trained on constant images scores a finite bpd while f^-1 overflows to NaN: cast to uint8 the
    # NaN came out as black pixels, unannounced (and a sample metric of them as a real result)
    import warnings

    model = _model()
    x = torch.randint(0, 256, (2, *model.data_shape), dtype=torch.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a sound model: no warning
        model.sample(2, generator=torch.Generator().manual_seed(1))
        model.reconstruct(x, generator=torch.Generator().manual_seed(1))
    original = model._sample_from_mean
    monkeypatch.setattr(model, "_sample_from_mean", lambda *a, **k: original(*a, **k) * float("nan"))
    with pytest.warns(RuntimeWarning, match=r"sample: the model's samples hold NaN \(the model diverged"):
        images = model.sample(2, generator=torch.Generator().manual_seed(1))
    assert images.dtype == torch.uint8 and images.shape == (2, *model.data_shape)
    with pytest.warns(RuntimeWarning, match="reconstruction: the model's reconstructions hold NaN"):
        model.reconstruct(x, generator=torch.Generator().manual_seed(1))


def test_samples_holding_inf_are_warned_of_not_passed_as_white_pixels(monkeypatch) -> None:
    # Without the logit (model.logit_alpha = 0, Glow's input) an overflowing f^-1 gives +-inf rather than NaN:
    # cast to uint8 it came out as white (or black) pixels without a word, unlike NaN
    model = _model()
    original = model._sample_from_mean
    monkeypatch.setattr(model, "_sample_from_mean", lambda *a, **k: torch.full_like(original(*a, **k), float("inf")))
    with pytest.warns(RuntimeWarning, match=r"sample: the model's samples hold inf \(the model diverged"):
        images = model.sample(2, generator=torch.Generator().manual_seed(1))
    assert images.dtype == torch.uint8 and images.shape == (2, *model.data_shape)


@pytest.mark.parametrize("entry", ["log_likelihood", "reconstruct", "sample", "generate"])
def test_complex_labels_are_refused_alike_by_every_entry(entry: str) -> None:
    """Complex labels: the one-line DataError of generate's check at every entry, not torch's NotImplementedError
    from ``labels.min()`` ("min_all" not implemented for 'ComplexFloat')."""
    from avade.errors import DataError

    recipe = tiny_recipe("model.conditional=true")
    cfg = recipe.data.dataset.config
    model = build_model(recipe, (getattr(cfg, "channels", 3), cfg.resolution, cfg.resolution), 10).eval()
    x = torch.randint(0, 256, (2, *model.data_shape), dtype=torch.uint8)
    labels = torch.tensor([1, 2], dtype=torch.complex64)
    call = {"log_likelihood": lambda: model.log_likelihood(x, labels),
            "reconstruct": lambda: model.reconstruct(x, labels),
            "sample": lambda: model.sample(2, labels), "generate": lambda: model.generate(2, labels)}[entry]
    with pytest.raises(DataError, match=r"labels must be integer class ids \[2\], got torch.complex64 \[2\]"):
        call()
