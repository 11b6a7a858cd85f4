"""The diagonal Gaussian latent group: KL estimate vs closed form, prior sampling, learned prior init."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Normal, kl_divergence

import avade
from avade.errors import ConfigError
from avade.posteriors.gaussian import soft_clamp

STAGES = [(3, 4, 4), (3, 2, 2)]
MU_P, S_P = torch.tensor([0.5, -1.0]), torch.tensor([0.3, -0.2])
MU_Q, S_Q = torch.tensor([1.0, 0.2]), torch.tensor([-0.5, 0.4])


def fixed_posterior(residual: bool):
    """A diagonal posterior whose convs output constants (norm 'none', zero weights, chosen biases)."""
    post = avade.create("posterior", "diagonal", stage_shapes=STAGES, latent_channels=2, norm="none",
                        residual=residual)
    group = post.group(1)
    with torch.no_grad():
        group.prior.scale.fill_(1.0)
        group.prior.layer.layer.weight.zero_()
        group.prior.layer.layer.bias.copy_(torch.cat([MU_P, S_P]))
        group.posterior.layer.weight.zero_()
        group.posterior.layer.bias.copy_(torch.cat([MU_Q, S_Q]))
    return post


def expected(residual: bool) -> tuple[Normal, Normal]:
    """q and p per channel, computed from the constants independently of the module."""
    log_sigma_p = soft_clamp(S_P)
    if residual:
        mu_q, log_sigma_q = MU_P + MU_Q, soft_clamp(log_sigma_p + S_Q)
    else:
        mu_q, log_sigma_q = MU_Q, soft_clamp(S_Q)
    shape = (1, 2, 1, 1)
    return (Normal(mu_q.view(shape), log_sigma_q.exp().view(shape)),
            Normal(MU_P.view(shape), log_sigma_p.exp().view(shape)))


@pytest.mark.parametrize("residual", [False, True])
def test_single_sample_kl_matches_closed_form(residual: bool) -> None:
    torch.manual_seed(0)
    post = fixed_posterior(residual)
    assert post.stage_ids == [1]
    q, p = expected(residual)
    kl = kl_divergence(q, p).expand(1, 2, 2, 2).sum()  # 2 channels x 2 x 2 positions
    n = 20000
    d, h = torch.randn(n, 3, 2, 2), torch.randn(n, 3, 2, 2)  # ignored by the constant convs
    with torch.no_grad():
        _, log_q, log_p = post.forward_stage(1, d, h)
        estimate = log_q - log_p
        analytic = post.analytic_kl(1, d[:4], h[:4])
    stderr = estimate.std() / n**0.5
    assert abs(estimate.mean() - kl) < 5 * stderr, (estimate.mean(), kl)
    torch.testing.assert_close(analytic, kl.expand(4), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("residual", [False, True])
def test_log_densities_are_those_of_the_sample(residual: bool) -> None:
    torch.manual_seed(1)
    post = fixed_posterior(residual)
    q, p = expected(residual)
    d, h = torch.randn(5, 3, 2, 2), torch.randn(5, 3, 2, 2)
    s = post.sample(1, d, h)
    assert s.z.shape == (5, *post.latent_shape(1))
    torch.testing.assert_close(s.log_q, q.log_prob(s.z).flatten(1).sum(1))
    torch.testing.assert_close(s.log_p, p.log_prob(s.z).flatten(1).sum(1))


@pytest.mark.parametrize("residual", [False, True])
def test_the_sampled_kl_gradient_is_reparameterised_and_unbiased(residual: bool) -> None:
    # z = mu_q + sigma_q eps carries the gradient (no score-function term, no stop-gradient): the gradient of the
    # single-sample log q(z) - log p(z) averages to the gradient of the closed-form KL, for q's and p's parameters.
    torch.manual_seed(5)
    post = fixed_posterior(residual).double().train()
    group = post.group(1)
    params = [group.posterior.layer.bias, group.prior.layer.layer.bias, group.prior.scale]
    n = 20000
    d, h = torch.randn(n, 3, 2, 2, dtype=torch.float64), torch.randn(n, 3, 2, 2, dtype=torch.float64)
    _, log_q, log_p = post.forward_stage(1, d, h)
    sampled = torch.autograd.grad((log_q - log_p).mean(), params)
    closed = torch.autograd.grad(post.analytic_kl(1, d[:1], h[:1]).sum(), params)
    for s, c in zip(sampled, closed, strict=True):
        assert c.abs().max() > 0.1
        torch.testing.assert_close(s, c, rtol=0, atol=0.05 * float(c.abs().max()))


@pytest.mark.parametrize("temperature", [1.0, 0.5, 0.0])
def test_prior_sampling_follows_the_tempered_prior(temperature: float) -> None:
    torch.manual_seed(2)
    post = fixed_posterior(False)
    _, p = expected(False)
    n = 20000
    d = torch.randn(n, 3, 2, 2)
    with torch.no_grad():
        s = post.sample(1, d, None, temperature)
        d_new, log_q, _ = post.forward_stage(1, d, None, temperature)
    assert (log_q == 0).all() and (s.log_q == 0).all() and d_new.shape == d.shape
    torch.testing.assert_close(s.log_p, p.log_prob(s.z).flatten(1).sum(1))
    mean = s.z.mean((0, 2, 3))
    std = s.z.std((0, 2, 3))
    torch.testing.assert_close(mean, MU_P, atol=0.03, rtol=0)
    torch.testing.assert_close(std, temperature * p.scale.flatten(), atol=0.02, rtol=0.02)


def test_learned_prior_starts_at_standard_normal() -> None:
    torch.manual_seed(3)
    post = avade.create("posterior", "diagonal", stage_shapes=STAGES, latent_channels=4)
    mu, log_sigma = post.group(1).prior_params(torch.randn(3, 3, 2, 2))
    assert (mu == 0).all() and (log_sigma == 0).all()
    assert post.latent_shape(1) == (4, 2, 2)


def test_merge_changes_state_and_wrong_stage_is_refused() -> None:
    torch.manual_seed(4)
    post = avade.create("posterior", "diagonal", stage_shapes=STAGES, latent_channels=4)
    d = torch.randn(2, 3, 2, 2)
    d_new, _, _ = post.forward_stage(1, d, torch.randn(2, 3, 2, 2))
    assert d_new.shape == d.shape and not torch.allclose(d_new, d)
    with pytest.raises(ValueError, match="stage 0"):
        post.forward_stage(0, torch.randn(2, 3, 4, 4), None)


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="latent_channels"):
        avade.create("posterior", "diagonal", stage_shapes=STAGES, latent_channels=0)
    with pytest.raises(ConfigError, match="iaf_kernel"):
        avade.create("posterior", "iaf", stage_shapes=STAGES, iaf_kernel=2)
    with pytest.raises(ConfigError, match="stage_shapes"):
        avade.create("posterior", "diagonal", stage_shapes=[])
