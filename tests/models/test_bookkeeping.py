"""Exact BPD bookkeeping: preprocessing Jacobians are counted and an analytic case matches to 1e-4 bits."""

from __future__ import annotations

import math

import pytest
import torch

from avade.models import GenerativeModel, build_model
from avade.models.likelihood import discretized_logistic_log_prob, gaussian_log_prob, sample_discretized_logistic
from avade.models.preprocess import Preprocess, to_uint8, to_unit
from avade.recipe.load import recipe_from_dict


@pytest.mark.parametrize("alpha", [0.0, 0.05])
def test_preprocess_logdet_equals_autograd_jacobian(alpha):
    pre = Preprocess(alpha, logit=alpha > 0).double()
    u = (torch.rand(1, 2, 3, 3, dtype=torch.float64) * 255.0 + 0.3)
    _, logdet = pre(u)
    jac = torch.autograd.functional.jacobian(lambda v: pre(v.view(1, 2, 3, 3))[0].flatten(), u.flatten())
    assert float(logdet[0]) == pytest.approx(float(torch.linalg.slogdet(jac)[1]), abs=1e-9)
    back = pre.inverse(pre(u)[0])
    assert torch.allclose(back, u, atol=1e-9)


def test_gaussian_log_prob_matches_torch_distributions():
    x, mean = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    log_sigma = torch.randn(2, 1, 1) * 0.3
    expected = torch.distributions.Normal(mean, log_sigma.exp()).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(gaussian_log_prob(x, mean, log_sigma), expected, atol=1e-4)


def test_discretized_logistic_is_a_distribution_over_256_values():
    values = torch.arange(256, dtype=torch.uint8).view(256, 1, 1, 1)
    mean = torch.full((256, 1, 1, 1), 0.3)
    for log_scale in (torch.tensor(-3.0), torch.tensor(0.5)):
        probs = discretized_logistic_log_prob(values, mean, log_scale.view(1, 1, 1)).exp()
        assert float(probs.sum()) == pytest.approx(1.0, abs=1e-4)


def _analytic_model(logit_alpha: float, flow: str):
    recipe = recipe_from_dict({
        "name": "analytic",
        "model": {"variant": "v-ade" if flow != "none" else "vae", "logit_alpha": logit_alpha,
                  "flow": {"name": flow},
                  "encoder": {"name": "conv", "channels": [4]},
                  "posterior": {"name": "diagonal", "latent_channels": 2, "norm": "none"},
                  "decoder": {"name": "conv", "norm": "none"}},
        "data": {"name": "synthetic", "resolution": 4, "channels": 1},
    })
    model = build_model(recipe, (2, 4, 4))
    with torch.no_grad():
        # q(z|x) = p(z) = N(0, I) exactly (log q - log p = 0 for every sample) and a constant decoder
        # mean m: the ELBO is then exactly log N(f(x); m, sigma^2).
        for p in model.posterior.parameters():
            p.zero_()
        model.decoder.out.layer.weight.zero_()
        model.decoder.out.layer.bias.copy_(torch.tensor([0.2, -0.4]))
        model.log_sigma.copy_(torch.tensor([0.1, -0.3]).view(2, 1, 1))
    return model.eval()


