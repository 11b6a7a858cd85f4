"""Every registered flow (built-ins and plugins) honours the flow contract."""

from __future__ import annotations

import itertools
from typing import Any

import attrs
import pytest
import torch

import avade
from avade.errors import AvadeError
from avade.flows.coupling import AffineCoupling

IN_SHAPE = (3, 8, 8)
GENERIC_SMALL = {"hidden": 8, "blocks": 1}
KNOWN_SMALL = {"realnvp": {"scales": 2}, "glow": {"scales": 2, "steps": 2}}
# Flows that map the whole image to a tensor of the same shape (what a model uses as f).
SHAPE_PRESERVING = ["realnvp", "glow", "identity", "actnorm", "invconv", "affine-coupling"]


def _flow_names() -> list[str]:
    return [info.name for info in avade.get_registry().list(kind="flow")]


def build_small(name: str, in_shape: tuple[int, int, int] = IN_SHAPE) -> Any:
    """The flow with small settings where its config has them, else with its defaults."""
    info = avade.get_registry().get("flow", name)
    cfg_cls = info.load_config()
    fields = {f.name for f in attrs.fields(cfg_cls)} if cfg_cls is not None else set()
    small = {k: v for k, v in {**GENERIC_SMALL, **KNOWN_SMALL.get(name, {})}.items() if k in fields}
    try:
        return avade.create("flow", name, in_shape=in_shape, **small)
    except AvadeError:
        return avade.create("flow", name, in_shape=in_shape)


def test_builtins_are_registered() -> None:
    names = set(_flow_names())
    assert {"realnvp", "glow", "identity", "actnorm", "invconv", "squeeze", "affine-coupling"} <= names
    for info in avade.get_registry().list(kind="flow"):
        assert info.summary, f"flow '{info.name}' has no summary"


@pytest.mark.parametrize("name", _flow_names())
def test_inverse_of_forward_is_identity(name: str, perturb, warm_up) -> None:
    flow = build_small(name)
    x = torch.randn(4, *IN_SHAPE) * 1.5 + 0.3
    warm_up(flow, x)
    perturb(flow, 0.05)  # move zero-initialised layers off the identity
    with torch.no_grad():
        y, logdet = flow(x)
        x_back = flow.inverse(y)
    out_shape = tuple(getattr(flow, "out_shape", IN_SHAPE))
    assert tuple(y.shape) == (4, *out_shape)
    assert y.dtype == x.dtype
    assert logdet.shape == (4,)
    assert torch.isfinite(logdet).all()
    torch.testing.assert_close(x_back, x, rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", SHAPE_PRESERVING)
def test_whole_image_flows_keep_the_shape(name: str) -> None:
    flow = build_small(name)
    assert tuple(flow.in_shape) == tuple(flow.out_shape) == IN_SHAPE
    y, _ = flow(torch.randn(2, *IN_SHAPE))
    assert tuple(y.shape) == (2, *IN_SHAPE)


def test_squeeze_declares_its_shape_change() -> None:
    flow = avade.create("flow", "squeeze", in_shape=(3, 8, 8))
    assert flow.out_shape == (12, 4, 4)
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float64).view(2, 3, 8, 8)
    y, logdet = flow(x)
    assert y.shape == (2, 12, 4, 4)
    # channel 4c + 2dy + dx at (i, j) holds x[c, 2i + dy, 2j + dx]
    assert y[1, 4 * 2 + 2 * 1 + 0, 3, 1] == x[1, 2, 7, 2]
    assert torch.equal(logdet, torch.zeros(2))
    assert torch.equal(flow.inverse(y), x)


@pytest.mark.parametrize("name", ["realnvp", "affine-coupling"])
def test_fresh_coupling_flows_start_as_identity(name: str) -> None:
    flow = build_small(name).eval()
    x = torch.randn(2, *IN_SHAPE)
    y, logdet = flow(x)
    torch.testing.assert_close(y, x, rtol=0, atol=0)
    torch.testing.assert_close(logdet, torch.zeros(2), rtol=0, atol=0)


def test_identity_flow() -> None:
    flow = avade.create("flow", "identity", in_shape=(1, 2, 2))
    x = torch.randn(3, 1, 2, 2)
    y, logdet = flow(x)
    assert torch.equal(y, x) and torch.equal(flow.inverse(y), x)
    assert torch.equal(logdet, torch.zeros(3))


