"""avade.nn.Conv2d: nn.Conv2d's parameters and numbers, eager and compiled (where its bias is a separate add)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import avade
from avade.nn import Conv2d, normed


def _pair(norm: str) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    ours = normed(Conv2d(3, 5, 3, padding=1), norm)
    ref = normed(nn.Conv2d(3, 5, 3, padding=1), norm)
    ref.load_state_dict(ours.state_dict())
    with torch.no_grad():
        for p in ours.parameters():  # a non-zero bias, so that its gradient path is exercised
            p.add_(0.1)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


@pytest.mark.parametrize("norm", ["none", "weight-norm"])
@pytest.mark.parametrize("compiled", [False, True])
def test_matches_nn_conv2d(norm: str, compiled: bool) -> None:
    ours, ref = _pair(norm)
    assert list(ours.state_dict()) == list(ref.state_dict())
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    torch._dynamo.reset()
    run = torch.compile(ours, backend="aot_eager", fullgraph=True) if compiled else ours
    y, y_ref = run(x), ref(x_ref)
    (y.relu().square().sum()).backward()
    (y_ref.relu().square().sum()).backward()
    if compiled:
        torch.testing.assert_close(y, y_ref)
    else:
        assert torch.equal(y, y_ref)  # eager is nn.Conv2d's own call
    torch.testing.assert_close(x.grad, x_ref.grad)
    for (name, p), p_ref in zip(ours.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, p_ref.grad, msg=name)


def test_bias_is_a_separate_add_only_while_compiling() -> None:
    conv = Conv2d(2, 4, 1)
    graphs: list[torch.fx.GraphModule] = []

    def capture(gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> torch.fx.GraphModule:
        graphs.append(gm)
        return gm

    torch._dynamo.reset()
    torch.compile(conv, backend=capture, fullgraph=True)(torch.randn(1, 2, 3, 3))
    calls = [n for n in graphs[0].graph.nodes if n.op == "call_function"]
    conv_call = next(n for n in calls if "conv2d" in str(n.target))
    assert conv_call.args[2] is None  # no bias inside the convolution
    assert any("add" in str(n.target) for n in calls)


def test_weight_norm_data_dependent_init_standardizes_the_first_batch():
    layer = torch.nn.Conv2d(3, 8, 3, padding=1)
    wn = avade.create("norm", "weight-norm", layer=layer, init_scale=0.1).train()
    x = torch.randn(16, 3, 8, 8) * 3 + 1
    out = wn(x)  # the first training call initialises g and the bias from this batch
    torch.testing.assert_close(out.mean((0, 2, 3)), torch.zeros(8), atol=1e-4, rtol=0)
    torch.testing.assert_close(out.std((0, 2, 3)), torch.full((8,), 0.1), atol=1e-3, rtol=0)
    assert bool(wn.initialized)
    again = wn(x * 2)  # ... and only the first
    assert float(again.std()) > 0.15


def test_edge_bias_conv_works_under_torch_func_transforms() -> None:
    # (the eager edge term's in-place border add, _AddOnBorder, is an autograd.Function that torch.func does
    # not support: jacrev, vmap and grad raised on a Glow convolution, while a plain Conv2d works under them)
    torch.manual_seed(0)
    conv = Conv2d(2, 3, 3, padding=1, edge_bias=True).double()
    x = torch.randn(2, 2, 5, 6, dtype=torch.float64)

    def reference(t: torch.Tensor) -> torch.Tensor:  # the plain broadcast add of the edge term
        y = nn.functional.conv2d(t, conv.weight, conv.bias, padding=1)
        return y + conv.edge_term(y.shape[-2], y.shape[-1], y)

    torch.testing.assert_close(torch.func.jacrev(conv)(x), torch.func.jacrev(reference)(x))
    batch = torch.randn(3, 2, 2, 5, 6, dtype=torch.float64)
    torch.testing.assert_close(torch.func.vmap(conv)(batch), torch.func.vmap(reference)(batch))
    params = dict(conv.named_parameters())
    grads = torch.func.grad(lambda p: torch.func.functional_call(conv, p, (x,)).square().sum())(params)
    loss = conv(x).square().sum()
    for name, g in zip(params, torch.autograd.grad(loss, list(params.values())), strict=True):
        torch.testing.assert_close(grads[name], g, msg=name)


@pytest.mark.parametrize("which", ["weight-norm", "actnorm", "masked"])
def test_data_dependent_init_refuses_a_batch_with_one_value_per_channel(which: str) -> None:
    """Batch 1 at a 1x1 stage (e.g. data.batch_size = 1 with the top stage at 1x1): the init's std was NaN
    (weight norm, IAF's masked conv) or 0 (actnorm), leaving NaN or ~1e6-scaled weights that made every
    step non-finite, reported as a discriminator collapse. Now a one-line DataError that says what to do."""
    from avade.errors import DataError
    from avade.nn.layers import norm_options
    from avade.posteriors.made import MaskedConv2d

    if which == "masked":
        with norm_options({"weight-norm": {"init_scale": 0.1}}):
            layer = MaskedConv2d(3, 4, 3, torch.arange(3), torch.arange(4) % 2, strict=False)
    else:
        options = {"init_scale": 0.1} if which == "weight-norm" else {}
        layer = avade.create("norm", which, layer=torch.nn.Conv2d(3, 4, 3, padding=1), **options)
    layer.train()
    with pytest.raises(DataError, match=r"data\.batch_size"):
        layer(torch.randn(1, 3, 1, 1))
    assert all(torch.isfinite(p).all() for p in layer.parameters())
    out = layer(torch.randn(2, 3, 1, 1))  # two values per channel: initialises as before
    assert torch.isfinite(out).all()
