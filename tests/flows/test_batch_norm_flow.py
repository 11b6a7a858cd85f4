"""Batch normalization as a flow (Real-NVP's normalization of each coupling's output)."""

from __future__ import annotations

import pytest
import torch

import avade
from avade.testing.checks import check_flow


def test_training_standardizes_with_the_batch_and_updates_running_averages() -> None:
    bn = avade.create("flow", "batch-norm", in_shape=(3, 4, 4), momentum=0.5).train()
    x = torch.randn(32, 3, 4, 4, dtype=torch.float64) * torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1) + 5
    bn.double()
    y, logdet = bn(x)
    torch.testing.assert_close(y.mean((0, 2, 3)), torch.zeros(3, dtype=torch.float64), atol=1e-12, rtol=0)
    var = x.var((0, 2, 3), correction=0)
    torch.testing.assert_close(logdet, (-0.5 * 16 * torch.log(var + 1e-4).sum()).expand(32))
    torch.testing.assert_close(bn.running_mean.flatten(), 0.5 * x.mean((0, 2, 3)))
    torch.testing.assert_close(bn.running_var.flatten(), 0.5 + 0.5 * var)


def test_the_inverse_uses_the_running_averages_and_is_exact_in_eval_mode() -> None:
    bn = avade.create("flow", "batch-norm", in_shape=(2, 3, 3)).double().train()
    x = torch.randn(8, 2, 3, 3, dtype=torch.float64) * 3 - 1
    for _ in range(50):
        bn(x)
    y = torch.randn(8, 2, 3, 3, dtype=torch.float64)
    in_training = bn.inverse(y)
    bn.eval()
    torch.testing.assert_close(in_training, bn.inverse(y), rtol=0, atol=0)
    out, _ = bn(x)
    torch.testing.assert_close(bn.inverse(out), x, rtol=0, atol=1e-12)


def test_realnvp_normalizes_every_coupling_output_when_asked() -> None:
    flow = avade.create("flow", "realnvp", in_shape=(3, 8, 8), scales=2, layers=3, blocks=1, hidden=8,
                        out_batch_norm=True)
    couplings = sum(type(m).__name__ == "AffineCoupling" for m in flow.modules())
    norms = sum(type(m).__name__ == "BatchNormFlow" for m in flow.modules())
    assert couplings == norms == 3 + 3 + 3  # checkerboard, channel-wise, last scale's checkerboard
    check_flow("realnvp", scales=2, hidden=8, blocks=1, out_batch_norm=True)


def test_momentum_is_validated() -> None:
    with pytest.raises(avade.ConfigError, match="momentum"):
        avade.create("flow", "batch-norm", in_shape=(3, 4, 4), momentum=1.5)


def test_a_compiled_inverse_then_forward_then_backward_in_training() -> None:
    # The generator's step: samples through f^-1 (running averages), then the likelihood's forward
    # updates those averages, then one backward through both. A compiled inverse must not hold the
    # buffers the forward replaces.
    torch.manual_seed(0)
    flow = avade.create("flow", "realnvp", in_shape=(3, 8, 8), scales=1, layers=2, blocks=1, hidden=8,
                        out_batch_norm=True).train()
    inverse = torch.compile(flow.inverse, backend="aot_eager")
    forward = torch.compile(flow, backend="aot_eager")
    for _ in range(2):
        sample = inverse(torch.randn(4, 3, 8, 8, requires_grad=True))
        y, logdet = forward(torch.randn(4, 3, 8, 8))
        (sample.square().mean() + y.square().mean() - logdet.mean()).backward()
    assert all(p.grad is not None for p in flow.parameters() if p.requires_grad)


def test_a_non_finite_batch_leaves_the_running_averages_alone() -> None:
    bn = avade.create("flow", "batch-norm", in_shape=(2, 2, 2)).train()
    bn(torch.randn(8, 2, 2, 2))
    before = bn.running_mean.clone(), bn.running_var.clone()
    x = torch.randn(8, 2, 2, 2)
    x[0, 0, 0, 0] = float("nan")  # channel 0 of this batch is NaN, channel 1 is fine
    bn(x)
    assert torch.equal(bn.running_mean[0, 0], before[0][0, 0]) and torch.equal(bn.running_var[0, 0], before[1][0, 0])
    assert not torch.equal(bn.running_mean[0, 1], before[0][0, 1])


