"""Free bits (Kingma et al. 2016; openai/iaf's ``kl_min``): the KL gradient of a latent channel whose
batch-average KL is below the threshold is dropped, as for ``sum_c max(KL_c, free_bits)``; values unchanged."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Normal

import avade
from avade.errors import ConfigError

STAGES = [(3, 4, 4), (3, 2, 2)]
# Channel 0: q far from p (KL ~ 2.5 nats over its 4 positions); channel 1: q close to p (~ 0.05 nats).
PRIOR, POSTERIOR = torch.tensor([0.5, -1.0, 0.3, -0.2]), torch.tensor([1.5, -0.95, -0.2, -0.15])
FREE_BITS = 1.0


def fixed(free_bits: float, residual: bool = False):
    """A diagonal posterior whose convs output constants (norm 'none', zero weights, chosen biases)."""
    post = avade.create("posterior", "diagonal", stage_shapes=STAGES, latent_channels=2, norm="none",
                        residual=residual, free_bits=free_bits)
    group = post.group(1)
    with torch.no_grad():
        group.prior.scale.fill_(1.0)
        group.prior.layer.layer.weight.zero_()
        group.prior.layer.layer.bias.copy_(PRIOR)
        group.posterior.layer.weight.zero_()
        group.posterior.layer.bias.copy_(POSTERIOR if not residual else POSTERIOR - PRIOR)
    return post


def biases(post) -> list[torch.Tensor]:
    group = post.group(1)
    return [group.prior.layer.layer.bias, group.posterior.layer.bias]


@pytest.mark.parametrize("residual", [False, True])
def test_gradient_is_that_of_the_free_bits_objective(residual: bool) -> None:
    d, h = torch.randn(256, 3, 2, 2), torch.randn(256, 3, 2, 2)
    post, plain = fixed(FREE_BITS, residual).train(), fixed(0.0, residual).train()

    torch.manual_seed(0)
    _, lq, lp = post.forward_stage(1, d, h)
    grads = torch.autograd.grad((lq - lp).mean(), biases(post))

    # Reference, from the plain module's own densities of the same sample: sum_c max(mean_b KL_bc, lambda).
    torch.manual_seed(0)
    s = plain.sample(1, d, h)
    group = plain.group(1)
    mu_p, log_sigma_p = group.prior_params(d)
    mu_q, log_sigma_q, _ = group.posterior_params(d, h)
    kl = Normal(mu_q, log_sigma_q.exp()).log_prob(s.z) - Normal(mu_p, log_sigma_p.exp()).log_prob(s.z)
    per_channel = kl.sum((2, 3)).mean(0)
    assert per_channel[0] > FREE_BITS > per_channel[1]  # the case the constants were chosen for
    reference = torch.autograd.grad(per_channel.clamp_min(FREE_BITS).sum(), biases(plain))
    for g, r in zip(grads, reference, strict=True):
        torch.testing.assert_close(g, r)
    # Channel 1 (below the threshold) gets no gradient from the KL, channel 0 does.
    assert grads[1][[1, 3]].abs().max() == 0 and grads[1][[0, 2]].abs().min() > 0
    # The values, hence the reported bound, are those without free bits.
    torch.manual_seed(0)
    _, lq0, lp0 = plain.forward_stage(1, d, h)
    torch.testing.assert_close(lq, lq0, rtol=0, atol=0)
    torch.testing.assert_close(lp, lp0, rtol=0, atol=0)


def test_no_effect_in_evaluation_or_without_gradients() -> None:
    d, h = torch.randn(64, 3, 2, 2), torch.randn(64, 3, 2, 2)
    post, plain = fixed(FREE_BITS).eval(), fixed(0.0).eval()
    out = []
    for m in (post, plain):
        torch.manual_seed(1)
        _, lq, lp = m.forward_stage(1, d, h)
        out.append(torch.autograd.grad((lq - lp).mean(), biases(m)))
    for g, r in zip(*out, strict=True):
        torch.testing.assert_close(g, r)


def test_elementwise_densities_sum_to_the_sample_densities_with_iaf() -> None:
    torch.manual_seed(2)
    post = avade.create("posterior", "topdown", stage_shapes=STAGES, latent_channels=3, iaf_steps=2,
                        iaf_hidden=6, free_bits=0.5)
    group = post.group(1)
    d, h, eps = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)
    s = group.sample(d, h, noise=eps)
    e = group._draw(d, h, 1.0, eps, elementwise=True)
    assert e.log_q.shape == e.z.shape == e.log_p.shape
    torch.testing.assert_close(e.z, s.z)
    torch.testing.assert_close(e.log_q.flatten(1).sum(1), s.log_q)
    torch.testing.assert_close(e.log_p.flatten(1).sum(1), s.log_p)
    post.train()
    torch.manual_seed(3)
    _, lq, lp = post.forward_stage(1, d, h)
    (lq - lp).sum().backward()  # the free-bits path runs through the flow
    assert all(p.grad is not None for p in group.flow.parameters())


def test_free_bits_config() -> None:
    assert avade.create("posterior", "topdown", stage_shapes=STAGES).group(0).free_bits == 0.0  # off by default
    with pytest.raises(ConfigError, match="free_bits"):
        avade.create("posterior", "iaf", stage_shapes=STAGES, free_bits=-0.1)
