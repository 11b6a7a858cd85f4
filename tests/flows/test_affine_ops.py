"""The fused coupling functions equal their reference formulas: values, gradients, double backward."""

from __future__ import annotations

import pytest
import torch

from avade.flows.affine_ops import (
    affine_forward,
    affine_forward_reference,
    affine_inverse,
    affine_inverse_reference,
)
from avade.flows.coupling import checkerboard


def _inputs(masked: bool) -> tuple[torch.Tensor, ...]:
    h = torch.randn(3, 4, 4, 6, requires_grad=True)
    x = torch.randn(3, 2, 4, 6, requires_grad=True)
    bound = (1.0 + 0.3 * torch.randn(1, 2, 1, 1)).requires_grad_(True)
    mask = 1.0 - checkerboard(4, 6, 0) if masked else None
    return h, x, bound, mask


@pytest.mark.parametrize("masked", [False, True])
def test_forward_matches_reference_values_and_gradients(masked: bool) -> None:
    h, x, bound, mask = _inputs(masked)
    y, logdet = affine_forward(h, x, bound, mask)
    y_ref, logdet_ref = affine_forward_reference(h, x, bound, mask)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(logdet, logdet_ref, rtol=0, atol=1e-12)
    gy, gl = torch.randn_like(y), torch.randn_like(logdet)
    got = torch.autograd.grad((y, logdet), (h, x, bound), (gy, gl))
    want = torch.autograd.grad((y_ref, logdet_ref), (h, x, bound), (gy, gl))
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("masked", [False, True])
def test_inverse_matches_reference_and_inverts(masked: bool) -> None:
    h, x, bound, mask = _inputs(masked)
    y = affine_forward(h, x, bound, mask)[0].detach().requires_grad_(True)
    x_back = affine_inverse(h, y, bound, mask)
    torch.testing.assert_close(x_back, x, rtol=0, atol=1e-12)
    ref = affine_inverse_reference(h, y, bound, mask)
    g = torch.randn_like(x)
    got = torch.autograd.grad(x_back, (h, y, bound), g)
    want = torch.autograd.grad(ref, (h, y, bound), g)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("masked", [False, True])
def test_gradcheck_and_double_backward(masked: bool) -> None:
    h, x, bound, mask = _inputs(masked)

    def fwd(h: torch.Tensor, x: torch.Tensor, bound: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return affine_forward(h, x, bound, mask)

    def inv(h: torch.Tensor, y: torch.Tensor, bound: torch.Tensor) -> torch.Tensor:
        return affine_inverse(h, y, bound, mask)

    assert torch.autograd.gradcheck(fwd, (h, x, bound))
    assert torch.autograd.gradgradcheck(fwd, (h, x, bound))
    assert torch.autograd.gradcheck(inv, (h, x, bound))
    assert torch.autograd.gradgradcheck(inv, (h, x, bound))


def test_only_logdet_used_and_inputs_without_grad() -> None:
    h, x, bound, _ = _inputs(False)
    _, logdet = affine_forward(h, x.detach(), bound)
    (g_h,) = torch.autograd.grad(logdet.sum(), (h,))
    _, logdet_ref = affine_forward_reference(h, x.detach(), bound)
    torch.testing.assert_close(g_h, torch.autograd.grad(logdet_ref.sum(), (h,))[0])


@pytest.mark.parametrize("masked", [False, True])
def test_double_backward_when_only_the_transformed_half_requires_grad(masked: bool) -> None:
    h, x, bound, mask = _inputs(masked)
    h, bound = h.detach(), bound.detach()

    def fwd(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return affine_forward(h, x, bound, mask)

    assert torch.autograd.gradgradcheck(lambda t: fwd(t)[0], (x,))
    assert torch.autograd.gradgradcheck(lambda t: affine_inverse(h, t, bound, mask), (x,))


def test_torch_func_and_vectorized_jacobians_work_through_a_coupling() -> None:
    import avade

    flow = avade.create("flow", "affine-coupling", in_shape=(2, 2, 2), hidden=4, blocks=1, batch_norm=False)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(1, 2, 2, 2)

    def f(v: torch.Tensor) -> torch.Tensor:
        return flow(v.view(1, 2, 2, 2))[0].reshape(-1)

    want = torch.autograd.functional.jacobian(f, x.reshape(-1))
    torch.testing.assert_close(torch.func.jacrev(f)(x.reshape(-1)), want)
    torch.testing.assert_close(torch.autograd.functional.jacobian(f, x.reshape(-1), vectorize=True), want)


def test_compiles_without_graph_breaks() -> None:
    h, x, bound, mask = _inputs(True)
    fn = torch.compile(lambda h, x, b: affine_forward(h, x, b, mask), backend="aot_eager", fullgraph=True)
    y, logdet = fn(h, x, bound)
    torch.testing.assert_close(y, affine_forward_reference(h, x, bound, mask)[0])
    (y.sum() + logdet.sum()).backward()
    assert h.grad is not None and x.grad is not None and bound.grad is not None
