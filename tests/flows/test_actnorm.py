"""ActNorm: data-dependent init, and that the init state survives a state-dict round trip."""

from __future__ import annotations

import torch

import avade


def _data() -> torch.Tensor:
    x = torch.randn(16, 3, 5, 5)
    std, mean = torch.tensor([0.5, 2.0, 7.0]), torch.tensor([-3.0, 0.0, 4.0])
    return x * std.view(1, 3, 1, 1) + mean.view(1, 3, 1, 1)


def test_data_dependent_init_standardizes_each_channel() -> None:
    flow = avade.create("flow", "actnorm", in_shape=(3, 5, 5)).train()
    assert not bool(flow.initialized)
    x = _data()
    y, logdet = flow(x)
    assert bool(flow.initialized)
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(3), rtol=0, atol=1e-9)
    torch.testing.assert_close(y.std(dim=(0, 2, 3), correction=0), torch.ones(3), rtol=0, atol=1e-5)
    # logdet = H * W * sum(log scale) = -H * W * sum(log std)
    expected = -25 * torch.log(x.std(dim=(0, 2, 3), correction=0) + flow.eps).sum()
    torch.testing.assert_close(logdet, expected.expand(16), rtol=1e-12, atol=1e-12)


def test_init_happens_once() -> None:
    flow = avade.create("flow", "actnorm", in_shape=(3, 5, 5)).train()
    flow(_data())
    bias = flow.bias.detach().clone()
    flow(_data() * 10)
    assert torch.equal(flow.bias, bias)


def test_eval_before_init_is_identity_and_does_not_init() -> None:
    flow = avade.create("flow", "actnorm", in_shape=(3, 5, 5)).eval()
    x = _data()
    y, logdet = flow(x)
    assert torch.equal(y, x) and torch.equal(logdet, torch.zeros(16))
    assert not bool(flow.initialized)


def test_initialized_survives_state_dict_round_trip() -> None:
    trained = avade.create("flow", "actnorm", in_shape=(3, 5, 5)).train()
    trained(_data())
    state = trained.state_dict()
    assert "initialized" in state

    fresh = avade.create("flow", "actnorm", in_shape=(3, 5, 5)).train()
    fresh(torch.randn(4, 3, 5, 5))  # fresh initialises itself on other data ...
    fresh.load_state_dict(state)  # ... and then loads the trained state
    fresh(torch.randn(4, 3, 5, 5) * 100)  # must not re-initialise
    torch.testing.assert_close(fresh.bias, trained.bias, rtol=0, atol=0)
    torch.testing.assert_close(fresh.log_scale, trained.log_scale, rtol=0, atol=0)


def test_loading_an_uninitialized_state_re_enables_init() -> None:
    blank = avade.create("flow", "actnorm", in_shape=(3, 5, 5)).state_dict()
    flow = avade.create("flow", "actnorm", in_shape=(3, 5, 5)).train()
    flow(torch.randn(4, 3, 5, 5))
    flow.load_state_dict(blank)
    assert not bool(flow.initialized)
    y, _ = flow(_data())
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(3), rtol=0, atol=1e-9)


def test_data_init_can_be_switched_off() -> None:
    flow = avade.create("flow", "actnorm", in_shape=(3, 5, 5), data_init=False).train()
    x = _data()
    assert torch.equal(flow(x)[0], x)


def test_flow_actnorm_init_refuses_one_value_per_channel() -> None:
    """Batch 1 at 1x1: the population std is 0 and the log-scale ~14, a flow scaling by ~1e6 from then on."""
    import pytest

    from avade.errors import DataError

    flow = avade.create("flow", "actnorm", in_shape=(3, 1, 1))
    with pytest.raises(DataError, match=r"flow actnorm: .* at least 2 images per batch"):
        flow(torch.randn(1, 3, 1, 1))
    assert not bool(flow.initialized)
    _, logdet = flow(torch.randn(2, 3, 1, 1))
    assert bool(flow.initialized) and torch.isfinite(logdet).all() and logdet.abs().max() < 20
