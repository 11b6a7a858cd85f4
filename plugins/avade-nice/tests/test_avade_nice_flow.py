"""The `nice` flow: registered through the entry point, exactly invertible, logdet = log|det J|."""

from __future__ import annotations

import pytest
import torch

import avade
from avade.errors import ConfigError, DataError

pytest.importorskip("avade_nice")


def make(in_shape: tuple[int, int, int], **cfg) -> torch.nn.Module:
    torch.manual_seed(0)
    flow = avade.create("flow", "nice", in_shape=in_shape, **cfg).double()
    # Random (not zero-initialized) parameters, so couplings and scaling are all non-trivial.
    with torch.no_grad():
        for p in flow.parameters():
            p.normal_(0.0, 0.3)
    return flow


def test_registered_by_the_plugin_distribution() -> None:
    info = avade.get_registry().get("flow", "nice")
    assert info.dist == "avade-nice"
    assert "flow/nice" in avade.list_components("nic*")


@pytest.mark.parametrize("mask", ["checkerboard", "channel", "alternate"])
def test_inverse_and_logdet_match_autograd_jacobian(mask: str) -> None:
    shape = (2, 4, 4)
    flow = make(shape, couplings=4, hidden=8, depth=2, mask=mask)
    x = torch.randn(3, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y, logdet = flow(x)
    assert y.shape == x.shape and logdet.shape == (3,)
    torch.testing.assert_close(flow.inverse(y), x, atol=1e-12, rtol=0)
    assert not torch.allclose(y, x)

    def f(v: torch.Tensor) -> torch.Tensor:
        return flow(v.view(1, *shape))[0].flatten()

    for i in range(x.shape[0]):
        jac = torch.autograd.functional.jacobian(f, x[i].flatten())
        sign, expected = torch.linalg.slogdet(jac)
        assert sign.item() == 1.0
        assert logdet[i].item() == pytest.approx(expected.item(), abs=1e-9)
    assert abs(logdet[0].item()) > 1e-3  # the diagonal scaling makes the logdet non-trivial


def test_couplings_leave_the_kept_half_unchanged() -> None:
    flow = make((1, 4, 4), couplings=1, hidden=4, depth=1)
    with torch.no_grad():
        flow.log_scale.zero_()
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    y, logdet = flow(x)
    mask = flow.couplings[0].mask.bool().expand_as(x)
    torch.testing.assert_close(y[mask], x[mask])
    assert not torch.allclose(y[~mask], x[~mask])
    torch.testing.assert_close(logdet, torch.zeros(2, dtype=torch.float64))


def test_default_init_is_the_identity() -> None:
    torch.manual_seed(0)
    flow = avade.create("flow", "nice", in_shape=(3, 8, 8))
    x = torch.randn(2, 3, 8, 8)
    y, logdet = flow(x)
    torch.testing.assert_close(y, x)
    assert torch.count_nonzero(logdet) == 0
    assert flow.in_shape == flow.out_shape == (3, 8, 8)


def test_readable_errors() -> None:
    with pytest.raises(ConfigError, match="needs at least 2") as err:
        avade.create("flow", "nice", in_shape=(1, 8, 8), mask="channel")
    assert err.value.path == "mask"  # relative to the flow's table: a recipe's error says model.flow.mask
    with pytest.raises(ConfigError, match="couplings"):
        avade.create("flow", "nice", in_shape=(3, 8, 8), couplings=0)
    flow = avade.create("flow", "nice", in_shape=(3, 8, 8))
    with pytest.raises(DataError, match="built for inputs"):
        flow(torch.zeros(1, 3, 16, 16))


def test_bf16_coupling_nets_run_m_in_bf16_and_nice_still_inverts() -> None:
    from avade.nn.precision import CouplingNetsInBF16

    flow = make((2, 4, 4), couplings=4, hidden=8, depth=2).float()
    seen: set[torch.dtype] = set()
    flow.couplings[0].out.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
    x = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    y32, _ = flow(x)
    # as avade's model calls a flow under train.precision = "bf16" with train.bf16_coupling_nets = true
    with torch.autocast("cpu", dtype=torch.bfloat16), CouplingNetsInBF16(), torch.autocast("cpu", enabled=False):
        y, logdet = flow(x)
        back = flow.inverse(y)
    assert seen == {torch.float32, torch.bfloat16}
    assert y.dtype == back.dtype == logdet.dtype == torch.float32
    assert not torch.allclose(y, y32, atol=1e-4)  # m ran in bf16: a nearby function
    torch.testing.assert_close(back, x, atol=1e-5, rtol=1e-5)
