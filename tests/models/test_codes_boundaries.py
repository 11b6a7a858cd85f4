"""Latent codes at their edges: the exact ends of a float64 path, a sampled encoding's dequantization, and the
mode a discretized-logistic model decodes to without pixel noise."""

from __future__ import annotations

import torch
from tiny_recipes import tiny_recipe

from avade.models.build import build_model
from avade.models.codes import path, slerp

VAE = ('model.variant="vae"', 'model.flow.name="none"', 'model.discriminator.name="none"')


def _model(*overrides: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(tiny_recipe(*overrides)).eval()
    with torch.no_grad():  # zero-initialised priors and merges would hide what the latents do
        g = torch.Generator().manual_seed(seed + 1)
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


def _images(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


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