@pytest.mark.parametrize(("alpha", "flow"), [(0.05, "identity"), (0.0, "none")])
def test_bpd_matches_closed_form(alpha, flow):
    model = _analytic_model(alpha, flow)
    x = torch.randint(0, 256, (5, 2, 4, 4), dtype=torch.uint8)
    out = model.log_likelihood(x, generator=torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(3)
    torch.randint(0, 2**62, (1,), generator=gen)  # the latents' seed is drawn first, then the dequantization
    u = x.double() + torch.rand(x.shape, generator=gen).double()
    v = u / 256.0
    if alpha > 0:
        w = alpha + (1 - 2 * alpha) * v
        y = torch.log(w / (1 - w))
        log_dy_du = math.log((1 - 2 * alpha) / 256.0) - torch.log(w * (1 - w))
    else:
        y = 2 * v - 1
        log_dy_du = torch.full_like(y, math.log(2.0 / 256.0))
    mean = torch.tensor([0.2, -0.4], dtype=torch.float64).view(1, 2, 1, 1)
    sigma = torch.tensor([0.1, -0.3], dtype=torch.float64).exp().view(1, 2, 1, 1)
    log_p = (torch.distributions.Normal(mean, sigma).log_prob(y) + log_dy_du).flatten(1).sum(1)
    expected_bpd = -log_p / (32 * math.log(2.0))
    assert torch.allclose(out["bpd"].double(), expected_bpd, atol=1e-4)
    assert torch.allclose(out["kl"], torch.zeros(5))
    # The k-sample importance-weighted bound equals the ELBO when q = p and the decoder ignores z.
    iw = model.log_likelihood(x, generator=torch.Generator().manual_seed(3), importance_samples=4)
    assert torch.allclose(iw["bpd"].double(), expected_bpd, atol=1e-4)


def test_sampling_and_reconstruction_shapes():
    model = _analytic_model(0.05, "identity")
    samples = model.sample(6, generator=torch.Generator().manual_seed(0))
    assert samples.dtype == torch.uint8 and samples.shape == (6, 2, 4, 4)
    x = torch.randint(0, 256, (3, 2, 4, 4), dtype=torch.uint8)
    assert model.reconstruct(x).shape == x.shape


def _latents_matter() -> GenerativeModel:
    """The analytic model with a prior and a posterior that depend on the latents' draw."""
    model = _analytic_model(0.05, "identity")
    with torch.no_grad():
        for p in model.posterior.parameters():
            p.add_(0.1)
    return model


def test_sampling_with_a_generator_is_reproducible_and_leaves_the_global_rng_alone():
    model = _latents_matter()
    state = torch.get_rng_state()
    a = model.sample(4, generator=torch.Generator().manual_seed(5))
    b = model.sample(4, generator=torch.Generator().manual_seed(5))
    c = model.sample(4, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.get_rng_state(), state)


def test_log_likelihood_with_a_generator_depends_on_it_alone():
    """The latents' noise too, not only the dequantization's: as sample() with a generator."""
    model = _latents_matter()
    x = torch.randint(0, 256, (4, 2, 4, 4), dtype=torch.uint8)
    state = torch.get_rng_state()
    with torch.no_grad():
        a, b, c = (model.log_likelihood(x, generator=torch.Generator().manual_seed(s))["bpd"] for s in (5, 5, 6))
        k = [model.log_likelihood(x, generator=torch.Generator().manual_seed(5), importance_samples=3)["bpd"]
             for _ in range(2)]
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(k[0], k[1])
    assert torch.equal(torch.get_rng_state(), state)


def test_mean_bpd_is_deterministic_and_leaves_the_global_rng_alone():
    model = _latents_matter()
    x = torch.randint(0, 256, (6, 2, 4, 4), dtype=torch.uint8)
    batches = [(x[:3], torch.zeros(3)), (x[3:], torch.zeros(3))]
    state = torch.get_rng_state()
    first = model.mean_bpd(batches)
    assert model.mean_bpd(batches) == first
    assert torch.equal(torch.get_rng_state(), state)


def test_the_importance_weighted_bpd_runs_about_one_batch_of_images_at_a_time(monkeypatch):
    # k samples of each image: a batch of B images goes through in parts of B // k, not as k * B images at once
    model = _analytic_model(0.05, "identity")
    x = torch.randint(0, 256, (16, 2, 4, 4), dtype=torch.uint8)
    seen = []
    run = model.bound
    monkeypatch.setattr(model, "bound", lambda xs, *a: seen.append(len(xs)) or run(xs, *a))
    model.mean_bpd([(x, torch.zeros(16))], importance_samples=4)
    assert seen == [4, 4, 4, 4]
    seen.clear()
    model.mean_bpd([(x[:3], torch.zeros(3))], importance_samples=100)  # at least one image per part
    assert seen == [1, 1, 1]
    seen.clear()
    model.mean_bpd([(x, torch.zeros(16))])  # k = 1: the batch as it is
    assert seen == [16]


def test_discretized_logistic_samples_are_dequantized_within_their_bin():
    # The critic sees real images as x + U[0, 1): generated ones must not all sit at their bin's centre.
    mean = torch.linspace(-1.2, 1.2, 4096).view(1, 1, 64, 64)
    log_scale = torch.full((1, 1, 1), -3.0)
    u = sample_discretized_logistic(mean, log_scale, torch.Generator().manual_seed(0))
    noise = torch.rand(mean.shape, generator=torch.Generator().manual_seed(0)).clamp(1e-5, 1 - 1e-5)
    bins = ((mean + log_scale.exp() * (noise.log() - (-noise).log1p())).clamp(-1, 1) + 1.0) * 127.5
    bins = bins.round()
    assert torch.equal(u.floor(), bins)  # the sampled bin, also at 0 and 255
    assert torch.equal(to_uint8(u), bins.to(torch.uint8))
    assert {0.0, 255.0} <= set(bins.unique().tolist())
    frac = u - bins
    assert 0.27 < float(frac.std()) < 0.31  # U[0, 1): std 1/sqrt(12) = 0.289


@pytest.mark.parametrize("k", [1, 3])
def test_importance_weighted_bound_is_the_log_mean_exp_of_the_weights(k):
    # An independent recomputation from the terms the top-down pass returned: log p(x) >= log (1/k) sum_i w_i
    # with w_i = p(f(x)|z_i) p(z_i) / q(z_i|x), plus the preprocessing and flow log-determinant.
    model = _latents_matter()
    seen = []
    top_down = model._top_down
    model._top_down = lambda *a: seen.append(top_down(*a)) or seen[-1]
    x = torch.randint(0, 256, (4, 2, 4, 4), dtype=torch.uint8)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        out = model.log_likelihood(x, generator=gen, importance_samples=k)
    (mean, log_q, log_p), = seen
    assert float((log_q - log_p).abs().max()) > 1e-2  # the latents matter: the weights differ
    gen = torch.Generator().manual_seed(7)
    torch.randint(0, 2**62, (1,), generator=gen)  # the latents' seed is drawn first, then the dequantization
    u = x.float() + torch.rand(x.shape, generator=gen)
    with torch.no_grad():
        feat, logdet = model.features(u)
    log_w = (gaussian_log_prob(feat.repeat(k, 1, 1, 1), mean, model.log_sigma) + log_p - log_q).view(k, 4).double()
    expected = torch.logsumexp(log_w, 0) - math.log(k) + logdet.double()
    torch.testing.assert_close(out["log_px"].double(), expected, rtol=0, atol=1e-4)
    torch.testing.assert_close(out["bpd"].double(), -expected / (32 * math.log(2.0)), rtol=0, atol=1e-5)
    torch.testing.assert_close(out["kl"].double(), (log_q - log_p).view(k, 4).mean(0).double(), rtol=0, atol=1e-5)


def test_decode_prior_follows_the_temperature_it_is_given():
    # Temperature 0 decodes the prior means (deterministic); the model's own temperature is the default.
    model = _latents_matter()
    with torch.no_grad():
        model.decoder.out.layer.weight.normal_(0.0, 0.5)  # the decoder mean depends on z
    model.temperature = 1.0
    with torch.no_grad():
        cold = [model.decode_prior(3, temperature=0.0) for _ in range(2)]
        warm = [model.decode_prior(3) for _ in range(2)]
        torch.testing.assert_close(cold[0], cold[1], rtol=0, atol=0)
        assert not torch.allclose(warm[0], warm[1])
        model.temperature = 0.0
        assert not torch.allclose(model.decode_prior(3, temperature=1.0), model.decode_prior(3, temperature=1.0))
        torch.testing.assert_close(model.decode_prior(3), cold[0], rtol=0, atol=0)


def test_discretized_logistic_far_from_the_mean_uses_the_bin_width_density():
    # Where the bin's probability is below 1e-5 the density at the bin centre times the bin width (2/255 on
    # [-1, 1]) stands in for it: it must still be close to the exact probability (computed here in float64 from
    # the upper tails, no cancellation).
    x = torch.tensor([200, 230, 250], dtype=torch.uint8).view(1, 3, 1, 1)
    mean = torch.full((1, 3, 1, 1), -0.2)
    log_scale = torch.full((3, 1, 1), -3.0)
    lp = discretized_logistic_log_prob(x, mean, log_scale)
    c = x.double() / 127.5 - 1.0
    s = math.exp(-3.0)
    exact = torch.log(torch.sigmoid(-(c - 1 / 255 + 0.2) / s) - torch.sigmoid(-(c + 1 / 255 + 0.2) / s))
    assert float(exact.exp().max()) < 1e-5  # the fallback's regime
    torch.testing.assert_close(lp.double(), exact.flatten(1).sum(1), rtol=0, atol=2e-2)  # log 2 per pixel shows


@pytest.mark.parametrize("flow", ["realnvp", "glow"])
def test_feature_logdet_counts_the_preprocessing_and_the_flow(flow):
    # log|det d f(preprocess(u)) / du| from the full Jacobian: the flow's share must be in the bound too.
    recipe = recipe_from_dict({
        "name": "flow-logdet",
        "model": {"variant": "v-ade", "flow": {"name": flow, "scales": 1, "hidden": 4},
                  "encoder": {"name": "conv", "channels": [4]},
                  "posterior": {"name": "diagonal", "latent_channels": 2, "norm": "none"},
                  "decoder": {"name": "conv", "norm": "none"}},
        "data": {"name": "synthetic", "resolution": 4, "channels": 1},
    })
    model = build_model(recipe, (2, 4, 4)).double()
    with torch.no_grad():
        for p in model.flow.parameters():
            p.add_(0.1 * torch.randn_like(p))  # off the identity
    model.eval()
    u = torch.rand(1, 2, 4, 4, dtype=torch.float64) * 250 + 3
    _, logdet = model.features(u)
    jac = torch.autograd.functional.jacobian(lambda v: model.features(v.view_as(u))[0].flatten(), u.flatten())
    brute = torch.linalg.slogdet(jac)[1]
    assert abs(float(model.preprocess(u)[1][0]) - float(brute)) > 0.1  # the flow changes the volume
    assert float(logdet[0]) == pytest.approx(float(brute), abs=1e-3)  # the flow runs in float32


def test_to_unit_maps_the_dequantized_range_onto_minus_one_to_one():
    # The discriminator sees real and generated images in [-1, 1): u = 0 -> -1, u = 128 -> 0, u -> 256 gives 1.
    torch.testing.assert_close(to_unit(torch.tensor([0.0, 128.0, 256.0])), torch.tensor([-1.0, 0.0, 1.0]),
                               rtol=0, atol=0)


def test_the_bounds_approach_the_exact_likelihood_of_a_one_dimensional_latent():
    # One latent dimension (1 channel at the 1x1 top stage): log p(u) = log int N(y; mu(c), sigma^2) N(c; 0, 1) dc
    # + D log(2 / 256) by quadrature, its constants computed here (y = 2 u / 256 - 1). The ELBO lies below it on
    # average and the k-sample importance-weighted bound reaches it as k grows (Burda et al. 2016).
    torch.manual_seed(0)
    recipe = recipe_from_dict(
        {
            "name": "one-latent",
            "model": {
                "variant": "vae",
                "logit_alpha": 0.0,
                "encoder": {"name": "conv", "channels": [4, 4, 4], "norm": "none"},
                "posterior": {"name": "diagonal", "latent_channels": 1, "norm": "none"},
                "decoder": {"name": "conv", "norm": "none"},
            },
            "data": {"name": "synthetic", "resolution": 4, "channels": 1},
        }
    )
    model = build_model(recipe, (1, 4, 4)).double().eval()
    group = model.posterior.group(2)
    assert model.posterior.latent_shape(2) == (1, 1, 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
        # q = p = N(0, 1): weights p(u|z) are bounded, so the importance-weighted bound converges fast
        for p in group.posterior.parameters():
            p.zero_()
        group.prior.scale.zero_()
        group.merge.layer.weight.mul_(5.0)  # the decoder mean depends strongly on z: the ELBO is loose
        model.log_sigma.fill_(math.log(0.3))
    x = torch.randint(0, 256, (3, 1, 4, 4), dtype=torch.uint8)
    u = x.double() + torch.rand(x.shape, dtype=torch.float64)
    with torch.no_grad():
        c = torch.linspace(-12, 12, 12001, dtype=torch.float64)
        d = model.posterior.decode_stage(2, model.decoder.initial_state(c.numel()), c.view(-1, 1, 1, 1))
        for i in (2, 1, 0):
            d = model.decoder.forward_stage(i, d, None)
        density = torch.distributions.Normal(model.decoder.head(d, None), 0.3)
        y = 2 * u / 256 - 1
        log_lik = torch.stack([density.log_prob(y[b]).flatten(1).sum(1) for b in range(3)])
        log_prior = -0.5 * c.square() - 0.5 * math.log(2 * math.pi)
        exact = torch.logsumexp(log_lik + log_prior, 1) + math.log(float(c[1] - c[0])) + 16 * math.log(2 / 256)

        n = 400
        elbo = model.bound_dequantized(u.repeat(n, 1, 1, 1), x.repeat(n, 1, 1, 1), None)
        torch.testing.assert_close(elbo["bpd"], -elbo["log_px"] / (16 * math.log(2.0)), rtol=0, atol=1e-12)
        draws = elbo["log_px"].view(n, 3)
        gap = exact - draws.mean(0)
        assert (gap > -3 * draws.std(0) / n**0.5).all()  # E[ELBO] <= log p(u)
        assert float(gap.sum()) > 0.5  # ... and the latent matters: the ELBO is loose
        iw = model.bound_dequantized(u, x, None, importance_samples=4000)["log_px"]
    torch.testing.assert_close(iw, exact, rtol=0, atol=0.1)
    assert (iw > draws.mean(0)).all()