@pytest.mark.parametrize("net", ["resnet", "reference"])
def test_inverse_is_exact_in_train_mode_with_batch_norm(net, perturb) -> None:
    # The s/t network only sees the conditioning half, which forward and inverse share, so the batch
    # statistics are the same in both directions.
    flow = avade.create("flow", "realnvp", in_shape=IN_SHAPE, scales=2, hidden=8, blocks=1, net=net)
    perturb(flow, 0.05)
    flow.train()
    x = torch.randn(5, *IN_SHAPE)
    y, _ = flow(x)
    torch.testing.assert_close(flow.inverse(y), x, rtol=0, atol=1e-9)


def test_bad_in_shape_is_a_config_error() -> None:
    with pytest.raises(avade.ConfigError, match="in_shape"):
        avade.create("flow", "glow", in_shape=(3, 8))


@pytest.mark.parametrize("bad", [(3, 8), (3, 0, 8), (3.0, 8, 8), "abc", (True, 8, 8)])
def test_in_shape_is_validated(bad) -> None:
    with pytest.raises(avade.ConfigError, match="in_shape"):
        avade.create("flow", "realnvp", in_shape=bad)


def test_in_shape_may_be_a_list() -> None:
    flow = avade.create("flow", "realnvp", in_shape=[1, 4, 4], hidden=8, blocks=1)
    assert flow.in_shape == flow.out_shape == (1, 4, 4)


@pytest.mark.parametrize("growth", [1, 2])
def test_realnvp_widens_its_st_networks_as_the_reference(growth, perturb) -> None:
    flow = avade.create("flow", "realnvp", in_shape=(3, 16, 16), scales=3, hidden=8, blocks=1,
                        hidden_growth=growth)
    widths = [m.net.out.in_channels for m in flow.modules() if type(m).__name__ == "AffineCoupling"]
    # per scale k: 3 checkerboard couplings (8 * growth**k), then (k < 2) 3 channel-wise ones (twice that)
    g = growth
    assert widths == [8] * 3 + [8 * g] * 3 + [8 * g] * 3 + [8 * g * g] * 3 + [8 * g * g] * 3
    perturb(flow, 0.05)
    flow.eval()
    x = torch.randn(2, 3, 16, 16)
    y, logdet = flow(x)
    torch.testing.assert_close(flow.inverse(y), x, rtol=0, atol=1e-5)
    assert logdet.shape == (2,)


def test_realnvp_hidden_growth_is_1_or_2() -> None:
    with pytest.raises(avade.ConfigError, match="hidden_growth"):
        avade.create("flow", "realnvp", in_shape=(3, 8, 8), hidden_growth=3)


@pytest.mark.parametrize("mask", ["checkerboard", "checkerboard-packed", "channel"])
@pytest.mark.parametrize("net", ["resnet", "reference"])
def test_reverse_coupling_transforms_the_other_half(mask: str, net: str, perturb) -> None:
    # A coupling changes exactly its transformed_region; its reverse changes the rest, so that two
    # alternating couplings between them transform every dimension.
    x = torch.randn(2, 4, 4, 6)
    regions = []
    for reverse in (False, True):
        flow = avade.create("flow", "affine-coupling", in_shape=(4, 4, 6), mask=mask, reverse=reverse, net=net,
                            hidden=8, blocks=1)
        perturb(flow, 0.5)
        flow.eval()
        with torch.no_grad():
            y, _ = flow(x)
        region = flow.transformed_region().expand(1, 4, 4, 6)
        changed = (y - x).abs() > 1e-12
        assert torch.equal(changed, region.bool().expand_as(changed)), f"reverse={reverse}"
        regions.append(region)
    torch.testing.assert_close(regions[0] + regions[1], torch.ones(1, 4, 4, 6), rtol=0, atol=0)


@pytest.mark.parametrize("checkerboard", ["masked", "packed"])
def test_realnvp_couplings_alternate_their_halves(checkerboard: str) -> None:
    # Within each run of same-kind couplings (checkerboard, or channel after a squeeze) the transformed
    # halves alternate, as in Real-NVP: otherwise half the dimensions would only ever be shifted around.
    flow = avade.create("flow", "realnvp", in_shape=(3, 8, 8), scales=2, layers=3, hidden=8, blocks=1,
                        checkerboard=checkerboard)
    couplings = [m for m in flow.modules() if isinstance(m, AffineCoupling)]
    runs: dict[tuple, list[torch.Tensor]] = {}
    for c in couplings:
        kind = ("channel" if not (c.checker or c.packed) else "checker", tuple(c.in_shape))
        runs.setdefault(kind, []).append(c.transformed_region())
    assert len(runs) == 3  # checkerboard at two scales, channel couplings at the first
    for kind, regions in runs.items():
        assert len(regions) >= 3, kind
        for a, b in itertools.pairwise(regions):
            torch.testing.assert_close(a + b, torch.ones_like(a), rtol=0, atol=0, msg=str(kind))
