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
