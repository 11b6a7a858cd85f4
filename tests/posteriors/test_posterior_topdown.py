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


def _model(iaf_steps: int = 0):
    from avade.models.generative import GenerativeModel
    from avade.models.preprocess import Preprocess

    enc = avade.create("encoder", "conv", in_shape=(3, 8, 8), channels=[s[0] for s in STAGES])
    return GenerativeModel(variant="vae", data_shape=(3, 8, 8), preprocess=Preprocess(0.0, logit=False),
                           flow=None, encoder=enc, posterior=make(iaf_steps=iaf_steps),
                           decoder=avade.create("decoder", "conv", stage_shapes=STAGES, out_shape=(3, 8, 8)))


def _record_groups(post) -> tuple[list, list]:
    """Hooks recording, per call of each group, its inputs ``(i, d, h)`` and the sampled ``z``."""
    inputs, zs = [], []
    for i in post.stage_ids:
        group = post.group(i)
        group.register_forward_pre_hook(lambda _m, args, i=i: inputs.append((i, args[0], args[1])))
        group.merge.register_forward_pre_hook(lambda _m, args: zs.append(args[0]))
    return inputs, zs


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_prior_samples_through_the_model_have_the_priors_moments(temperature: float) -> None:
    """Generation (the model's top-down pass, h = None): every group's z_i is mu_p(d) + T sigma_p(d) eps
    given the state above it, and log_p is the untempered prior's density of that z."""
    torch.manual_seed(4)
    model = _model()
    post = model.posterior
    n = 6000
    with torch.no_grad():
        _, lq0, _ = model._top_down(n, None, None, temperature)  # at init every prior is N(0, I)
        assert (lq0 == 0).all()
        for i in post.stage_ids:
            post.group(i).prior.scale.normal_(0, 0.5)  # priors now depend on the latents above
        inputs, zs = _record_groups(post)
        _, log_q, log_p = model._top_down(n, None, None, temperature)
    assert [i for i, _, _ in inputs] == [2, 1, 0] and all(h is None for _, _, h in inputs)
    total = torch.zeros(n)
    for (i, d, _), z in zip(inputs, zs, strict=True):
        mu_p, log_sigma_p = post.group(i).prior_params(d)
        if i != 2:  # the top prior reads the learned constant; the lower ones the samples above
            assert mu_p.std(0).mean() > 0.01
        std_resid = (z - mu_p) / log_sigma_p.exp()
        assert abs(float(std_resid.mean())) < 0.01
        assert float(std_resid.std()) == pytest.approx(temperature, rel=0.01)
        total += Normal(mu_p, log_sigma_p.exp()).log_prob(z).flatten(1).sum(1)
    assert (log_q == 0).all()
    torch.testing.assert_close(log_p, total)


def test_model_kl_is_the_sum_of_per_group_kls() -> None:
    """The model's single-sample KL averages to the sum over groups of each group's closed-form KL
    given the state above it (E[log q - log p] = sum_i E[KL_i])."""
    torch.manual_seed(6)
    model = _model()
    post = model.posterior
    n = 4000
    x = torch.randint(0, 256, (1, 3, 8, 8), dtype=torch.uint8).expand(n, -1, -1, -1)
    with torch.no_grad():
        for i in post.stage_ids:
            post.group(i).prior.scale.normal_(0, 0.5)
        inputs, _ = _record_groups(post)
        out = model.log_likelihood(x)
        per_group = [post.analytic_kl(i, d, h) for i, d, h in inputs]
    assert len(per_group) == 3 and all((k > 0).all() for k in per_group)
    diff = out["kl"] - sum(per_group)
    assert abs(float(diff.mean())) < 5 * float(diff.std()) / n**0.5
    torch.testing.assert_close(out["log_px"], out["recon"] - out["kl"] + out["logdet"])
