"""Top-down hierarchical latents: stage ids, what the loop accumulates, top-down conditioning."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Normal

import avade
from avade.errors import ConfigError

STAGES = [(4, 8, 8), (6, 4, 4), (8, 2, 2)]


def make(**opts):
    return avade.create("posterior", "topdown", stage_shapes=STAGES, latent_channels=3, iaf_hidden=6, **opts)


def test_stage_ids() -> None:
    assert make().stage_ids == [0, 1, 2]
    assert make(groups=2).stage_ids == [1, 2]
    assert sorted(make(groups=2).groups.keys()) == ["1", "2"]
    assert make(groups=1).stage_ids == [2]
    with pytest.raises(ConfigError, match="groups"):
        make(groups=4)
    with pytest.raises(ConfigError, match="groups"):
        make(groups=0)


@pytest.mark.parametrize("iaf_steps", [0, 1])
@pytest.mark.parametrize("groups", [None, 2])
def test_loop_accumulates_the_sum_over_groups(iaf_steps: int, groups: int | None) -> None:
    torch.manual_seed(0)
    post = make(groups=groups, iaf_steps=iaf_steps)
    dec = avade.create("decoder", "conv", stage_shapes=STAGES, out_shape=(3, 8, 8))
    hs = [torch.randn(2, *s) for s in STAGES]

    # The model's loop, with forward_stage.
    torch.manual_seed(1)
    d, total, calls = dec.initial_state(2), torch.zeros(2), []
    for i in reversed(range(len(STAGES))):
        if i in post.stage_ids:
            d, lq, lp = post.forward_stage(i, d, hs[i])
            total, calls = total + lq - lp, [*calls, i]
        d = dec.forward_stage(i, d)
    assert calls == sorted(post.stage_ids, reverse=True)

    # The same pass group by group with the same noise, checking each group's densities directly.
    torch.manual_seed(1)
    d, by_group = dec.initial_state(2), []
    for i in reversed(range(len(STAGES))):
        if i in post.stage_ids:
            group = post.group(i)
            eps = torch.randn(2, *post.latent_shape(i))
            s = post.sample(i, d, hs[i], noise=eps)
            mu_p, log_sigma_p = group.prior_params(d)
            p = Normal(mu_p, log_sigma_p.exp())
            torch.testing.assert_close(s.log_p, p.log_prob(s.z).flatten(1).sum(1))
            if not iaf_steps:
                mu_q, log_sigma_q, _ = group.posterior_params(d, hs[i])
                q = Normal(mu_q, log_sigma_q.exp())
                torch.testing.assert_close(s.log_q, q.log_prob(s.z).flatten(1).sum(1))
            by_group.append(s.log_q - s.log_p)
            d = d + group.merge(s.z)
        d = dec.forward_stage(i, d)
    assert len(by_group) == len(post.stage_ids)
    torch.testing.assert_close(sum(by_group), total)


def test_lower_priors_depend_on_the_latents_above() -> None:
    torch.manual_seed(2)
    post = make()
    dec = avade.create("decoder", "conv", stage_shapes=STAGES, out_shape=(3, 8, 8))
    noise = {i: torch.randn(1, *post.latent_shape(i)) for i in post.stage_ids}

    def bottom_prior(top_noise: torch.Tensor) -> torch.Tensor:
        d = dec.initial_state(1)
        for i in (2, 1):
            s = post.sample(i, d, None, noise=top_noise if i == 2 else noise[i])
            d = dec.forward_stage(i, d + post.group(i).merge(s.z))
        post.group(0).prior.scale.data.fill_(1.0)  # leave the N(0, I) init
        return torch.cat(post.group(0).prior_params(d))

    with torch.no_grad():
        a, b = bottom_prior(noise[2]), bottom_prior(noise[2] + 1.0)
        c = bottom_prior(noise[2])
    assert not torch.allclose(a, b)
    torch.testing.assert_close(a, c)


def test_analytic_kl_matches_the_estimate_on_average() -> None:
    torch.manual_seed(3)
    post = make(groups=1)
    d, h = torch.randn(1, 8, 2, 2).expand(4000, -1, -1, -1), torch.randn(1, 8, 2, 2).expand(4000, -1, -1, -1)
    with torch.no_grad():
        post.group(2).prior.scale.normal_(0, 0.5)
        _, lq, lp = post.forward_stage(2, d, h)
        kl = post.analytic_kl(2, d[:1], h[:1])
    est = lq - lp
    assert abs(est.mean() - kl[0]) < 5 * est.std() / 4000**0.5