def _reference_bn_out(res: torch.Tensor, transformed: torch.Tensor, eps: float = 1e-4
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The Real-NVP reference's bn_out in training, written out (NCHW): statistics of ``res * (1 - mask)``
    over batch and pixels, applied where the coupling transformed; per-sample log-determinant."""
    masked = res * transformed
    mean = masked.mean((0, 2, 3), keepdim=True)
    var = ((masked - mean) ** 2).mean((0, 2, 3), keepdim=True)
    log_var = torch.log(var + eps)
    out = (res - mean * transformed) * torch.exp(-0.5 * log_var * transformed)
    log_diff = (-0.5 * log_var * transformed).expand_as(res)
    return out, log_diff.sum((1, 2, 3))


@pytest.mark.parametrize("mask", ["checkerboard", "checkerboard-packed", "channel"])
@pytest.mark.parametrize("reverse", [False, True])
def test_transformed_batch_norm_is_the_references_bn_out(mask: str, reverse: bool) -> None:
    from avade.flows.batch_norm import BatchNormFlow
    from avade.flows.coupling import AffineCoupling, AffineCouplingConfig

    coupling = AffineCoupling(AffineCouplingConfig(mask=mask, reverse=reverse, hidden=4, blocks=1),  # type: ignore[arg-type]
                              in_shape=(4, 6, 6))
    region = coupling.transformed_region()
    x = torch.randn(16, 4, 6, 6, dtype=torch.float64) * 2 + 3
    # the region is where the coupling moves its input: a perturbed coupling changes exactly those values
    with torch.no_grad():
        for p in coupling.parameters():
            p.add_(0.3 * torch.randn_like(p))
    y, _ = coupling.double()(x)
    moved = (y != x).any(0, keepdim=True).any(2 if mask == "channel" else 1, keepdim=True)
    if mask == "channel":
        moved = moved.any(3, keepdim=True)
    assert torch.equal(moved, region.bool()), "the region is the half the coupling transforms"
    bn = BatchNormFlow(in_shape=(4, 6, 6), region=region).double().train()
    out, logdet = bn(x)
    expected, expected_logdet = _reference_bn_out(x, region.double())
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(logdet, expected_logdet, rtol=0, atol=1e-10)
    assert torch.equal(out * (1 - region.double()), x * (1 - region.double())), "the other half passes through"
    bn.eval()
    y, _ = bn(x)
    torch.testing.assert_close(bn.inverse(y), x, rtol=0, atol=1e-12)


def test_transformed_batch_norm_log_determinant_is_the_jacobians() -> None:
    from avade.flows.batch_norm import BatchNormFlow
    from avade.flows.coupling import checkerboard

    bn = BatchNormFlow(in_shape=(2, 2, 2), region=1 - checkerboard(2, 2, 0)).double().train()
    bn(torch.randn(64, 2, 2, 2, dtype=torch.float64) * 2 + 1)
    bn.eval()
    x = torch.randn(1, 2, 2, 2, dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(lambda v: bn(v.view(1, 2, 2, 2))[0].flatten(), x.flatten())
    torch.testing.assert_close(bn(x)[1], torch.linalg.slogdet(jacobian)[1].view(1), rtol=0, atol=1e-12)


@pytest.mark.parametrize("checkerboard", ["masked", "packed"])
def test_realnvp_with_the_references_bn_out(checkerboard: str) -> None:
    flow = avade.create("flow", "realnvp", in_shape=(3, 8, 8), scales=2, layers=3, blocks=1, hidden=8,
                        out_batch_norm="transformed", checkerboard=checkerboard)
    norms = [m for m in flow.modules() if type(m).__name__ == "BatchNormFlow"]
    assert len(norms) == 9 and all(m.partial for m in norms)
    check_flow("realnvp", scales=2, hidden=8, blocks=1, out_batch_norm="transformed", checkerboard=checkerboard)
    with pytest.raises(avade.ConfigError, match="out_batch_norm"):
        avade.create("flow", "realnvp", in_shape=(3, 8, 8), out_batch_norm="half")


def test_momentum_is_the_weight_of_the_new_batch() -> None:
    # As torch's BatchNorm (and the reference's decay 0.95): running <- (1 - momentum) running + momentum batch.
    bn = avade.create("flow", "batch-norm", in_shape=(2, 3, 3), momentum=0.05).double().train()
    xs = [torch.randn(8, 2, 3, 3, dtype=torch.float64) * 2 + 3 for _ in range(2)]
    mean, var = torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    for x in xs:
        bn(x)
        mean = 0.95 * mean + 0.05 * x.mean((0, 2, 3))
        var = 0.95 * var + 0.05 * x.var((0, 2, 3), correction=0)
    torch.testing.assert_close(bn.running_mean.flatten(), mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(bn.running_var.flatten(), var, rtol=1e-12, atol=1e-12)
