"""IAF: triangular Jacobians under the documented ordering, and log q = log N(z0) - log|det dz_T/dz0|."""

from __future__ import annotations

import pytest
import torch
from tiny_recipes import tiny_recipe
from torch.autograd.functional import jacobian
from torch.distributions import Normal

import avade
from avade.posteriors.flow import IAFFlow, IAFStep

Z, H, W, CTX = 3, 3, 3, 4


def ordering(reverse: bool) -> torch.Tensor:
    """Permutation sorting the flat (C, H, W) indices by (raster position, channel rank)."""
    c, r, x = torch.meshgrid(torch.arange(Z), torch.arange(H), torch.arange(W), indexing="ij")
    rank = (Z - 1 - c) if reverse else c
    key = ((r * W + x) * Z + rank).flatten()
    return torch.argsort(key)


def step_jacobian(step: torch.nn.Module, z0: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
    return jacobian(lambda v: step(v.view(1, Z, H, W), ctx)[0].flatten(), z0.flatten())


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_step_jacobian_is_triangular(kernel: int, reverse: bool) -> None:
    torch.manual_seed(0)
    step = IAFStep(Z, 8, CTX, kernel, reverse=reverse).double()
    z0, ctx = torch.randn(1, Z, H, W, dtype=torch.float64), torch.randn(1, CTX, H, W, dtype=torch.float64)
    jac = step_jacobian(step, z0, ctx)
    perm = ordering(reverse)
    ordered = jac[perm][:, perm]
    assert torch.triu(ordered, diagonal=1).abs().max() == 0, "output depends on a later input"
    _, logdet = step(z0, ctx)
    sign, logabs = torch.linalg.slogdet(jac)
    assert sign > 0
    torch.testing.assert_close(logdet[0], logabs)
    torch.testing.assert_close(logdet[0], ordered.diagonal().log().sum())
    # The structure is really used: dependence on earlier channels, and across positions iff kernel > 1.
    strictly_lower = torch.tril(ordered, diagonal=-1)
    assert strictly_lower.abs().max() > 1e-6
    same_pixel = (perm.view(-1, 1) % (H * W)) == (perm.view(1, -1) % (H * W))
    cross_pixel = ordered.masked_fill(same_pixel, 0).abs().max()
    assert (cross_pixel > 1e-6) if kernel > 1 else (cross_pixel == 0)


def test_two_step_log_determinant() -> None:
    torch.manual_seed(1)
    flow = IAFFlow(Z, 8, CTX, steps=2, kernel=3).double()
    z0, ctx = torch.randn(1, Z, H, W, dtype=torch.float64), torch.randn(1, CTX, H, W, dtype=torch.float64)
    jac = jacobian(lambda v: flow(v.view(1, Z, H, W), ctx)[0].flatten(), z0.flatten())
    _, logdet = flow(z0, ctx)
    torch.testing.assert_close(logdet[0], torch.linalg.slogdet(jac)[1])



def test_steps_alternate_the_channel_order() -> None:
    # Step 2 reverses step 1's channel order, so after two steps the first channel depends on the last (and
    # the last on the first): with one order throughout, the channels would stay triangular for good.
    torch.manual_seed(2)
    flow = IAFFlow(Z, 8, 0, steps=2, kernel=1).double()
    assert [bool(step.order[0] > step.order[-1]) for step in flow.steps] == [False, True]
    z0 = torch.randn(1, Z, 1, 1, dtype=torch.float64)
    jac = jacobian(lambda v: flow(v.view(1, Z, 1, 1))[0].flatten(), z0.flatten())
    assert jac[0, Z - 1].abs() > 1e-6 and jac[Z - 1, 0].abs() > 1e-6

@pytest.mark.parametrize("name,opts", [("iaf", {"iaf_steps": 2}), ("topdown", {"iaf_steps": 1, "groups": 1})])
def test_posterior_log_density_through_the_flow(name: str, opts: dict) -> None:
    torch.manual_seed(2)
    stages = [(2, 4, 4), (5, H, W)]
    post = avade.create("posterior", name, stage_shapes=stages, latent_channels=Z, iaf_hidden=6, **opts)
    post = post.double()
    assert post.stage_ids == [1]
    group = post.group(1)
    d = torch.randn(2, 5, H, W, dtype=torch.float64)
    h = torch.randn(2, 5, H, W, dtype=torch.float64)
    eps = torch.randn(2, Z, H, W, dtype=torch.float64)
    s = post.sample(1, d, h, noise=eps)
    with torch.no_grad():
        mu, log_sigma, ctx = group.posterior_params(d, h)
        mu_p, log_sigma_p = group.prior_params(d)
    z0 = mu + log_sigma.exp() * eps
    for b in range(2):
        flow_b = lambda v, b=b: group.flow(v.view(1, Z, H, W), ctx[b : b + 1])[0].flatten()  # noqa: E731
        jac = jacobian(flow_b, z0[b].flatten())
        base = Normal(mu[b], log_sigma[b].exp()).log_prob(z0[b]).sum()
        torch.testing.assert_close(s.log_q[b], base - torch.linalg.slogdet(jac)[1])
        torch.testing.assert_close(s.z[b].flatten(), flow_b(z0[b].flatten()))
    torch.testing.assert_close(s.log_p, Normal(mu_p, log_sigma_p.exp()).log_prob(s.z).flatten(1).sum(1))
    with pytest.raises(ValueError, match="closed form"):
        post.analytic_kl(1, d, h)


def test_masked_convs_take_weight_norms_data_dependent_init_from_norm_options() -> None:
    from avade.nn.layers import norm_options
    from avade.posteriors.made import MaskedConv2d, hidden_degrees

    order = torch.arange(4)
    hid = hidden_degrees(16, 4)
    plain = MaskedConv2d(4, 16, 3, order, hid, strict=False)
    assert plain.initialized is None and "initialized.done" not in plain.state_dict()  # old checkpoints load
    with norm_options({"weight-norm": {"init_scale": 0.1}}):
        conv = MaskedConv2d(4, 16, 3, order, hid, strict=False).train()
    x = torch.randn(32, 4, 6, 6) * 2 + 1
    out = conv(x)  # the first training call initialises g and the bias from this batch
    torch.testing.assert_close(out.mean((0, 2, 3)), torch.zeros(16), atol=1e-4, rtol=0)
    torch.testing.assert_close(out.std((0, 2, 3)), torch.full((16,), 0.1), atol=1e-3, rtol=0)
    assert bool(conv.initialized)
    assert float(conv(x * 3).std()) > 0.2  # ... and only the first


def test_an_iaf_model_initialises_every_masked_conv_before_training(tmp_path) -> None:
    from avade.posteriors.made import MaskedConv2d
    from avade.train.trainer import Trainer

    recipe = tiny_recipe("model.posterior.iaf_steps=1", "model.norm_options.weight-norm.init_scale=0.1")
    trainer = Trainer(recipe, tmp_path / "run", progress=False)
    masked = [m for m in trainer.model.modules() if isinstance(m, MaskedConv2d)]
    assert masked and all(m.initialized is not None and bool(m.initialized) for m in masked)


def _invert_step(step: IAFStep, z_new: torch.Tensor, ctx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Invert ``z_new = sigma(z) z + (1 - sigma(z)) m(z)`` by fixed-point iteration, without the step's own
    forward: ``sigma``, ``m`` of an element depend only on earlier ones, so each sweep fixes at least one
    more element and ``D`` sweeps are exact. Returns ``(z, sum log sigma(z))`` per sample."""
    from avade.nn import elu
    from avade.posteriors.flow import FORGET_BIAS

    z = z_new.clone()
    for _ in range(z_new[0].numel() + 1):
        m, s = step.out(elu(step.mid(elu(step.inp(z) + step.ctx(ctx))))).chunk(2, dim=1)
        sigma = torch.sigmoid(s + FORGET_BIAS)
        z = (z_new - (1 - sigma) * m) / sigma
    return z, sigma.log().flatten(1).sum(1)


@pytest.mark.parametrize("kernel", [1, 3])
def test_log_q_equals_the_density_of_the_inverted_sample(kernel: int) -> None:
    """log q(z_T) from the sampler = log N(z_0; mu, sigma) - sum_t sum log sigma_t, with z_0 recovered by
    inverting the flow independently (change of variables through a triangular Jacobian)."""
    torch.manual_seed(5)
    post = avade.create("posterior", "iaf", stage_shapes=[(2, 4, 4), (5, H, W)], latent_channels=Z,
                        iaf_steps=2, iaf_hidden=6, iaf_kernel=kernel).double()
    group = post.group(1)
    d, h = torch.randn(4, 5, H, W, dtype=torch.float64), torch.randn(4, 5, H, W, dtype=torch.float64)
    eps = torch.randn(4, Z, H, W, dtype=torch.float64)
    with torch.no_grad():
        s = post.sample(1, d, h, noise=eps)
        mu, log_sigma, ctx = group.posterior_params(d, h)
        z, log_sigmas = s.z, torch.zeros(4, dtype=torch.float64)
        for step in reversed(group.flow.steps):
            z, ls = _invert_step(step, z, ctx)
            log_sigmas = log_sigmas + ls
    torch.testing.assert_close(z, mu + log_sigma.exp() * eps)  # the inversion is exact
    base = Normal(mu, log_sigma.exp()).log_prob(z).flatten(1).sum(1)
    torch.testing.assert_close(s.log_q, base - log_sigmas)
    assert (log_sigmas < 0).all()  # a contraction: the flow raises log q above its base density
