"""``kl = "analytic"``: in a training pass with gradients the KL term is the closed form KL(q || p) (value and
gradient), the sample still feeds the decoder; evaluation and IAF posteriors keep the sampled terms."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Normal, kl_divergence

import avade
from avade.errors import ConfigError
from avade.posteriors.gaussian import standard_log_prob

STAGES = [(4, 4, 4), (4, 2, 2)]


def _posterior(name: str = "topdown", **options):
    torch.manual_seed(0)
    return avade.create("posterior", name, stage_shapes=STAGES, latent_channels=3, **options)


def _closed_form(post, i: int, d: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    group = post.group(i)
    mu_p, log_sigma_p = group.prior_params(d)
    mu_q, log_sigma_q, _ = group.posterior_params(d, h)
    return kl_divergence(Normal(mu_q, log_sigma_q.exp()), Normal(mu_p, log_sigma_p.exp())).flatten(1).sum(1)


@pytest.mark.parametrize("name", ["topdown", "diagonal"])
@pytest.mark.parametrize("free_bits", [0.0, 0.5])
def test_training_uses_the_closed_form_kl_value_and_gradient(name: str, free_bits: float) -> None:
    post = _posterior(name, kl="analytic", free_bits=free_bits).train()
    i = post.stage_ids[-1]
    d, h = torch.randn(8, *STAGES[i]), torch.randn(8, *STAGES[i])
    torch.manual_seed(1)
    d_new, lq, lp = post.forward_stage(i, d, h)
    expected = _closed_form(post, i, d, h)
    torch.testing.assert_close(lq - lp, expected)
    params = [p for p in post.group(i).posterior.parameters() if p.requires_grad]
    got = torch.autograd.grad((lq - lp).sum(), params, retain_graph=True)
    want = torch.autograd.grad(expected.sum(), params)
    if not free_bits:  # free bits drops some channels' KL gradient on purpose (tests/.../free_bits)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w)
    # the sample itself is the reparametrised one: the same noise as the sampled-KL posterior draws
    plain = _posterior(name).train()
    plain.load_state_dict(post.state_dict())
    torch.manual_seed(1)
    d_plain, lq_plain, lp_plain = plain.forward_stage(i, d, h)
    torch.testing.assert_close(d_new, d_plain)
    torch.testing.assert_close(lp, lp_plain)
    assert not torch.allclose(lq - lp, lq_plain - lp_plain)  # a single-sample estimate differs


def test_evaluation_keeps_the_sampled_terms() -> None:
    post = _posterior(kl="analytic").eval()
    i = post.stage_ids[-1]
    d, h = torch.randn(8, *STAGES[i]), torch.randn(8, *STAGES[i])
    group = post.group(i)
    torch.manual_seed(1)
    with torch.no_grad():
        _, lq, _ = post.forward_stage(i, d, h)
        _, log_sigma_q, _ = group.posterior_params(d, h)
    torch.manual_seed(1)
    eps = torch.randn(8, 3, *STAGES[i][1:])
    torch.testing.assert_close(lq, standard_log_prob(eps, log_sigma_q))


def test_iaf_has_no_closed_form() -> None:
    with pytest.raises(ConfigError, match="no closed form"):
        _posterior(kl="analytic", iaf_steps=1)
    with pytest.raises(ConfigError):
        _posterior("iaf", kl="analytic")  # the IAF posterior has no such option


def test_a_recipe_trains_with_it_and_refuses_it_with_iaf(tmp_path) -> None:
    from tiny_recipes import tiny_recipe

    from avade.train.trainer import Trainer

    trainer = Trainer(tiny_recipe('model.posterior.kl="analytic"', "train.steps=2"), tmp_path / "run",
                      progress=False)
    summary = trainer.fit()
    assert summary["steps"] == 2 and torch.isfinite(torch.tensor(summary["bpd"]))
    with pytest.raises(ConfigError, match=r"model\.posterior\.kl") as err:
        tiny_recipe('model.posterior.kl="analytic"', "model.posterior.iaf_steps=1")
    assert "no closed form" in str(err.value)


@pytest.mark.parametrize("kl", ["analytic", "sample"])
def test_a_k_sample_bound_in_a_training_pass_refuses_the_analytic_kl(kl: str) -> None:
    """Its training pass reports log q = log p + KL (no density of the sample): a k-sample bound of that is no
    bound (it read ~17 nats looser than the same weights' in eval mode). Refused; eval mode or no_grad works."""
    from tiny_recipes import tiny_recipe

    from avade.models.build import build_model

    recipe = tiny_recipe(f'model.posterior.kl="{kl}"')
    model = build_model(recipe, (3, 8, 8)).train()
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    model.log_likelihood(x)  # (one sample: the closed form is right; also initialises the data-dependent norms)
    if kl == "analytic":
        with pytest.raises(ConfigError, match=r'importance_samples = 3 in a training pass needs the posterior\'s '
                                              r'kl = "sample"'):
            model.log_likelihood(x, importance_samples=3)
    else:
        assert torch.isfinite(model.log_likelihood(x, importance_samples=3)["bpd"]).all()
    with torch.no_grad():
        assert torch.isfinite(model.log_likelihood(x, importance_samples=3)["bpd"]).all()
    assert torch.isfinite(model.eval().log_likelihood(x, importance_samples=3)["bpd"]).all()
