"""Latent codes: ``model.encode`` / ``decode`` / ``interpolate``, and the paths between codes.

The properties pinned: a code is z in the prior's standard coordinates (a standard normal code decodes to
exactly the prior sample of the same noise, zeros to the prior's mode), encoding is deterministic unless
asked to sample, interpolation paths keep their ends and share their pixel noise, and bad codes or models
without codes are refused in one line.
"""

from __future__ import annotations

import math

import pytest
import torch
from tiny_recipes import perturbed_model

from avade.errors import ConfigError, DataError
from avade.models.codes import path, slerp

POSTERIORS = {
    "topdown": (),
    "topdown-iaf": ("model.posterior.iaf_steps=1",),
    "diagonal": ('model.posterior={name="diagonal", latent_channels=2}',),
    "pixel-vae": ('model.variant="vae"', 'model.flow="none"', 'model.discriminator="none"'),
}


def _model(*overrides: str, seed: int = 0) -> torch.nn.Module:
    return perturbed_model(*overrides, seed=seed)


def _images(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("overrides", POSTERIORS.values(), ids=POSTERIORS.keys())
def test_codes_have_the_latent_shapes_and_are_deterministic_unless_sampled(overrides: tuple[str, ...]) -> None:
    model = _model(*overrides)
    x = _images()
    codes = model.encode(x)
    assert [tuple(c.shape) for c in codes] == [(4, *model.posterior.latent_shape(i)) for i in model.posterior.stage_ids]
    assert all(torch.equal(a, b) for a, b in zip(codes, model.encode(x), strict=True))
    drawn = [model.encode(x, sample=True, generator=torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    assert all(torch.equal(a, b) for a, b in zip(drawn[0], drawn[1], strict=True))
    assert not torch.equal(drawn[0][0], drawn[2][0])
    assert not torch.equal(drawn[0][0], codes[0])


@pytest.mark.parametrize("overrides", POSTERIORS.values(), ids=POSTERIORS.keys())
def test_a_standard_normal_code_decodes_to_the_prior_sample_of_that_noise(overrides: tuple[str, ...]) -> None:
    """``sample`` draws z = mu_p + sigma_p eps top-down from the global RNG; the codes of those eps decode to the
    same images: codes are the prior's standard coordinates, at every stage of the hierarchy."""
    model = _model(*overrides)
    ids = model.posterior.stage_ids
    torch.manual_seed(5)
    mean = model.decode_prior(3, temperature=1.0)
    expected = model.preprocess.to_uint8(model.to_image(mean))
    torch.manual_seed(5)
    eps = {i: torch.randn(3, *model.posterior.latent_shape(i)) for i in reversed(ids)}
    assert torch.equal(model.decode([eps[i] for i in ids], pixel_noise=False), expected)
    # zeros: the prior's mode (temperature 0)
    zeros = [torch.zeros(3, *model.posterior.latent_shape(i)) for i in ids]
    mode = model.preprocess.to_uint8(model.to_image(model.decode_prior(3, temperature=0.0)))
    assert torch.equal(model.decode(zeros, pixel_noise=False), mode)


def test_decoding_adds_the_pixel_noise_sample_adds_unless_asked_not_to() -> None:
    model = _model()
    codes = model.encode(_images())
    plain = model.decode(codes, pixel_noise=False)
    noisy = [model.decode(codes, generator=torch.Generator().manual_seed(s)) for s in (3, 3, 4)]
    assert torch.equal(noisy[0], noisy[1]) and not torch.equal(noisy[0], noisy[2])
    assert not torch.equal(noisy[0], plain)


def test_an_encoding_decodes_to_the_mean_path_of_the_posterior() -> None:
    """Decoding an image's code runs the decoder on the very latents encoding found: with a posterior whose q
    has no spread left (log sigma_q at its floor), the reconstruction of one sample is that decoding."""
    model = _model()
    x = _images()
    codes = model.encode(x)
    # the same latents through decode and through the model's own top-down pass with q's spread at ~0
    d = model.decode(codes, pixel_noise=False)
    groups = model.posterior.groups
    originals = {k: g.posterior_params for k, g in groups.items()}
    try:
        for g in groups.values():
            base = g.posterior_params

            def at_mean(d_, h_, prior=None, y=None, _base=base):
                mu, s, ctx = _base(d_, h_, prior, y)
                return mu, torch.full_like(s, -30.0), ctx
            g.posterior_params = at_mean
        u = model.preprocess.centres(x)
        feat, _ = model.features(u)
        with torch.no_grad():
            mean, _, _ = model._top_down(x.shape[0], model.encoder(feat, None), None, 1.0)
        expected = model.preprocess.to_uint8(model.to_image(mean))
    finally:
        for k, g in groups.items():
            g.posterior_params = originals[k]
    assert torch.equal(d, expected)


def test_interpolation_keeps_its_ends_and_shares_pixel_noise_along_a_path() -> None:
    model = _model()
    a, b = _images(3, seed=1), _images(3, seed=2)
    frames = model.interpolate(a, b, 5, pixel_noise=False)
    assert frames.shape == (3, 5, 3, 8, 8) and frames.dtype == torch.uint8
    assert torch.equal(frames[:, 0], model.decode(model.encode(a), pixel_noise=False))
    assert torch.equal(frames[:, -1], model.decode(model.encode(b), pixel_noise=False))
    assert not torch.equal(frames[:, 1], frames[:, 3])
    # a path from an image to itself: every frame the same, pixel noise included (drawn once per path)
    still = model.interpolate(a, a, 4, generator=torch.Generator().manual_seed(7))
    assert all(torch.equal(still[:, 0], still[:, s]) for s in range(4))
    again = model.interpolate(a, b, 4, generator=torch.Generator().manual_seed(7))
    assert torch.equal(again, model.interpolate(a, b, 4, generator=torch.Generator().manual_seed(7)))
    assert not torch.equal(model.interpolate(a, b, 4, spherical=False, pixel_noise=False)[:, 1],
                           model.interpolate(a, b, 4, pixel_noise=False)[:, 1])


def test_slerp_follows_the_great_circle_and_interpolates_the_norm() -> None:
    a = torch.tensor([[3.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
    b = torch.tensor([[0.0, 1.0], [2.0, 2.0], [-1.0, 0.0]])
    mid = slerp(a, b, 0.5)
    # orthogonal: 45 degrees, norm (3 + 1) / 2
    assert torch.allclose(mid[0], torch.tensor([2.0, 2.0]) / math.sqrt(2), atol=1e-6)
    assert torch.allclose(mid[1], torch.tensor([1.5, 1.5]), atol=1e-6)  # parallel: linear
    assert torch.allclose(mid[2], torch.tensor([0.5, 0.0]), atol=1e-6)  # antiparallel: linear
    assert torch.allclose(slerp(a, b, 0.0), a, atol=1e-6) and torch.allclose(slerp(a, b, 1.0), b, atol=1e-6)
    codes_a, codes_b = [a.view(3, 2, 1, 1)], [b.view(3, 2, 1, 1)]
    steps = path(codes_a, codes_b, 3)
    assert torch.equal(steps[0][0], codes_a[0]) and torch.equal(steps[-1][0], codes_b[0])
    assert torch.allclose(steps[1][0].flatten(1), mid, atol=1e-6)
    assert torch.allclose(path(codes_a, codes_b, 3, spherical=False)[1][0].flatten(1), (a + b) / 2)


def test_a_class_conditional_model_encodes_and_decodes_with_labels() -> None:
    model = _model("model.conditional=true", "model.decoder.norm=cwn")
    x, y = _images(4), torch.tensor([0, 1, 2, 3])
    codes = model.encode(x, y)
    shifted = model.decode(codes, y.flip(0), pixel_noise=False)
    assert not torch.equal(model.decode(codes, y, pixel_noise=False), shifted)
    assert model.interpolate(x, x.flip(0), 3, y).shape == (4, 3, 3, 8, 8)
    with pytest.raises(DataError, match=r"class-conditional .* pass labels"):
        model.encode(x)
    with pytest.raises(DataError, match=r"class-conditional .* pass labels"):
        model.decode(codes)


def test_a_double_model_encodes_and_decodes_in_float64() -> None:
    model = _model().double()
    codes = model.encode(_images())
    assert all(c.dtype == torch.float64 for c in codes)
    assert model.decode(codes, pixel_noise=False).dtype == torch.uint8


def test_bad_codes_and_arguments_are_refused_in_one_line() -> None:
    model = _model()
    codes = model.encode(_images())
    cases = [
        (codes[:1], r"got 1 code tensors, the model has 2 latent stages"),
        (codes[0], r"codes must be a list of tensors, one per latent stage \(2\)"),
        ([codes[0], codes[1].long()], r"code 1 must be a float tensor of one entry per image, \[B, \.\.\.\]"),
        ([codes[0], codes[1][:, :1]], r"code 1 has shape \[1, 4, 4\] per image; its stage takes \[2, 4, 4\]"),
        ([codes[0], codes[1][:2]], r"the codes hold \[4, 2\] images; every stage needs the same number"),
    ]
    for bad, message in cases:
        with pytest.raises(DataError, match="decode: " + message):
            model.decode(bad)
    with pytest.raises(DataError, match="interpolate: steps must be an int >= 2"):
        model.interpolate(_images(), _images(), 1)
    with pytest.raises(DataError, match=r"x_a and x_b must be image batches of one shape, got \[4, 3, 8, 8\] and "
                                        r"\[2, 3, 8, 8\]"):
        model.interpolate(_images(), _images(2))
    with pytest.raises(DataError, match="encode: images must be uint8"):
        model.encode(_images().float())
    with pytest.raises(DataError, match="decode: the model is not class-conditional"):
        model.decode(codes, torch.zeros(4, dtype=torch.int64))


def test_a_gan_and_a_posterior_without_codes_are_refused() -> None:
    gan = _model('model.variant="gan"', "model.flow=\"none\"")
    with pytest.raises(ConfigError, match="encode: a GAN trains no encoder"):
        gan.encode(_images())
    with pytest.raises(ConfigError, match="interpolate: a GAN trains no encoder"):
        gan.interpolate(_images(2), _images(2, seed=1))
    # (README: bpd is defined only for variants with a likelihood; these returned numbers of untrained weights)
    for what, call in (("log_likelihood", lambda: gan.log_likelihood(_images())),
                       ("reconstruct", lambda: gan.reconstruct(_images())),
                       ("bpd", lambda: gan.mean_bpd([_images()]))):
        with pytest.raises(ConfigError, match=f"^{what}: a GAN trains no encoder or likelihood"):
            call()

    model = _model()
    plain = type("PlainPosterior", (torch.nn.Module,), {
        "stage_ids": [1], "forward_stage": lambda self, i, d, h, t=1.0: (d, d.new_zeros(d.shape[0]),
                                                                        d.new_zeros(d.shape[0]))})()
    model.posterior = plain
    with pytest.raises(ConfigError, match=r"decode: the posterior \(.*PlainPosterior\) has no latent codes: it "
                                          r"needs encode_stage"):
        model.decode([torch.zeros(1, 2, 4, 4)])


def test_codes_run_in_eval_mode_and_leave_the_model_as_it_was() -> None:
    """A model in training mode (as ``trainer.step_once`` leaves it): a batch norm in training mode would make an
    image's code depend on its batch and update the running statistics, under no_grad, silently."""
    model = _model().train()
    model.encoder.eval()  # a caller's own mix of modes is given back as it was
    x = _images()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    alone = model.encode(x[:1])
    together = model.encode(x)
    model.decode(together)
    model.interpolate(x[:2], x[2:], 3)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # running statistics untouched
    assert all(torch.equal(a, b[:1]) for a, b in zip(alone, together, strict=True))
    assert model.training and model.flow.training and not model.encoder.training


def test_interpolation_without_a_generator_follows_the_global_rng_as_sample_does() -> None:
    model = _model()
    x = _images()
    torch.manual_seed(3)
    first = model.interpolate(x[:2], x[2:], 3)
    torch.manual_seed(3)
    assert torch.equal(model.interpolate(x[:2], x[2:], 3), first)


def test_a_plugin_posterior_s_codes_of_its_own_shape_decode_and_interpolate() -> None:
    """The kit asks a code for one entry per image (a plugin's latent may be a vector); decode refused all but
    [B, C, H, W], the codes of the posterior's own encode_stage included."""
    from avade.posteriors.topdown import TopDownPosterior

    class FlatCodes(TopDownPosterior):  # a posterior with vector codes, and no latent_shape to say so
        latent_shape = None

        def encode_stage(self, i, d, h, y=None, sample=False):
            d, code = super().encode_stage(i, d, h, y, sample)
            return d, code.flatten(1)

        def decode_stage(self, i, d, code, y=None):
            return super().decode_stage(i, d, code.view(code.shape[0], self.latent_channels, *d.shape[2:]), y)

    model = _model()
    x = _images()
    expected = model.decode(model.encode(x), pixel_noise=False)
    model.posterior.__class__ = FlatCodes
    codes = model.encode(x)
    assert all(c.dim() == 2 for c in codes)
    assert torch.equal(model.decode(codes, pixel_noise=False), expected)
    assert model.interpolate(x[:2], x[2:], 3).shape == (2, 3, 3, 8, 8)


def test_sample_and_reconstruct_run_in_eval_mode_and_leave_the_model_as_it_was() -> None:
    """As encode/decode: a model in training mode (as trainer.step_once leaves it) sampled from a notebook kept
    its running statistics updated by the samples, and each image depended on the batch drawn with it."""
    model = _model().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = _images()
    alone = model.reconstruct(x[:1], generator=torch.Generator().manual_seed(1))
    model.sample(4, generator=torch.Generator().manual_seed(2))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert model.training and all(m.training for m in model.modules())
    eval_alone = model.eval().reconstruct(x[:1], generator=torch.Generator().manual_seed(1))
    assert torch.equal(alone, eval_alone)


# -- at the edges (a float64 path's exact ends, a sampled encoding, discretized-logistic decoding, IAF) ------

VAE = ('model.variant="vae"', 'model.flow.name="none"', 'model.discriminator.name="none"')


def test_a_float64_path_ends_exactly_at_its_codes() -> None:
    """slerp's weights at t = 0 and 1 round in float64 (the ends are off in the last digits): the ends are
    the codes themselves."""
    g = torch.Generator().manual_seed(0)
    a, b = ([torch.randn(6, *shape, generator=g, dtype=torch.float64) * scale for shape in ((3, 2, 2), (1, 4, 4))]
            for scale in (1.0, 3.0))
    flat_a, flat_b = (torch.cat([c.flatten(1) for c in codes], 1) for codes in (a, b))
    assert not torch.equal(slerp(flat_a, flat_b, 1.0), flat_b)  # (else the check below says nothing)
    for spherical in (True, False):
        steps = path(a, b, 4, spherical)
        assert all(torch.equal(x, y) for x, y in zip(steps[0], a, strict=True))
        assert all(torch.equal(x, y) for x, y in zip(steps[-1], b, strict=True))


def test_a_sampled_encoding_dequantizes_the_images_and_a_deterministic_one_takes_bin_centres() -> None:
    model = _model()
    calls: list[str] = []
    for name in ("dequantize", "centres"):
        original = getattr(model.preprocess, name)

        def spy(*args, _original=original, _name=name, **kwargs):  # type: ignore[no-untyped-def]
            calls.append(_name)
            return _original(*args, **kwargs)
        setattr(model.preprocess, name, spy)
    model.encode(_images(), sample=True, generator=torch.Generator().manual_seed(1))
    assert calls == ["dequantize"]
    calls.clear()
    model.encode(_images())
    assert calls == ["centres"]


def test_a_discretized_logistic_model_decodes_without_noise_to_the_bin_its_noise_concentrates_on() -> None:
    """pixel_noise=False gives the logistic's mode: with the logistic's scale near 0 the noisy decoding is
    that bin (at 5 bits, whose bins are 8 values wide, and at 8 bits)."""
    for bits in (5, 8):
        model = _model(*VAE, 'model.likelihood="discretized-logistic"', f"data.n_bits={bits}")
        with torch.no_grad():
            model.log_sigma.fill_(-30.0)  # (below float32 resolution: the mean itself)
        codes = model.encode(_images())
        plain = model.decode(codes, pixel_noise=False)
        noisy = model.decode(codes, generator=torch.Generator().manual_seed(3))
        assert torch.equal(plain, noisy), bits
        assert len(plain.unique()) > 2  # (not all at one clamped end)


def _at_mean(model: torch.nn.Module, log_sigma_q: float | None) -> None:
    """The model's q with its log sigma replaced by ``log_sigma_q`` (None: as it is); images taken at their
    bins' centres even when dequantization is asked for."""
    model.preprocess.dequantize = lambda x, generator=None: model.preprocess.centres(x)
    if log_sigma_q is None:
        return
    for g in model.posterior.groups.values():
        def params(d_, h_, prior=None, y=None, _base=g.posterior_params):  # type: ignore[no-untyped-def]
            mu, s, ctx = _base(d_, h_, prior, y)
            return mu, torch.full_like(s, log_sigma_q), ctx
        g.posterior_params = params


def test_a_sampled_code_draws_z_at_q_s_own_spread() -> None:
    """With the images' dequantization held fixed, sampled codes still vary (z is drawn), and with q's sigma
    near 0 they are the deterministic code (z = mu_q + sigma_q eps, not mu_q + eps)."""
    model = _model()
    x = _images()
    _at_mean(model, None)
    drawn = [model.encode(x, sample=True, generator=torch.Generator().manual_seed(s)) for s in (1, 2)]
    assert not torch.equal(drawn[0][0], drawn[1][0])
    _at_mean(model, -30.0)
    exact = model.encode(x)
    sampled = model.encode(x, sample=True, generator=torch.Generator().manual_seed(1))
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(sampled, exact, strict=True))


def test_an_iaf_encoding_decodes_to_the_mean_path_of_its_posterior() -> None:
    """As tests/models/test_codes.py's mean-path test, through an IAF step: the code is z after the IAF (and the
    state passed down merges that z), so decoding the codes is the top-down pass with q's spread at ~0."""
    model = _model("model.posterior.iaf_steps=1")
    x = _images()
    codes = model.encode(x)
    decoded = model.decode(codes, pixel_noise=False)
    _at_mean(model, -30.0)
    feat, _ = model.features(model.preprocess.centres(x))
    with torch.no_grad():
        mean, _, _ = model._top_down(x.shape[0], model.encoder(feat, None), None, 1.0)
    assert torch.equal(decoded, model.preprocess.to_uint8(model.to_image(mean)))


def test_interpolations_without_a_generator_draw_new_pixel_noise_each_call() -> None:
    model = _model()
    a, b = _images(3, seed=1), _images(3, seed=2)
    assert not torch.equal(model.interpolate(a, b, 3), model.interpolate(a, b, 3))


def test_a_gan_decodes_codes_of_its_prior() -> None:
    """A GAN has no encoder but a trained prior and decoder: standard normal codes decode to its prior samples
    (latent traversals of a GAN), as for every other variant."""
    gan = _model('model.variant="gan"', "model.flow=\"none\"")
    ids = gan.posterior.stage_ids
    torch.manual_seed(5)
    expected = gan.preprocess.to_uint8(gan.to_image(gan.decode_prior(3, temperature=1.0)))
    torch.manual_seed(5)
    eps = {i: torch.randn(3, *gan.posterior.latent_shape(i)) for i in reversed(ids)}
    assert torch.equal(gan.decode([eps[i] for i in ids], pixel_noise=False), expected)


def test_an_empty_batch_is_refused_in_one_line() -> None:
    model = _model()
    for what, call in [("encode", lambda x: model.encode(x)), ("reconstruct", lambda x: model.reconstruct(x)),
                       ("log_likelihood", lambda x: model.log_likelihood(x)),
                       ("interpolate", lambda x: model.interpolate(x, x))]:
        with pytest.raises(DataError, match=rf"{what}: the batch holds no images \(x is \[0, 3, 8, 8\]\)"):
            call(_images()[:0])


def test_interpolate_names_itself_in_its_errors() -> None:
    model = _model("model.conditional=true", "data.num_classes=2")
    with pytest.raises(DataError, match="interpolate: the model is class-conditional"):
        model.interpolate(_images(2), _images(2, seed=1))
    with pytest.raises(DataError, match=r"interpolate: images must be uint8 \[B, 3, 8, 8\] .*got ndarray"):
        model.interpolate(_images(2).numpy(), _images(2, seed=1).numpy(), labels=torch.zeros(2, dtype=torch.int64))
