"""Invertible 1x1 convolution: log-determinants, the random-rotation init, and the inverse cache."""

from __future__ import annotations

import pytest
import torch

import avade


@pytest.mark.parametrize("lu", [True, False])
def test_logdet_matches_slogdet(lu: bool, perturb) -> None:
    flow = avade.create("flow", "invconv", in_shape=(5, 3, 4), lu=lu)
    perturb(flow, 0.3)
    if lu:
        with torch.no_grad():
            flow.log_s.add_(0.1)  # move away from volume preserving
    weight = flow.weight_matrix()
    _, logabsdet = torch.linalg.slogdet(weight)
    _, logdet = flow(torch.randn(2, 5, 3, 4))
    torch.testing.assert_close(logdet, (12 * logabsdet).expand(2), rtol=1e-10, atol=1e-10)
    assert logabsdet.abs() > 1e-3  # the perturbation made the check non-trivial


@pytest.mark.parametrize("lu", [True, False])
def test_starts_as_a_rotation(lu: bool) -> None:
    flow = avade.create("flow", "invconv", in_shape=(6, 2, 2), lu=lu)
    weight = flow.weight_matrix().detach()
    torch.testing.assert_close(weight @ weight.T, torch.eye(6), rtol=0, atol=1e-12)
    assert not torch.allclose(weight.abs(), torch.eye(6))  # random, not a permutation


def test_lu_and_plain_agree_on_the_same_matrix() -> None:
    lu = avade.create("flow", "invconv", in_shape=(4, 3, 3), lu=True)
    plain = avade.create("flow", "invconv", in_shape=(4, 3, 3), lu=False)
    with torch.no_grad():
        plain.weight.copy_(lu.weight_matrix())
    x = torch.randn(2, 4, 3, 3)
    (y1, ld1), (y2, ld2) = lu(x), plain(x)
    torch.testing.assert_close(y1, y2, rtol=0, atol=1e-12)
    torch.testing.assert_close(ld1, ld2, rtol=0, atol=1e-12)


@pytest.mark.parametrize("lu", [True, False])
def test_cached_inverse_follows_parameter_updates(lu: bool) -> None:
    flow = avade.create("flow", "invconv", in_shape=(4, 3, 3), lu=lu)
    x = torch.randn(2, 4, 3, 3)
    with torch.no_grad():
        flow.inverse(x)  # fills the cache
        for p in flow.parameters():
            p.add_(0.2 * torch.randn_like(p))  # an optimizer step: in-place, no new storage
        y, logdet = flow(x)
        torch.testing.assert_close(flow.inverse(y), x, rtol=0, atol=1e-10)
    _, logabsdet = torch.linalg.slogdet(flow.weight_matrix())
    torch.testing.assert_close(logdet, (9 * logabsdet).expand(2), rtol=1e-10, atol=1e-10)


def test_lu_state_dict_round_trip() -> None:
    a = avade.create("flow", "invconv", in_shape=(4, 2, 2), lu=True)
    b = avade.create("flow", "invconv", in_shape=(4, 2, 2), lu=True)  # another random rotation
    x = torch.randn(3, 4, 2, 2)
    with torch.no_grad():
        b.inverse(x)  # b caches its own inverse first
        b.load_state_dict(a.state_dict())
        torch.testing.assert_close(b(x)[0], a(x)[0], rtol=0, atol=0)
        torch.testing.assert_close(b.inverse(x), a.inverse(x), rtol=0, atol=0)
